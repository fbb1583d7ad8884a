"""What every report shares: the filter, the day boundaries, rounding and CSV.

Conventions shared by every report:

- Money is an ``int`` of minor units next to its ISO 4217 code; amounts are summed per
  currency only (EUR is never added to USD).
- Ratios and averages are ``Decimal`` rounded half-up (days and percentages to one place)
  and serialised as JSON strings (``"117.8"``); ``null`` when the denominator is zero.
- A day is a UTC calendar day: "by ``d``" means before ``d + 1 day`` 00:00 UTC.
- Cancelled invoices are void: they count nowhere (not as receivables, nor as sales).
- Open receivables are invoices with status open, disputed or escalated and a balance > 0.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlmodel import col, select

from models import Customer, Invoice

OPEN_STATUSES = ("open", "disputed", "escalated")
VOID = "cancelled"
ONE_PLACE = Decimal("0.1")
MIN_DATE = date(1900, 1, 1)
MAX_DATE = date(9999, 12, 30)

S = TypeVar("S")


# -- parameters ---------------------------------------------------------------------------


class ReportFilter(BaseModel):
    """Which invoices a report covers (every given filter must match)."""

    customer_id: int | None = None
    segment: str | None = Field(default=None, description="customers.segment")
    collector: str | None = Field(default=None, description="invoices.collector")
    currency: str | None = Field(default=None, description="ISO 4217 code")


def filtered(stmt: S, f: ReportFilter) -> S:
    """``stmt`` (which selects from or joins ``Invoice``) narrowed to the filter."""
    stmt_: Any = stmt
    if f.customer_id is not None:
        stmt_ = stmt_.where(col(Invoice.customer_id) == f.customer_id)
    if f.collector is not None:
        stmt_ = stmt_.where(col(Invoice.collector) == f.collector)
    if f.currency is not None:
        stmt_ = stmt_.where(col(Invoice.currency) == f.currency)
    if f.segment is not None:
        in_segment = select(Customer.id).where(col(Customer.segment) == f.segment)
        stmt_ = stmt_.where(col(Invoice.customer_id).in_(in_segment))
    result: S = stmt_
    return result


def as_utc(instant: datetime) -> datetime:
    """An instant read as a plain column (not through the model's UTC type): SQLite hands it
    back without its zone, which is UTC."""
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def end_of(day: date) -> datetime:
    """The first instant after ``day`` (UTC): "by ``day``" means before this."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def rounded(value: Decimal) -> Decimal:
    return value.quantize(ONE_PLACE, rounding=ROUND_HALF_UP)


def pct(part: int, whole: int) -> Decimal | None:
    return rounded(Decimal(part) * 100 / Decimal(whole)) if whole else None


def mean(values: Sequence[int]) -> Decimal | None:
    return rounded(Decimal(sum(values)) / Decimal(len(values))) if values else None


# -- CSV --------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell; text that a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, bool | int | Decimal | date):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text of ``rows`` under ``header`` (none when empty: a later chunk of a stream)."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(header)
    for r in rows:
        writer.writerow([_cell(v) for v in r])
    return out.getvalue()
