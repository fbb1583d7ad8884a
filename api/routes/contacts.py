"""A customer's additional contacts with roles (billing, escalation, copy). The primary
billing contact is the customer's own email and phone (``PATCH /v1/customers/{id}``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import SessionDep, Specialist, Viewer
from arflow.customers import contacts_roles
from models.contact import CustomerContactCreate, CustomerContactPublic, CustomerContactUpdate

router = APIRouter(prefix="/v1/customers/{customer_id}/contacts", tags=["customers"])


@router.get("", response_model=list[CustomerContactPublic])
def list_contacts(customer_id: int, session: SessionDep, _: Viewer) -> list[CustomerContactPublic]:
    """The primary billing contact (the customer's own email and phone, ``primary: true``, no
    ``id``) first, then the additional contacts."""
    return contacts_roles.list_contacts(session, customer_id)


@router.post("", status_code=201, response_model=CustomerContactPublic)
def add_contact(
    customer_id: int, body: CustomerContactCreate, session: SessionDep, who: Specialist
) -> CustomerContactPublic:
    """Add a contact: ``billing`` and ``copy`` contacts are copied on every email,
    ``escalation`` contacts on final notices and escalation-ladder notices (recorded as
    ``contact_added``)."""
    contact = contacts_roles.add_contact(session, customer_id, body, who.actor)
    return contacts_roles.public(contact)


@router.patch("/{contact_id}", response_model=CustomerContactPublic)
def change_contact(
    customer_id: int,
    contact_id: int,
    body: CustomerContactUpdate,
    session: SessionDep,
    who: Specialist,
) -> CustomerContactPublic:
    """Change a contact's role, name, email, phone or opt-outs (recorded as
    ``contact_changed``)."""
    contact = contacts_roles.change_contact(session, customer_id, contact_id, body, who.actor)
    return contacts_roles.public(contact)


@router.delete("/{contact_id}", status_code=204)
def remove_contact(
    customer_id: int, contact_id: int, session: SessionDep, who: Specialist
) -> Response:
    """Remove a contact (recorded as ``contact_removed``)."""
    contacts_roles.remove_contact(session, customer_id, contact_id, who.actor)
    return Response(status_code=204)
