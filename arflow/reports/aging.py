"""The aging report: open receivables by days past due, per currency, customer, segment
and collector."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import case, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from arflow.reports.common import ReportFilter, to_csv
from arflow.reports.receivables import receivables_query
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
    customer, segment and collector. Summed in the database (one row per customer, collector,
    currency and bucket), so the report costs the groups, not the invoices."""
    receivables, mode = receivables_query(as_of, today, f)
    bucket = case(
        (receivables.c.due_date >= as_of, "current"),
        (receivables.c.due_date >= as_of - timedelta(days=30), "days_1_30"),
        (receivables.c.due_date >= as_of - timedelta(days=60), "days_31_60"),
        (receivables.c.due_date >= as_of - timedelta(days=90), "days_61_90"),
        else_="days_over_90",
    ).label("bucket")
    grouped = (
        sa_select(
            receivables.c.customer_id,
            receivables.c.collector,
            receivables.c.currency,
            bucket,
            func.count().label("invoices"),
            func.sum(receivables.c.balance_minor).label("total"),
        )
        .group_by(
            receivables.c.customer_id, receivables.c.collector, receivables.c.currency, bucket
        )
        .subquery("grouped")
    )
    stmt = sa_select(grouped, col(Customer.name), col(Customer.segment)).join(
        Customer, col(Customer.id) == grouped.c.customer_id
    )
    # (dimension, key, currency) -> [name, invoices, the five buckets' sums]
    sums: dict[tuple[str, str | None, str], list[Any]] = {}
    for row in session.execute(stmt):
        total, n = int(row.total), int(row.invoices)
        keys: tuple[tuple[Dimension, str | None, str | None], ...] = (
            ("total", None, None),
            ("customer", str(row.customer_id), row.name),
            ("segment", row.segment, None),
            ("collector", row.collector, None),
        )
        for dimension, key, name in keys:
            cell = sums.setdefault((dimension, key, row.currency), [name, 0, [0] * len(BUCKETS)])
            cell[1] += n
            cell[2][BUCKETS.index(row.bucket)] += total

    def of(dimension: Dimension) -> list[AgingRow]:
        found = [
            AgingRow(
                dimension=dimension,
                key=key,
                name=name,
                currency=currency,
                invoices=n,
                **{f"{b}_minor": amount for b, amount in zip(BUCKETS, buckets, strict=True)},
                total_minor=sum(buckets),
            )
            for (d, key, currency), (name, n, buckets) in sums.items()
            if d == dimension
        ]
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
