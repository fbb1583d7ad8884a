from __future__ import annotations

from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import SessionDep, Specialist, Viewer
from api.errors import not_found
from arflow.db import insert_unique
from arflow.payments.service import credit_balances
from models import Customer
from models.customer import CustomerCreate, CustomerPublic

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


@router.get("", response_model=list[CustomerPublic])
def list_customers(
    session: SessionDep,
    _: Viewer,
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> list[Customer]:
    stmt = select(Customer).order_by(col(Customer.id)).offset(offset).limit(limit)
    return list(session.exec(stmt).all())
