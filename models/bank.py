"""Money coming in that is not yet tied to an invoice: statement imports, their lines (the
unmatched queue), saved CSV column mappings, and customers' credit balances; and how the API
shows and takes them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from models.payment import DeliveryPublic
from models.types import MAX_ID, UTCDateTime, utcnow

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
    accounts: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False, server_default="[]"),
        description="per account of the file: its statements and counts (AccountCounts)",
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


# -- the API's view ------------------------------------------------------------------------


class AccountCounts(BaseModel):
    """One account of an imported file (a file may hold statements of several accounts)."""

    account: str = PydanticField(description="the IBAN, or the account as the file names it")
    account_iban: str | None
    ours: bool = PydanticField(description="one of our accounts (bank_accounts): lines applied")
    statements: int
    statement_ids: list[str]
    lines: int
    matched: int
    unmatched: int
    duplicate: int
    ignored: int
    rejected: int
    skipped: int = PydanticField(description="lines not applied: the account is not ours")


class ImportReport(BaseModel):
    import_id: int
    filename: str
    format: str
    counts: dict[str, int] = PydanticField(
        description="lines, matched, unmatched, duplicate, ignored (debits that are not ours), "
        "rejected (rows that could not be read: see errors); lines of our accounts only"
    )
    errors: list[dict[str, Any]]
    lines: list[dict[str, Any]]
    deliveries: list[DeliveryPublic]
    accounts: list[AccountCounts] = PydanticField(
        default_factory=list, description="per account of the file, ours and others"
    )


class StatementImportPublic(BaseModel):
    id: int
    filename: str
    sha256: str
    format: str
    account_iban: str | None
    statement_id: str | None
    source: str
    actor: str
    counts: dict[str, int]
    errors: list[dict[str, Any]]
    imported_at: datetime
    accounts: list[AccountCounts] = PydanticField(default_factory=list)


class ReceivedLinePublic(BaseModel):
    id: int
    source: str
    import_id: int | None
    line_no: int | None
    booking_date: date
    amount_minor: int
    currency: str
    counterparty_name: str | None
    counterparty_iban: str | None
    remittance: str
    structured_reference: str | None
    status: str
    rule: str | None
    reason: str | None
    customer_id: int | None
    candidates: list[int]
    resolved_by: str | None
    resolved_at: datetime | None
    note: str | None


class ReceivedLinePage(BaseModel):
    items: list[ReceivedLinePublic]
    total: int


class AllocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_id: StrictInt = PydanticField(gt=0, le=MAX_ID)
    amount_minor: StrictInt = PydanticField(gt=0, le=10**15)


class ApplyLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allocations: list[AllocationIn] = PydanticField(default_factory=list, max_length=200)
    credit_customer_id: StrictInt | None = PydanticField(
        default=None, gt=0, le=MAX_ID, description="who gets what is not allocated, as credit"
    )
    note: str | None = PydanticField(default=None, max_length=1000)


class DismissLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = PydanticField(min_length=1, max_length=1000, description="why (e.g. sent back)")


class AppliedLine(BaseModel):
    line: ReceivedLinePublic
    deliveries: list[DeliveryPublic]


class CsvMappingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = PydanticField(min_length=1, max_length=100)
    columns: dict[str, Any] = PydanticField(
        description="CsvMapping fields: date, amount, currency or default_currency, "
        "remittance, counterparty_name, counterparty_iban, transaction_id, value_date, "
        "date_format, decimal_separator, thousands_separator, delimiter, encoding"
    )


class CsvMappingPublic(BaseModel):
    id: int
    name: str
    config: dict[str, Any]
    created_at: datetime


class CreditEntryPublic(BaseModel):
    id: int
    currency: str
    amount_minor: int
    kind: str
    invoice_id: int | None
    payment_id: int | None
    line_id: int | None
    actor: str
    note: str | None
    created_at: datetime


class CreditPublic(BaseModel):
    customer_id: int
    balances: dict[str, int] = PydanticField(description="credit per currency, minor units")
    entries: list[CreditEntryPublic]


class UseCredit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_id: StrictInt = PydanticField(gt=0, le=MAX_ID)
    amount_minor: StrictInt = PydanticField(gt=0, le=10**15)
