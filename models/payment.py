"""Schemas of the payment webhook, and of a payment delivered to its invoice."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from models.types import MAX_ID, CurrencyCode


class PaymentWebhook(BaseModel):
    """``POST /v1/webhooks/payments`` body (signed with ``Arflow-Signature``)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=200)
    invoice_id: StrictInt | None = Field(default=None, gt=0, le=MAX_ID)
    invoice_external_id: str | None = Field(default=None, min_length=1, max_length=100)
    amount_minor: StrictInt = Field(gt=0, le=10**15)
    currency: CurrencyCode
    paid_at: datetime
    method: str = Field(default="unknown", min_length=1, max_length=50)
    type: Literal["payment", "refund", "chargeback"] = Field(
        default="payment",
        description="refund and chargeback take money back (amount_minor stays positive); "
        "on a paid invoice they reopen it and dunning goes on",
    )

    @model_validator(mode="after")
    def _one_reference(self) -> PaymentWebhook:
        if (self.invoice_id is None) == (self.invoice_external_id is None):
            raise ValueError("give exactly one of invoice_id or invoice_external_id")
        if self.paid_at.tzinfo is None:
            raise ValueError("paid_at must be an RFC 3339 instant with a UTC offset")
        return self


class PaymentAck(BaseModel):
    status: str = Field(
        description="accepted, duplicate, reopened (a reversal of a paid invoice), recorded "
        "(invoice already closed: kept as customer credit) or unmatched (other currency: in "
        "the unmatched queue)"
    )
    payment_id: int | None = None
    invoice_id: int
    line_id: int | None = Field(default=None, description="the unmatched queue entry")


class DeliveryPublic(BaseModel):
    payment_id: int
    invoice_id: int
    outcome: str = Field(description="delivered, reopened, recorded, duplicate or pending")
