"""Card payments through Stripe Checkout: one checkout per customer payment (one or several
invoices), and the refunds and chargebacks Stripe reports against it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from models.payment import PaymentAck
from models.types import UTCDateTime, utcnow


class StripeCheckout(SQLModel, table=True):
    """A Stripe Checkout Session we created. ``allocations`` is what each invoice gets when it
    is paid: ``[{"invoice_id": 1, "amount_minor": 1000}, ...]`` (the invoices' open balances
    when the checkout started). ``status``: open, completed. ``refunded_minor`` and
    ``reversed_minor`` (refunds and chargebacks) are what was already taken back, so a later
    ``charge.refunded`` (cumulative in Stripe) reverses only what is new."""

    __tablename__ = "stripe_checkouts"

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(max_length=255, unique=True, index=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    allocations: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    amount_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    status: str = Field(default="open", max_length=20)
    payment_intent_id: str | None = Field(default=None, max_length=255, index=True)
    refunded_minor: int = Field(default=0, sa_type=BigInteger)
    reversed_minor: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class StripeReversal(SQLModel, table=True):
    """Money Stripe took back from a checkout: a refund tranche (``refund:<charge>:<total
    refunded>``) or a dispute (``dispute:<id>``), with how it was spread over the checkout's
    invoices. Its unique ``key`` makes a redelivered event find the same spread again."""

    __tablename__ = "stripe_reversals"

    id: int | None = Field(default=None, primary_key=True)
    checkout_id: int = Field(foreign_key="stripe_checkouts.id", index=True)
    key: str = Field(max_length=255, unique=True)
    kind: str = Field(max_length=20, description="refund or chargeback")
    amount_minor: int = Field(sa_type=BigInteger)
    allocations: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StripeAck(BaseModel):
    """The answer to a Stripe webhook event (Stripe only looks at the status code)."""

    status: str = PydanticField(
        description="applied (handed to the payments service), duplicate (nothing new), "
        "ignored (an event type or state we do not act on), unknown (no checkout of ours) or "
        "mismatch (paid amount differs from the checkout: recorded, not applied)"
    )
    event_type: str
    checkout: str | None = PydanticField(default=None, description="the Checkout Session id")
    payments: list[PaymentAck] = PydanticField(
        default_factory=list, description="each invoice's share as the payments service took it"
    )
