"""Customers: who owes, where they are (time zone), how to reach them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, EmailStr, create_model, model_validator
from pydantic.fields import FieldInfo
from sqlalchemy import BigInteger, Index
from sqlmodel import Field, SQLModel

from models.types import CountryCode, IbanStr, PhoneE164, TimeZoneName, UTCDateTime, utcnow


class CustomerBase(SQLModel):
    external_id: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = Field(default=None, max_length=320)
    phone: PhoneE164 | None = Field(default=None, max_length=20)
    timezone: TimeZoneName = Field(default="UTC", max_length=64)
    locale: str = Field(
        default="en",
        min_length=2,
        max_length=16,
        schema_extra={"pattern": r"^[a-z]{2}([_-][A-Za-z]{2})?$"},
    )
    segment: str = Field(default="standard", min_length=1, max_length=50)
    iban: IbanStr | None = Field(
        default=None, max_length=34, description="the account the customer pays from (matching)"
    )
    country: CountryCode | None = Field(
        default=None, max_length=2, description="ISO 3166 alpha-2, for public holidays"
    )
    statement_day: int | None = Field(
        default=None, ge=1, le=28, description="day of the month for the statement of account"
    )
    address: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="postal address for letters, one line per line (name not included)",
    )


class CustomerCreate(CustomerBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class Customer(CustomerBase, table=True):
    __tablename__ = "customers"
    # Lists and reports filtered by segment (migration 0028; was a Seq Scan on PostgreSQL).
    __table_args__ = (Index("ix_customers_segment", "segment"),)

    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(max_length=100, unique=True, index=True)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=20)
    timezone: str = Field(max_length=64)
    iban: str | None = Field(default=None, max_length=34, index=True)
    broken_promises: int = Field(default=0)
    broken_plans: int = Field(default=0)
    # The profile (PUT /v1/customers/{id}/profile): attributes segments are chosen by, the
    # credit limit, and the credit hold that arflow/customers/credit.py puts on and lifts.
    key_account: bool = Field(default=False)
    annual_revenue_minor: int | None = Field(default=None, sa_type=BigInteger)
    credit_limit_minor: int | None = Field(default=None, sa_type=BigInteger)
    credit_currency: str | None = Field(default=None, max_length=3)
    assigned_collector: str | None = Field(default=None, max_length=100)
    pinned_segment: str | None = Field(default=None, max_length=50)
    credit_hold: bool = Field(default=False)
    credit_hold_reason: str | None = Field(default=None, max_length=500)
    credit_hold_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Portal links issued before this instant are refused (a specialist revoked them).
    portal_links_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CustomerPublic(CustomerBase):
    id: int
    email: str | None = None
    broken_promises: int = 0
    broken_plans: int = 0
    key_account: bool = False
    annual_revenue_minor: int | None = None
    credit_limit_minor: int | None = None
    credit_currency: str | None = None
    assigned_collector: str | None = None
    pinned_segment: str | None = None
    credit_hold: bool = False
    credit_hold_reason: str | None = None
    credit: dict[str, int] = Field(
        default_factory=dict, description="credit balance per currency (minor units)"
    )
    created_at: datetime


#: What ``PATCH /v1/customers/{id}`` may correct. Not ``external_id`` (the other systems' key
#: for the customer), nor ``segment`` and ``statement_day`` (segments and the profile set them).
UPDATABLE_FIELDS = ("name", "email", "phone", "address", "timezone", "locale", "country", "iban")


class _CustomerUpdateBase(BaseModel):
    """The checks of a correction beside its fields' own (``CustomerUpdate``)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _at_least_one_field(self) -> Self:
        if not self.model_fields_set:
            raise ValueError(f"give at least one field to change: {', '.join(UPDATABLE_FIELDS)}")
        return self


def _optional(field: FieldInfo) -> tuple[Any, Any]:
    """A create field as an update field: the same type, validators and limits, not required.
    A field that may not be null on create may not be null here either (its type stays
    non-nullable; only leaving it out keeps it)."""
    return (
        Annotated[field.annotation, *field.metadata],
        Field(default=None, description=field.description),
    )


# Built from CustomerCreate's own fields, so a limit or validator changed there applies to
# corrections too. mypy sees the base (the fields are read with ``model_dump``).
if TYPE_CHECKING:
    CustomerUpdate = _CustomerUpdateBase
else:
    CustomerUpdate = create_model(
        "CustomerUpdate",
        __base__=_CustomerUpdateBase,
        __module__=__name__,
        __doc__="A correction of a customer's details: the fields given change (at least one).",
        **{name: _optional(CustomerCreate.model_fields[name]) for name in UPDATABLE_FIELDS},
    )


class CustomerWorkflows(BaseModel):
    """What became of the open invoices' workflows after a change of zone or country."""

    updated: list[int] = Field(
        default_factory=list, description="invoices whose workflow took the new details"
    )
    skipped: dict[int, str] = Field(
        default_factory=dict, description="invoices with no running workflow (closed), and why"
    )
    pending: dict[int, str] = Field(
        default_factory=dict,
        description="invoices whose workflow could not be reached (recorded as "
        "customer_change_pending; send the PATCH again to retry), and why",
    )


class CustomerChanged(CustomerPublic):
    """The customer after a correction, the fields it changed, and its invoices' workflows."""

    changed_fields: list[str] = Field(default_factory=list)
    workflows: CustomerWorkflows = Field(default_factory=CustomerWorkflows)
