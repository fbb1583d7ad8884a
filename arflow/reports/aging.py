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
# The most days past due of each bucket but the last (current: not yet due, due today included).
LATEST = ((0, "current"), (30, "days_1_30"), (60, "days_31_60"), (90, "days_61_90"))


# -- aging ------------------------------------------------------------------------------


def bucket_of(as_of: date, due_date: date) -> str:
    """current = not yet due (due today included); then 1-30, 31-60, 61-90, over 90 days."""
    late = (as_of - due_date).days
    return next((name for days, name in LATEST if late <= days), BUCKETS[-1])


def bucket_sql(due_date: Any, as_of: date) -> Any:
    """``bucket_of`` as a SQL expression on the column ``due_date`` (days late <= n is
    ``due_date >= as_of - n``), for sums grouped in the database."""
    return case(
        *((due_date >= as_of - timedelta(days=days), name) for days, name in LATEST),
        else_=BUCKETS[-1],
    )


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
    bucket = bucket_sql(receivables.c.due_date, as_of).label("bucket")
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
    # per dimension: (key, currency) -> [name, invoices, the five buckets' sums]
    cells: dict[str, dict[tuple[Any, str], list[Any]]] = {
        "total": {},
        "customer": {},
        "segment": {},
        "collector": {},
    }
    index = {b: i + 2 for i, b in enumerate(BUCKETS)}
    for customer_id, collector, currency, bucket, n, total, name, segment in session.execute(stmt):
        at = index[bucket]
        for dimension, key, label in (
            ("total", None, None),
            ("customer", customer_id, name),
            ("segment", segment, None),
            ("collector", collector, None),
        ):
            found = cells[dimension].get((key, currency))
            if found is None:
                found = cells[dimension][(key, currency)] = [label, 0, 0, 0, 0, 0, 0]
            found[1] += n
            found[at] += total

    def row(dimension: Dimension, key: Any, currency: str, cell: list[Any]) -> AgingRow:
        values: dict[str, Any] = {
            f"{b}_minor": int(v) for b, v in zip(BUCKETS, cell[2:], strict=True)
        }
        # Built from the database's own sums: nothing to validate (16,000 customers' rows at
        # 100,000 invoices took 0.2 s validated).
        return AgingRow.model_construct(
            dimension=dimension,
            key=None if key is None else str(key),
            name=cell[0],
            currency=currency,
            invoices=cell[1],
            total_minor=sum(values.values()),
            **values,
        )

    def of(dimension: Dimension) -> list[AgingRow]:
        ordered = sorted(
            cells[dimension].items(),
            key=lambda item: (item[0][0] is None, item[0][0] or "", item[0][1]),
        )
        return [row(dimension, key, currency, cell) for (key, currency), cell in ordered]

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
