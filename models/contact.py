"""Where a customer must not (or cannot) be reached any more, per channel."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, model_validator
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow

CHANNELS = ("email", "sms", "call", "letter")
#: What a customer asked for, taken down by a specialist (POST .../contact-blocks)
REQUESTED_REASONS = ("opt_out", "cease_contact")
BLOCK_REASONS = (
    "unsubscribed",
    "spam_report",
    "bounced",
    "dropped",
    "stop",
    "failed",
    "manual",
    *REQUESTED_REASONS,
)


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


class ContactBlockRequest(SQLModel):
    """A customer's own request, taken down by a specialist (on the phone, in a letter).

    ``opt_out``: not on this ``channel`` any more. ``cease_contact`` (FDCPA-style: stop
    contacting me): every channel at once; ``channel`` may then be left out.
    """

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    channel: Literal["email", "sms", "call", "letter"] | None = None
    reason: Literal["opt_out", "cease_contact"]
    note: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _channel_for_opt_out(self) -> ContactBlockRequest:
        if self.reason == "opt_out" and self.channel is None:
            raise ValueError("an opt_out names its channel: email, sms, call or letter")
        return self
