"""A customer's contacts with roles: who hears about an invoice besides the primary address.

One source of truth per address: the customer row's own ``email`` and ``phone`` are the
**primary billing contact** (every message goes *to* them, ``PATCH /v1/customers/{id}`` edits
them); ``customer_contacts`` holds the **additional** ones, each with a role:

- ``billing``: copied on every email;
- ``copy``: copied on every email;
- ``escalation``: copied on final notices and escalation-ladder notices only.

A contact with ``email_opt_out`` is never copied. SMS goes to the primary phone only (a
contact's ``sms_opt_out`` is kept for when it does not). The customer's own email block
(``ContactBlock``) stops the whole email, copies included: that is the sender's decision
(``arflow.messages.sending``), not this module's.

Each change is on the customer's timeline (``contact_added``, ``contact_changed``,
``contact_removed``), with the actor; viewers see those events with the email and phone
values masked (``arflow.customers.changes.shown_to``). These functions commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.customers.events import record_customer_event
from arflow.errors import conflict, not_found, unprocessable
from models import Customer, CustomerContact
from models.contact import (
    CustomerContactCreate,
    CustomerContactPublic,
    CustomerContactUpdate,
)
from models.types import utcnow

ADDED = "contact_added"
CHANGED = "contact_changed"
REMOVED = "contact_removed"
KINDS = frozenset({ADDED, CHANGED, REMOVED})

#: Roles copied on every email, and the one copied on final and ladder notices too.
EVERY_EMAIL = ("billing", "copy")
ESCALATION = "escalation"
#: Dunning-step templates that are notices of escalation (escalation contacts are copied).
ESCALATION_TEMPLATES = frozenset({"final_notice", "pre_legal"})

#: What a contact event carries about the contact (email and phone masked for viewers).
_SHOWN = ("role", "name", "email", "phone", "email_opt_out", "sms_opt_out")


def _customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    return customer


def _contact(session: Session, customer_id: int, contact_id: int) -> CustomerContact:
    _customer(session, customer_id)
    contact = session.get(CustomerContact, contact_id)
    if contact is None or contact.customer_id != customer_id:
        raise not_found("contact", contact_id)
    return contact


def primary_of(customer: Customer) -> CustomerContactPublic:
    """The customer row's own email and phone, as the primary billing contact."""
    assert customer.id is not None
    return CustomerContactPublic(
        customer_id=customer.id,
        primary=True,
        role="billing",
        name=None,
        email=customer.email,
        phone=customer.phone,
        created_at=customer.created_at,
    )


def public(contact: CustomerContact) -> CustomerContactPublic:
    return CustomerContactPublic.model_validate(contact, from_attributes=True)


def list_contacts(session: Session, customer_id: int) -> list[CustomerContactPublic]:
    """The primary billing contact first, then the additional ones (oldest first)."""
    customer = _customer(session, customer_id)
    rows = session.exec(
        select(CustomerContact)
        .where(CustomerContact.customer_id == customer_id)
        .order_by(col(CustomerContact.id))
    ).all()
    return [primary_of(customer), *(public(r) for r in rows)]


def _check(customer: Customer, contact: CustomerContact) -> None:
    if contact.email is None and contact.phone is None:
        raise unprocessable(
            "a contact needs an email or a phone (or both)",
            [{"loc": ["body", "email"], "msg": "an email or a phone is required"}],
        )
    if (
        contact.role == "billing"
        and contact.email is not None
        and customer.email is not None
        and contact.email == customer.email.lower()
    ):
        raise conflict(
            "this email is the customer's primary billing contact already "
            "(change it with PATCH /v1/customers/{id})",
            {"field": "email"},
        )


def _save(
    session: Session, contact: CustomerContact, event: tuple[str, dict[str, Any], str]
) -> None:
    """Flush the contact and its event in one transaction; a duplicate is a 409."""
    session.add(contact)
    try:
        session.flush()
        kind, data, actor = event
        record_customer_event(
            session, contact.customer_id, kind, {"contact_id": contact.id, **data}, actor
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(
            f"the customer has a {contact.role} contact with this email already",
            {"field": "email"},
        ) from None
    session.refresh(contact)


def add_contact(
    session: Session, customer_id: int, body: CustomerContactCreate, actor: str
) -> CustomerContact:
    customer = _customer(session, customer_id)
    now = utcnow()
    contact = CustomerContact(
        customer_id=customer_id, **body.model_dump(), created_at=now, updated_at=now
    )
    _check(customer, contact)
    data = {name: getattr(contact, name) for name in _SHOWN}
    _save(session, contact, (ADDED, data, actor))
    return contact


def change_contact(
    session: Session, customer_id: int, contact_id: int, body: CustomerContactUpdate, actor: str
) -> CustomerContact:
    """Set the fields given that differ; a change that changes nothing records nothing."""
    contact = _contact(session, customer_id, contact_id)
    customer = _customer(session, customer_id)
    changes: dict[str, dict[str, Any]] = {}
    for name, value in body.model_dump(exclude_unset=True).items():
        old = getattr(contact, name)
        if old != value:
            changes[name] = {"from": old, "to": value}
            setattr(contact, name, value)
    if not changes:
        return contact
    _check(customer, contact)
    contact.updated_at = utcnow()
    _save(session, contact, (CHANGED, {"role": contact.role, "changes": changes}, actor))
    return contact


def remove_contact(session: Session, customer_id: int, contact_id: int, actor: str) -> None:
    contact = _contact(session, customer_id, contact_id)
    data = {"contact_id": contact.id, **{name: getattr(contact, name) for name in _SHOWN}}
    session.delete(contact)
    record_customer_event(session, customer_id, REMOVED, data, actor)
    session.commit()


def is_escalation(template: str, kind: str) -> bool:
    """True for a final notice or an escalation-ladder notice: escalation contacts hear of it
    too. ``kind`` is the send's (``SendReminderInput.kind``: ``ladder`` for a ladder stage's
    notice), ``template`` the step's."""
    return kind == "ladder" or template in ESCALATION_TEMPLATES


def email_cc(
    session: Session, customer_id: int, to: str | None, escalation: bool
) -> tuple[str, ...]:
    """The addresses an email to the customer is copied to: the additional billing and copy
    contacts, and the escalation contacts when ``escalation``; never one that opted out, the
    ``to`` address itself, or one address twice (SendGrid refuses a request that names an
    address twice). Oldest contact first."""
    roles = (*EVERY_EMAIL, ESCALATION) if escalation else EVERY_EMAIL
    rows = session.exec(
        select(CustomerContact.email)
        .where(
            CustomerContact.customer_id == customer_id,
            col(CustomerContact.role).in_(roles),
            col(CustomerContact.email).is_not(None),
            col(CustomerContact.email_opt_out).is_(False),
        )
        .order_by(col(CustomerContact.id))
    ).all()
    seen = {to.lower()} if to else set()
    found: list[str] = []
    for email in rows:
        if email is not None and email.lower() not in seen:
            seen.add(email.lower())
            found.append(email)
    return tuple(found)
