"""Where a customer must not (or cannot) be reached any more, per channel."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow

BLOCK_REASONS = ("unsubscribed", "spam_report", "bounced", "dropped", "stop", "failed", "manual")


class ContactBlock(SQLModel, table=True):
    """An opted-out or failed channel: never used again for this customer (until removed)."""

    __tablename__ = "contact_blocks"
    __table_args__ = (UniqueConstraint("customer_id", "channel", name="uq_contact_block"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    channel: str = Field(max_length=20, description="email, sms, call, letter")
    address: str | None = Field(default=None, max_length=320)
    reason: str = Field(max_length=30)
    source: str = Field(max_length=30, description="sendgrid, twilio, specialist, ...")
    detail: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ContactBlockPublic(SQLModel):
    id: int
    customer_id: int
    channel: str
    address: str | None
    reason: str
    source: str
    detail: str | None
    created_at: datetime
