"""The aging report: open receivables by days past due, per currency, customer, segment
and collector."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Literal

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from arflow.reports.common import ReportFilter, to_csv
from arflow.reports.receivables import receivables_at
from models import Customer

BUCKETS = ("current", "days_1_30", "days_31_60", "days_61_90", "days_over_90")


# -- aging ------------------------------------------------------------------------------


def bucket_of(as_of: date, due_date: date) -> str:
    """current = not yet due (due today included); then 1-30, 31-60, 61-90, over 90 days."""
    late = (as_of - due_date).days
    if late <= 0:
        return "current"
    if late <= 30:
        return "days_1_30"
    if late <= 60:
        return "days_31_60"
    if late <= 90:
        return "days_61_90"
    return "days_over_90"


Dimension = Literal["total", "customer", "segment", "collector"]


class AgingRow(BaseModel):
    dimension: Dimension
    key: str | None = Field(
        description="customer id, segment or collector (null: no collector assigned)"
    )
    name: str | None = Field(default=None, description="the customer's name")
    currency: str
    invoices: int = 0
    current_minor: int = 0
    days_1_30_minor: int = 0
    days_31_60_minor: int = 0
    days_61_90_minor: int = 0
    days_over_90_minor: int = 0
    total_minor: int = 0

    def add(self, bucket: str, amount: int) -> None:
        setattr(self, f"{bucket}_minor", getattr(self, f"{bucket}_minor") + amount)
        self.total_minor += amount
        self.invoices += 1


class AgingReport(BaseModel):
    as_of: date
    balances: Literal["current", "reconstructed"] = Field(
        description="current: invoices.balance_minor (as_of is today or later); "
        "reconstructed: from payments and credits by as_of (a past as_of)"
    )
    filters: ReportFilter
    totals: list[AgingRow] = Field(description="per currency")
    by_customer: list[AgingRow]
    by_segment: list[AgingRow]
    by_collector: list[AgingRow]


def aging(session: Session, as_of: date, today: date, f: ReportFilter) -> AgingReport:
    """Open receivables by end of ``as_of``, by days past due, per currency and per
    customer, segment and collector."""
    receivables, mode = receivables_at(session, as_of, today, f)
    customers = _customers(session, {r.customer_id for r in receivables})
    rows: dict[tuple[str, str | None, str], AgingRow] = {}

    def row(
        dimension: Dimension, key: str | None, currency: str, name: str | None = None
    ) -> AgingRow:
        found = rows.get((dimension, key, currency))
        if found is None:
            found = AgingRow(dimension=dimension, key=key, name=name, currency=currency)
            rows[(dimension, key, currency)] = found
        return found

    for r in receivables:
        bucket = bucket_of(as_of, r.due_date)
        customer = customers[r.customer_id]
        for target in (
            row("total", None, r.currency),
            row("customer", str(r.customer_id), r.currency, customer.name),
            row("segment", customer.segment, r.currency),
            row("collector", r.collector, r.currency),
        ):
            target.add(bucket, r.balance_minor)

    def of(dimension: str) -> list[AgingRow]:
        found = [v for (d, _, _), v in rows.items() if d == dimension]
        if dimension == "customer":
            return sorted(found, key=lambda v: (int(v.key or 0), v.currency))
        return sorted(found, key=lambda v: (v.key is None, v.key or "", v.currency))

    return AgingReport(
        as_of=as_of,
        balances=mode,
        filters=f,
        totals=of("total"),
        by_customer=of("customer"),
        by_segment=of("segment"),
        by_collector=of("collector"),
    )


def _customers(session: Session, ids: Iterable[int]) -> dict[int, Customer]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    stmt = select(Customer).where(col(Customer.id).in_(wanted))
    return {c.id: c for c in session.exec(stmt).all() if c.id is not None}


AGING_COLUMNS = (
    "dimension",
    "key",
    "name",
    "currency",
    "invoices",
    "current_minor",
    "days_1_30_minor",
    "days_31_60_minor",
    "days_61_90_minor",
    "days_over_90_minor",
    "total_minor",
)


def aging_csv(report: AgingReport) -> str:
    """One row per (dimension, key, currency): totals first, then customers, segments,
    collectors."""
    rows = [*report.totals, *report.by_customer, *report.by_segment, *report.by_collector]
    return to_csv(AGING_COLUMNS, ([getattr(r, c) for c in AGING_COLUMNS] for r in rows))
