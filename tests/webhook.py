"""Signing and sending payment webhooks in tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from arflow.payments.signatures import sign
from tests.conftest import WEBHOOK_SECRET


def signed(stamp: int | None = None, **fields: Any) -> tuple[bytes, dict[str, str]]:
    """A payment webhook's body and headers, signed once: sent several times, every copy is
    byte-for-byte the same delivery (as a provider's retries are)."""
    body = {
        "event_id": f"evt_{uuid.uuid4().hex}",
        "currency": "EUR",
        "paid_at": "2026-11-23T10:00:00Z",
        "method": "card",
    } | fields
    raw = json.dumps(body).encode()
    headers = {
        "Arflow-Signature": sign(WEBHOOK_SECRET, raw, stamp),
        "Content-Type": "application/json",
    }
    return raw, headers


async def signed_payment(h: Any, stamp: int | None = None, **fields: Any) -> httpx.Response:
    raw, headers = signed(stamp, **fields)
    return await h.http.post("/v1/webhooks/payments", content=raw, headers=headers)
