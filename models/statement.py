"""Monthly statements of account sent to customers: one per customer and month."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class StatementSent(SQLModel, table=True):
    __tablename__ = "statements_sent"
    __table_args__ = (UniqueConstraint("customer_id", "period", name="uq_statement_period"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    period: str = Field(max_length=7, description="YYYY-MM")
    status: str = Field(
        max_length=20,
        description="queued, deferred (outside the contact window), sending, sent, uncertain, "
        "blocked, failed",
    )
    open_items: int = 0
    detail: str | None = Field(default=None, max_length=500)
    provider_id: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
