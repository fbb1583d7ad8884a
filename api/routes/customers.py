from __future__ import annotations

from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import OptionalTemporalDep, SessionDep, SettingsDep, Specialist, Viewer
from api.errors import not_found
from arflow.db import insert_unique
from arflow.invoices.corrections import update_customer
from arflow.payments.service import credit_balances
from models import Customer
from models.customer import CustomerChanged, CustomerCreate, CustomerPublic, CustomerUpdate

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.post("", status_code=201, response_model=CustomerPublic)
def create_customer(body: CustomerCreate, session: SessionDep, _: Specialist) -> Customer:
    customer = Customer.model_validate(body)
    return insert_unique(session, customer, f"customer {body.external_id!r} already exists")


@router.get("/{customer_id}", response_model=CustomerPublic)
def get_customer(customer_id: int, session: SessionDep, _: Viewer) -> CustomerPublic:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    return CustomerPublic.model_validate(
        {**customer.model_dump(), "credit": credit_balances(session, customer_id)}
    )


@router.patch("/{customer_id}", response_model=CustomerChanged)
async def patch_customer(
    customer_id: int,
    body: CustomerUpdate,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    who: Specialist,
) -> CustomerChanged:
    """Correct the customer's details: the fields given change (``external_id`` cannot; null
    only where create takes it). Each change is on the customer's timeline
    (``customer_changed``). A new email, phone or postal address lifts the old address's
    bounce (not an opt-out) and closes the steps-no-channel-could-take tasks; a new time zone
    or country reaches the open invoices' workflows, whose next steps are timed again
    (``workflows``: updated, skipped as closed, or pending when Temporal did not answer:
    recorded, and sent again by the next PATCH)."""
    done = await update_customer(session, client, settings, customer_id, body, who)
    return CustomerChanged.model_validate(
        {
            **done.customer.model_dump(),
            "credit": credit_balances(session, customer_id),
            "changed_fields": sorted(done.changes),
            "workflows": done.workflows,
        }
    )


@router.get("", response_model=list[CustomerPublic])
def list_customers(
    session: SessionDep,
    _: Viewer,
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> list[Customer]:
    stmt = select(Customer).order_by(col(Customer.id)).offset(offset).limit(limit)
    return list(session.exec(stmt).all())
