"""The one-click unsubscribe link in every reminder email (and its ``List-Unsubscribe``
header). The token names the customer and is signed, so nobody can unsubscribe someone
else; following it blocks the customer's email channel for good."""

from __future__ import annotations

import base64
import hashlib
import hmac

from sqlmodel import Session

from arflow.config import Settings
from arflow.customers.contacts import block
from arflow.errors import NotFound
from models import Customer

UNKNOWN = "unknown unsubscribe link"


def _mac(settings: Settings, customer_id: int) -> str:
    key = hashlib.sha256(b"unsubscribe:" + settings.webhook_secret.encode()).digest()
    return hmac.new(key, str(customer_id).encode(), hashlib.sha256).hexdigest()[:24]


def unsubscribe_token(settings: Settings, customer_id: int) -> str:
    raw = f"{customer_id}.{_mac(settings, customer_id)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unsubscribe_url(settings: Settings, customer_id: int) -> str:
    return f"{settings.public_url.rstrip('/')}/u/{unsubscribe_token(settings, customer_id)}"


def customer_of(session: Session, settings: Settings, token: str) -> Customer:
    """The customer a token names; ``NotFound`` for a forged, garbled or stale token."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        ident, _, mac = raw.partition(".")
        customer_id = int(ident)
    except (ValueError, UnicodeDecodeError):
        raise NotFound(UNKNOWN) from None
    if not hmac.compare_digest(mac, _mac(settings, customer_id)):
        raise NotFound(UNKNOWN)
    customer = session.get(Customer, customer_id)
    if customer is None or customer.id is None:
        raise NotFound(UNKNOWN)
    return customer


def unsubscribe(session: Session, settings: Settings, token: str) -> Customer:
    """Block reminder emails to the customer the token names (idempotent)."""
    customer = customer_of(session, settings, token)
    assert customer.id is not None
    block(session, customer.id, "email", "unsubscribed", "link", address=customer.email)
    session.commit()
    return customer
