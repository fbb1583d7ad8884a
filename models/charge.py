"""Late fees, interest and compensation charged on an invoice: separate rows beside it, so the
invoice's own amount never changes; a specialist may waive one with a reason."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow

CHARGE_KINDS = ("fee", "interest", "compensation")


class InvoiceCharge(SQLModel, table=True):
    __tablename__ = "invoice_charges"
    __table_args__ = (UniqueConstraint("invoice_id", "dedupe_key", name="uq_charge_dedupe"),)

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    kind: str = Field(max_length=20, description="fee, interest or compensation")
    amount_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    period_from: date | None = Field(default=None, description="interest: from the day after")
    period_to: date | None = Field(default=None, description="interest: up to and including")
    stage: str | None = Field(default=None, max_length=50, description="the step that charged it")
    basis: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="how it was computed: rate, days, balance, percent",
    )
    dedupe_key: str = Field(max_length=100, description="one charge per key and invoice")
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    waived_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    waived_by: str | None = Field(default=None, max_length=100)
    waive_reason: str | None = Field(default=None, max_length=500)
    settled_minor: int = Field(
        default=0, sa_type=BigInteger, description="paid by the money left over from payments"
    )
    settled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ChargePublic(SQLModel):
    id: int
    invoice_id: int
    kind: str
    amount_minor: int
    currency: str
    period_from: date | None
    period_to: date | None
    stage: str | None
    basis: dict[str, Any]
    created_by: str
    created_at: datetime
    waived_at: datetime | None
    waived_by: str | None
    waive_reason: str | None
    settled_minor: int
    settled_at: datetime | None


class ChargesPublic(SQLModel):
    invoice_id: int
    currency: str
    invoice_amount_minor: int = Field(description="the invoice's own amount (never changes)")
    charged_minor: int = Field(description="charges not waived")
    waived_minor: int = Field(description="charges waived")
    settled_minor: int = Field(description="of the charges not waived, what has been paid")
    outstanding_minor: int = Field(description="charges not waived and not paid yet")
    charges: list[ChargePublic]


class WaiveBody(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    reason: str = Field(min_length=1, max_length=500)
