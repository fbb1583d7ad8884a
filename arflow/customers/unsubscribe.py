"""The one-click unsubscribe link in every reminder email (and its ``List-Unsubscribe``
header). The token names the customer and is signed, so nobody can unsubscribe someone
else; following it blocks the customer's email channel for good."""

from __future__ import annotations

import re

from sqlmodel import Session

from arflow.config import Settings
from arflow.customers.contacts import block
from arflow.errors import NotFound
from models import Customer

UNKNOWN = "unknown unsubscribe link"
_TOKEN = re.compile(
    r"(?P<customer>[0-9]{1,18})\.(?P<signed>[A-Za-z0-9_-]{1,16}\.[A-Za-z0-9_-]{1,64})"
)


def unsubscribe_token(settings: Settings, customer_id: int) -> str:
    """``<customer id>.<kid>.<mac>``, signed with the link secret (``ARFLOW_LINK_SECRET``)."""
    return f"{customer_id}.{settings.link_token('unsubscribe', str(customer_id))}"


def unsubscribe_url(settings: Settings, customer_id: int) -> str:
    return f"{settings.public_url.rstrip('/')}/u/{unsubscribe_token(settings, customer_id)}"


def customer_of(session: Session, settings: Settings, token: str) -> Customer:
    """The customer a token names; ``NotFound`` for a forged, garbled or stale token (the
    base64 tokens signed with the webhook secret before link keys included)."""
    found = _TOKEN.fullmatch(token)
    if found is None or not settings.link_token_valid(
        "unsubscribe", found["customer"], found["signed"]
    ):
        raise NotFound(UNKNOWN)
    customer = session.get(Customer, int(found["customer"]))
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
