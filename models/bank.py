"""Money coming in that is not yet tied to an invoice: statement imports, their lines (the
unmatched queue), saved CSV column mappings, and customers' credit balances."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow

# What became of a received line.
MATCHED = "matched"  # applied automatically to one or more invoices
UNMATCHED = "unmatched"  # waiting in the queue for a specialist
APPLIED = "applied"  # applied by a specialist from the queue
DISMISSED = "dismissed"  # taken out of the queue by a specialist (e.g. refunded to the payer)
IGNORED = "ignored"  # not a customer receipt (an outgoing debit without our reference)
LINE_STATUSES = (MATCHED, UNMATCHED, APPLIED, DISMISSED, IGNORED)


class StatementImport(SQLModel, table=True):
    """One import of one statement file, with its report."""

    __tablename__ = "statement_imports"

    id: int | None = Field(default=None, primary_key=True)
    filename: str = Field(max_length=300)
    sha256: str = Field(max_length=64, index=True)
    format: str = Field(max_length=20)
    account_iban: str | None = Field(default=None, max_length=34)
    statement_id: str | None = Field(default=None, max_length=100)
    source: str = Field(max_length=20, description="api, cli or inbox")
    actor: str = Field(max_length=100)
    counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    errors: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    imported_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReceivedLine(SQLModel, table=True):
    """A receipt as the bank (or a provider) reported it; unique on ``dedupe_key`` so the same
    transaction in two files, or the same file twice, is taken once."""

    __tablename__ = "received_lines"

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    source: str = Field(max_length=20, description="bank or webhook")
    import_id: int | None = Field(default=None, foreign_key="statement_imports.id", index=True)
    line_no: int | None = None
    bank_transaction_id: str | None = Field(default=None, max_length=120)
    booking_date: date
    amount_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    counterparty_name: str | None = Field(default=None, max_length=200)
    counterparty_iban: str | None = Field(default=None, max_length=34)
    remittance: str = Field(default="", sa_type=Text)
    structured_reference: str | None = Field(default=None, max_length=100)
    status: str = Field(max_length=20, index=True)
    rule: str | None = Field(default=None, max_length=20, description="how it was matched")
    reason: str | None = Field(default=None, max_length=500, description="why it waits")
    customer_id: int | None = Field(default=None, foreign_key="customers.id", index=True)
    candidates: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    resolved_by: str | None = Field(default=None, max_length=100)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    note: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SavedCsvMapping(SQLModel, table=True):
    """A named column mapping for one bank's CSV export."""

    __tablename__ = "csv_mappings"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CreditEntry(SQLModel, table=True):
    """One movement of a customer's credit balance (per currency); the balance is the sum."""

    __tablename__ = "credit_entries"

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_type=BigInteger, description="+ credit received, - credit used")
    kind: str = Field(max_length=30, description="overpayment, unallocated, applied, refunded")
    invoice_id: int | None = Field(default=None, foreign_key="invoices.id")
    payment_id: int | None = Field(default=None, foreign_key="payments.id")
    line_id: int | None = Field(default=None, foreign_key="received_lines.id")
    actor: str = Field(max_length=100)
    note: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def overpayment(
    customer_id: int, currency: str, amount_minor: int, invoice_id: int, payment_id: int, actor: str
) -> CreditEntry:
    """The credit a payment leaves when its invoice cannot take it (one per payment)."""
    return CreditEntry(
        dedupe_key=f"overpaid:{payment_id}",
        customer_id=customer_id,
        currency=currency,
        amount_minor=amount_minor,
        kind="overpayment",
        invoice_id=invoice_id,
        payment_id=payment_id,
        actor=actor,
    )
