"""Correcting a customer's details (``PATCH /v1/customers/{id}``): the customer's side.

``correct`` sets the fields given that differ from the stored ones (a field given with its
current value is no change); ``new_address`` decides what a new email, phone or postal address
does to a block on its channel; ``shown_to`` masks the personal data of a ``customer_changed``
event (and of the contact events) for viewers. What a correction does to the invoices (tasks,
workflows) and the transaction around it are in ``arflow.invoices.corrections``.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from arflow.access import Principal
from arflow.config import Role
from arflow.customers import contacts
from models import Customer, CustomerEvent
from models.customer import CustomerUpdate
from models.profile import CustomerEventPublic

CHANGED = "customer_changed"
#: Personal data: its values are shown to specialists and admins only.
PII_FIELDS = frozenset({"email", "phone", "address", "iban"})
MASK = "***"
#: The fields whose values the invoice workflows hold (``InvoiceWorkflowInput``).
ZONE_FIELDS = frozenset({"timezone", "country"})
#: The channels each address field reaches the customer on.
ADDRESS_CHANNELS = {"email": ("email",), "phone": ("sms", "call"), "address": ("letter",)}
#: Block reasons that belong to the address, not to the customer: a new address is not blocked
#: by them. The others (unsubscribed, spam_report, stop, manual) are the customer's or a
#: specialist's decision, and stay whatever the address.
ADDRESS_FAULTS = frozenset({"bounced", "dropped", "failed"})


def correct(customer: Customer, body: CustomerUpdate) -> dict[str, dict[str, Any]]:
    """Set the fields ``body`` gives that differ from the customer's; returns them, each
    ``{"from": old, "to": new}`` (empty: nothing changed). Neither adds nor commits."""
    changes: dict[str, dict[str, Any]] = {}
    for name, value in body.model_dump(exclude_unset=True).items():
        old = getattr(customer, name)
        if old != value:
            changes[name] = {"from": old, "to": value}
            setattr(customer, name, value)
    return changes


def new_address(session: Session, customer_id: int, channel: str, address: str) -> str:
    """The customer gave a new ``address`` for ``channel``; the block on it, if any, is lifted
    when it belongs to the old address (a bounce, a drop, a number that failed) and kept when
    it is an opt-out or a specialist's (or the new address is the one that failed). Returns
    ``open`` (not blocked), ``unblocked (<reason>)`` or ``still blocked (<reason>)``. Flushes;
    the caller commits."""
    block = contacts.find(session, customer_id, channel)
    if block is None:
        return "open"
    same = block.address is not None and block.address.strip().lower() == address.lower()
    if block.reason in ADDRESS_FAULTS and not same:
        contacts.unblock(session, customer_id, channel)
        return f"unblocked ({block.reason})"
    return f"still blocked ({block.reason})"


#: Events whose personal data is masked for viewers: a customer's correction and the changes
#: of its additional contacts (``arflow.customers.contacts_roles``).
MASKED_KINDS = frozenset({CHANGED, "contact_added", "contact_changed", "contact_removed"})


def _masked(value: Any) -> Any:
    return None if value is None else MASK


def shown_to(event: CustomerEvent, who: Principal) -> CustomerEventPublic:
    """The event as ``who`` may see it: a viewer sees which personal fields (email, phone,
    postal address, IBAN) of a ``customer_changed`` or contact event changed (or a contact
    had), not their values."""
    public = CustomerEventPublic.model_validate(event)
    if event.kind not in MASKED_KINDS or who.role.rank >= Role.specialist.rank:
        return public
    data = {name: _masked(v) if name in PII_FIELDS else v for name, v in event.data.items()}
    if "changes" in event.data:
        data["changes"] = {
            name: {k: _masked(v) for k, v in change.items()} if name in PII_FIELDS else change
            for name, change in event.data["changes"].items()
        }
    public.data = data
    return public
