"""The signed link that opens a customer's portal, with no password.

A token is ``<customer id>.<issued at>.<kid>.<mac>``: the customer it opens, when it was made
(Unix seconds), and an HMAC of both under the link key named by ``kid``
(``ARFLOW_LINK_SECRET``, never the webhook secret; ``Settings.link_token``). A rotated key stays
in ``ARFLOW_LINK_SECRETS_OLD`` until the links it signed have expired. A link is refused when:

- its signature is wrong, or it names an unknown customer: ``unknown`` (and nothing about
  whether the customer exists);
- it is older than ``ARFLOW_PORTAL_LINK_DAYS``: ``expired``;
- it was made before the customer's ``portal_links_from``, the instant a specialist revoked
  the customer's links: ``revoked``.

The token only ever names one customer, so every page behind it looks invoices up *by that
customer* (``arflow.portal.view``): changing an id or a reference in the address reaches
nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlmodel import Session

from arflow.config import Settings
from arflow.customers.events import record_customer_event
from arflow.errors import not_found
from models import Customer
from models.types import utcnow

PURPOSE = "portal"
_TOKEN = re.compile(
    r"(?P<customer>[0-9]{1,18})\.(?P<issued>[0-9]{1,12})"
    r"\.(?P<signed>[A-Za-z0-9_-]{1,16}\.[A-Za-z0-9_-]{1,64})"
)

Refusal = Literal["unknown", "expired", "revoked"]


class LinkRefused(Exception):
    """Why a token opens nothing; ``customer_id`` when its signature was good (an expired
    or revoked link: a fresh one may be sent to the address on file)."""

    def __init__(self, reason: Refusal, customer_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.customer_id = customer_id


@dataclass(frozen=True)
class PortalAccess:
    customer: Customer
    customer_id: int
    token: str
    expires_at: datetime


def portal_token(settings: Settings, customer_id: int, now: datetime | None = None) -> str:
    issued = int((now or utcnow()).timestamp())
    message = f"{customer_id}.{issued}"
    return f"{message}.{settings.link_token(PURPOSE, message)}"


def portal_url(settings: Settings, customer_id: int, now: datetime | None = None) -> str:
    """The customer's portal link, made now (it expires ``portal_link_days`` from now)."""
    base = settings.public_url.rstrip("/")
    return f"{base}/portal/{portal_token(settings, customer_id, now)}"


def make_link(
    session: Session, settings: Settings, customer_id: int, actor: str
) -> tuple[str, datetime]:
    """A new link to send by hand, recorded as ``portal_link_made`` (commits), and when it
    expires."""
    if session.get(Customer, customer_id) is None:
        raise not_found("customer", customer_id)
    now = utcnow()
    record_customer_event(session, customer_id, "portal_link_made", {}, actor=actor, at=now)
    session.commit()
    expires = now.replace(microsecond=0) + timedelta(days=settings.portal_link_days)
    return portal_url(settings, customer_id, now), expires


def open_link(
    session: Session, settings: Settings, token: str, now: datetime | None = None
) -> PortalAccess:
    """The customer ``token`` opens; ``LinkRefused`` otherwise."""
    found = _TOKEN.fullmatch(token)
    if found is None:
        raise LinkRefused("unknown")
    message = f"{found['customer']}.{found['issued']}"
    if not settings.link_token_valid(PURPOSE, message, found["signed"]):
        raise LinkRefused("unknown")
    customer = session.get(Customer, int(found["customer"]))
    if customer is None or customer.id is None:
        raise LinkRefused("unknown")
    issued = datetime.fromtimestamp(int(found["issued"]), UTC)
    expires = issued + timedelta(days=settings.portal_link_days)
    if (now or utcnow()) >= expires:
        raise LinkRefused("expired", customer.id)
    if customer.portal_links_from is not None and issued < customer.portal_links_from:
        raise LinkRefused("revoked", customer.id)
    return PortalAccess(customer, customer.id, token, expires)


def revoke(session: Session, customer_id: int, actor: str, reason: str) -> Customer:
    """End every portal link of the customer made until now (the next message carries a new
    one). Recorded on the customer's timeline. Commits."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    # Links carry whole seconds: the links of this very second stay valid, so that the new
    # link a specialist makes right after revoking works.
    customer.portal_links_from = utcnow().replace(microsecond=0)
    session.add(customer)
    record_customer_event(
        session, customer_id, "portal_links_revoked", {"reason": reason}, actor=actor
    )
    session.commit()
    session.refresh(customer)
    return customer
