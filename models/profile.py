"""A customer's own timeline, unbilled orders (credit exposure), and the profile and credit
request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, StrictInt, field_validator, model_validator
from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import CurrencyCode, UTCDateTime, utcnow


class CustomerEvent(SQLModel, table=True):
    """One line of a customer's timeline: profile changes, segment moves, credit holds."""

    __tablename__ = "customer_events"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor: str = Field(max_length=100)
    kind: str = Field(max_length=50)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class CustomerEventPublic(SQLModel):
    id: int
    customer_id: int
    at: datetime
    actor: str
    kind: str
    data: dict[str, Any]


class UnbilledOrder(SQLModel, table=True):
    """An order sent by the ordering system and not invoiced yet: part of the exposure until it
    is deleted (when its invoice exists)."""

    __tablename__ = "unbilled_orders"
    __table_args__ = (UniqueConstraint("customer_id", "external_id", name="uq_unbilled_order"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    external_id: str = Field(max_length=100)
    amount_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class _Body(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class OrderCreate(_Body):
    external_id: str = Field(min_length=1, max_length=100)
    amount_minor: StrictInt = Field(gt=0, le=10**15)
    currency: CurrencyCode = Field(max_length=3)


class OrderPublic(SQLModel):
    id: int
    customer_id: int
    external_id: str
    amount_minor: int
    currency: str
    created_by: str
    created_at: datetime


class ProfileUpdate(_Body):
    """The attributes to set; a field left out keeps its value, ``null`` clears it."""

    key_account: bool | None = None
    annual_revenue_minor: StrictInt | None = Field(default=None, ge=0, le=10**17)
    credit_limit_minor: StrictInt | None = Field(default=None, ge=0, le=10**15)
    credit_currency: CurrencyCode | None = Field(default=None, max_length=3)
    assigned_collector: str | None = Field(default=None, min_length=1, max_length=100)
    segment: str | None = Field(
        default=None, min_length=1, max_length=50, description="pin a segment; null unpins"
    )

    @field_validator("assigned_collector")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("assigned_collector must not be blank")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _limit_has_currency(self) -> ProfileUpdate:
        given = self.model_fields_set
        if "key_account" in given and self.key_account is None:
            raise ValueError("key_account must be true or false")
        if self.credit_limit_minor is not None and self.credit_currency is None:
            raise ValueError("give credit_currency with credit_limit_minor")
        if "credit_currency" in given and "credit_limit_minor" not in given:
            raise ValueError("give credit_limit_minor with credit_currency")
        return self


class CreditCheckRequest(_Body):
    amount_minor: StrictInt = Field(gt=0, le=10**15)
    currency: CurrencyCode = Field(max_length=3)


Decision = Literal["approve", "decline"]
CheckCode = Literal["within_limit", "no_limit", "over_limit", "credit_hold"]


class CreditCheckResult(SQLModel):
    decision: Decision
    code: CheckCode
    reason: str
    currency: str
    amount_minor: int
    exposure_minor: int = Field(description="open invoices + unbilled orders in this currency")
    limit_minor: int | None
    available_minor: int | None = Field(description="limit - exposure, never below 0")
    credit_hold: bool
