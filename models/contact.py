"""Where a customer must not (or cannot) be reached any more, per channel; and the
customer's additional contacts (billing, escalation, copy), each with its own opt-outs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, model_validator
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import PhoneE164, UTCDateTime, utcnow

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


#: The roles of a customer's additional contacts. The customer row's own ``email`` and
#: ``phone`` are the primary billing contact; these are the others.
CONTACT_ROLES = ("billing", "escalation", "copy")
ContactRole = Literal["billing", "escalation", "copy"]


def _lower(text: str) -> str:
    return text.lower()


#: An email address as the customer's is checked, lower-cased (one contact, one spelling).
ContactEmail = Annotated[EmailStr, AfterValidator(_lower)]


class CustomerContact(SQLModel, table=True):
    """An additional contact of a customer: billing (copied on every email), escalation
    (copied on final notices and ladder notices) or copy (copied on every email)."""

    __tablename__ = "customer_contacts"
    __table_args__ = (UniqueConstraint("customer_id", "role", "email", name="uq_customer_contact"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    role: str = Field(max_length=20, description="billing, escalation, copy")
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=20)
    email_opt_out: bool = Field(default=False)
    sms_opt_out: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CustomerContactCreate(BaseModel):
    """A new additional contact: a role and an email address or a phone number (or both)."""

    model_config = ConfigDict(extra="forbid")

    role: ContactRole
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: ContactEmail | None = Field(default=None, max_length=320)
    phone: PhoneE164 | None = Field(default=None, max_length=20)
    email_opt_out: bool = False
    sms_opt_out: bool = False

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if self.email is None and self.phone is None:
            raise ValueError("give an email or a phone (or both)")
        return self


#: What ``PATCH /v1/customers/{id}/contacts/{contact_id}`` may change.
CONTACT_FIELDS = ("role", "name", "email", "phone", "email_opt_out", "sms_opt_out")


class CustomerContactUpdate(BaseModel):
    """A change of an additional contact: the fields given change (at least one). ``name``,
    ``email`` and ``phone`` may be set to null, as long as an email or a phone remains."""

    model_config = ConfigDict(extra="forbid")

    role: ContactRole | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: ContactEmail | None = Field(default=None, max_length=320)
    phone: PhoneE164 | None = Field(default=None, max_length=20)
    email_opt_out: bool | None = None
    sms_opt_out: bool | None = None

    @model_validator(mode="after")
    def _at_least_one_field(self) -> Self:
        if not self.model_fields_set:
            raise ValueError(f"give at least one field to change: {', '.join(CONTACT_FIELDS)}")
        for name in ("role", "email_opt_out", "sms_opt_out"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


class CustomerContactPublic(BaseModel):
    """A contact as the API shows it. The primary billing contact (the customer's own email
    and phone, changed with ``PATCH /v1/customers/{id}``) comes first, ``primary: true`` and
    no ``id``."""

    id: int | None = None
    customer_id: int
    primary: bool = False
    role: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    email_opt_out: bool = False
    sms_opt_out: bool = False
    created_at: datetime
    updated_at: datetime | None = None
