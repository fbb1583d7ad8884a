"""One payment plan across several invoices of one customer: the request and the answer
(``POST /v1/customers/{id}/payment-plan``; the allocation: ``arflow/invoices/account_plan.py``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StrictInt
from pydantic import Field as PydanticField

from models.collection import InstallmentIn
from models.invoice import InvoicePublic
from models.types import MAX_ID

#: The most invoices one account plan may name.
MAX_PLAN_INVOICES = 100


class AccountPlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_ids: list[Annotated[StrictInt, PydanticField(gt=0, le=MAX_ID)]] | None = PydanticField(
        default=None,
        min_length=1,
        max_length=MAX_PLAN_INVOICES,
        description="the invoices the plan covers; default: every open invoice of the customer "
        "without a plan and not disputed (all in one currency)",
    )
    installments: list[InstallmentIn] = PydanticField(min_length=1, max_length=120)
    note: str = PydanticField(default="", max_length=2000)


class InstallmentOut(BaseModel):
    due_date: date
    amount_minor: int


class AccountPlanShare(BaseModel):
    """One invoice's part of the plan, and the invoice as it is after agreeing it."""

    invoice_id: int
    installments: list[InstallmentOut]
    invoice: InvoicePublic


class AccountPlanPublic(BaseModel):
    customer_id: int
    currency: str
    total_minor: int
    note: str
    invoices: list[AccountPlanShare] = PydanticField(description="oldest invoice first")
