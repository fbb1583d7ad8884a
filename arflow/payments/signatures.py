"""The signature of a payment webhook: ``Arflow-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"t.body">`` (Stripe's scheme), checked with a tolerance for the timestamp."""

from __future__ import annotations

import hashlib
import hmac
import time

from arflow.errors import Unauthenticated


def verify_signature(secret: str, header: str | None, body: bytes, tolerance: int) -> None:
    """Stripe-style ``t=<unix>,v1=<hex hmac-sha256 of "t.body">``; raises 401 otherwise."""
    if not header:
        raise Unauthenticated("missing Arflow-Signature header", code="bad_signature")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        stamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise Unauthenticated("signature header has no valid t=", code="bad_signature") from None
    if abs(time.time() - stamp) > tolerance:
        raise Unauthenticated(f"signature timestamp outside {tolerance} s", code="bad_signature")
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    # Bytes: compare_digest raises on non-ASCII str (a header may carry any latin-1 text).
    if not any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in parts.get("v1", [])):
        raise Unauthenticated("signature does not match", code="bad_signature")


def sign(secret: str, body: bytes, stamp: int | None = None) -> str:
    """The header value a sender puts in ``Arflow-Signature`` (for clients, demos, tests)."""
    stamp = int(time.time()) if stamp is None else stamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"
