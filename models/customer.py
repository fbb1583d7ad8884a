"""Customers: who owes, where they are (time zone), how to reach them."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, EmailStr
from sqlalchemy import BigInteger
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
