"""Collection agencies we hand invoices to, what they tell us back, and the legal stage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class Agency(SQLModel, table=True):
    """A collection agency: placements go to its webhook or into its drop folder; its updates
    come in signed with ``secret`` (HMAC-SHA256)."""

    __tablename__ = "agencies"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    delivery: str = Field(default="file", max_length=20, description="webhook or file")
    endpoint_url: str | None = Field(default=None, max_length=500)
    folder: str | None = Field(default=None, max_length=500)
    file_format: str = Field(default="json", max_length=10, description="json or csv")
    secret: str = Field(max_length=200)
    commission_pct: str = Field(default="0", max_length=20)
    is_default: bool = Field(default=False)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AgencyUpdate(SQLModel, table=True):
    """One update received from an agency (payment collected, commission, closed, returned);
    ``update_id`` (the agency's) makes a redelivery a no-op."""

    __tablename__ = "agency_updates"
    __table_args__ = (UniqueConstraint("agency_id", "update_id", name="uq_agency_update"),)

    id: int | None = Field(default=None, primary_key=True)
    agency_id: int = Field(foreign_key="agencies.id", index=True)
    update_id: str = Field(max_length=200)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    kind: str = Field(max_length=20, description="payment, commission, closed, returned")
    amount_minor: int = Field(default=0, sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    payment_id: int | None = Field(default=None, foreign_key="payments.id")
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LegalCase(SQLModel, table=True):
    """The legal stage of an invoice, with its documents (generated and added by hand)."""

    __tablename__ = "legal_cases"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", unique=True)
    stage: str = Field(max_length=50)
    status: str = Field(default="open", max_length=20, description="open, closed")
    amount_minor: int = Field(sa_type=BigInteger, description="claimed: the balance then")
    currency: str = Field(max_length=3)
    documents: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="[{name, kind, reference, added_at, added_by}]",
    )
    opened_by: str = Field(max_length=100)
    opened_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
