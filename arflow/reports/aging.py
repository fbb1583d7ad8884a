"""The aging report: open receivables by days past due, per currency, customer, segment
and collector."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Select, Subquery, case, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from arflow.db import SessionFactory
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
Balances = Literal["current", "reconstructed"]
CustomerOrder = Literal["overdue", "total", "customer"]
CUSTOMER_ORDERS: dict[str, str] = {
    "overdue": "per currency (A-Z), the most overdue money first (total - current), then the "
    "largest total, then the customer id",
    "total": "per currency (A-Z), the largest total first, then the customer id",
    "customer": "by customer id, then currency",
}
DEFAULT_CUSTOMER_ROWS = 100
MAX_CUSTOMER_ROWS = 1000


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


class CustomerPage(BaseModel):
    """Which of the per-customer rows ``by_customer`` holds."""

    total: int = Field(description="per-customer rows in all (one per customer and currency)")
    limit: int
    offset: int
    order: CustomerOrder = Field(
        description="; ".join(f"{k}: {v}" for k, v in CUSTOMER_ORDERS.items())
    )


class AgingReport(BaseModel):
    as_of: date
    balances: Balances = Field(
        description="current: invoices.balance_minor (as_of is today or later); "
        "reconstructed: from payments and credits by as_of (a past as_of)"
    )
    filters: ReportFilter
    totals: list[AgingRow] = Field(description="per currency")
    by_customer: list[AgingRow] = Field(
        description="one page of the per-customer rows (``by_customer_page``); the CSV has "
        "every row"
    )
    by_customer_page: CustomerPage
    by_segment: list[AgingRow]
    by_collector: list[AgingRow]


def _bucketed(as_of: date, today: date, f: ReportFilter) -> tuple[Subquery, Balances]:
    """The open receivables of ``receivables_query`` with their bucket (``bucket_sql``)."""
    receivables, mode = receivables_query(as_of, today, f)
    bucket = bucket_sql(receivables.c.due_date, as_of).label("bucket")
    return sa_select(receivables, bucket).subquery("bucketed"), mode


def _bucket_sums(bucketed: Subquery) -> list[Any]:
    """count, the five buckets' sums and the total, as aggregates over ``bucketed``."""
    balance = bucketed.c.balance_minor
    return [
        func.count().label("invoices"),
        *(
            func.sum(case((bucketed.c.bucket == b, balance), else_=0)).label(f"{b}_minor")
            for b in BUCKETS
        ),
        func.sum(balance).label("total_minor"),
    ]


def _row(dimension: Dimension, key: Any, name: str | None, currency: str, sums: Any) -> AgingRow:
    """A row from the database's own sums (``invoices``, the buckets, ``total_minor``): nothing
    to validate."""
    values: dict[str, Any] = {f"{b}_minor": int(getattr(sums, f"{b}_minor")) for b in BUCKETS}
    return AgingRow.model_construct(
        dimension=dimension,
        key=None if key is None else str(key),
        name=name,
        currency=currency,
        invoices=int(sums.invoices),
        total_minor=int(sums.total_minor),
        **values,
    )


def aging(
    session: Session,
    as_of: date,
    today: date,
    f: ReportFilter,
    limit: int = DEFAULT_CUSTOMER_ROWS,
    offset: int = 0,
    order: CustomerOrder = "overdue",
) -> AgingReport:
    """Open receivables by end of ``as_of``, by days past due, per currency and per segment
    and collector (complete), and one page of the per-customer rows (``limit`` from
    ``offset`` in ``order``). Summed, ordered and paged in the database, so the report costs
    the groups, not the invoices, and the answer stays small with 16,000 customers."""
    bucketed, mode = _bucketed(as_of, today, f)
    small = _segments_and_collectors(session, bucketed)
    page, total = _customer_page(session, bucketed, order, limit, offset)
    return AgingReport(
        as_of=as_of,
        balances=mode,
        filters=f,
        totals=small["total"],
        by_customer=page,
        by_customer_page=CustomerPage(total=total, limit=limit, offset=offset, order=order),
        by_segment=small["segment"],
        by_collector=small["collector"],
    )


def _segments_and_collectors(session: Session, bucketed: Subquery) -> dict[str, list[AgingRow]]:
    """The totals per currency and the rows per segment and per collector, from one grouping
    by segment, collector and currency (a few dozen groups)."""
    grouped = (
        sa_select(
            col(Customer.segment).label("segment"),
            bucketed.c.collector,
            bucketed.c.currency,
            *_bucket_sums(bucketed),
        )
        .join(Customer, col(Customer.id) == bucketed.c.customer_id)
        .group_by(col(Customer.segment), bucketed.c.collector, bucketed.c.currency)
    )
    sums: dict[str, dict[tuple[Any, str], list[int]]] = {
        "total": {},
        "segment": {},
        "collector": {},
    }
    fields = ("invoices", *(f"{b}_minor" for b in BUCKETS), "total_minor")
    for r in session.execute(grouped):
        for dimension, key in (("total", None), ("segment", r.segment), ("collector", r.collector)):
            found = sums[dimension].setdefault((key, r.currency), [0] * len(fields))
            for i, name in enumerate(fields):
                found[i] += int(getattr(r, name))

    def of(dimension: Dimension) -> list[AgingRow]:
        ordered = sorted(
            sums[dimension].items(),
            key=lambda item: (item[0][0] is None, item[0][0] or "", item[0][1]),
        )
        return [
            _row(
                dimension, key, None, currency, SimpleNamespace(**dict(zip(fields, v, strict=True)))
            )
            for (key, currency), v in ordered
        ]

    return {"total": of("total"), "segment": of("segment"), "collector": of("collector")}


def _per_customer(bucketed: Subquery, order: CustomerOrder) -> Select[Any]:
    """Every per-customer row (customer, currency, sums, name) in ``order``."""
    per = (
        sa_select(bucketed.c.customer_id, bucketed.c.currency, *_bucket_sums(bucketed))
        .group_by(bucketed.c.customer_id, bucketed.c.currency)
        .subquery("per_customer")
    )
    overdue = per.c.total_minor - per.c.current_minor
    orders = {
        "overdue": (per.c.currency, overdue.desc(), per.c.total_minor.desc(), per.c.customer_id),
        "total": (per.c.currency, per.c.total_minor.desc(), per.c.customer_id),
        "customer": (per.c.customer_id, per.c.currency),
    }
    return (
        sa_select(per, col(Customer.name).label("name"))
        .join(Customer, col(Customer.id) == per.c.customer_id)
        .order_by(*orders[order])
    )


def _customer_page(
    session: Session, bucketed: Subquery, order: CustomerOrder, limit: int, offset: int
) -> tuple[list[AgingRow], int]:
    """One page of the per-customer rows and how many there are in all (a window count over
    the groups, in the same query; counted apart only when the page is past the end)."""
    stmt = _per_customer(bucketed, order)
    rows = session.execute(
        stmt.add_columns(func.count().over().label("rows_in_all")).limit(limit).offset(offset)
    ).all()
    if rows:
        total = int(rows[0].rows_in_all)
    else:
        total = int(
            session.execute(sa_select(func.count()).select_from(stmt.subquery())).scalar_one()
        )
    page = [_row("customer", r.customer_id, r.name, r.currency, r) for r in rows]
    return page, total


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
CSV_CHUNK = 1000


def aging_csv(
    sessions: SessionFactory,
    as_of: date,
    today: date,
    f: ReportFilter,
    order: CustomerOrder = "overdue",
) -> Iterator[str]:
    """The whole report as CSV text, a chunk of rows at a time: one row per (dimension, key,
    currency), totals first, then every customer (in ``order``), segments, collectors. Read
    in a session of its own (a streamed answer outlives the request's session)."""
    with sessions() as session:
        bucketed, _ = _bucketed(as_of, today, f)
        small = _segments_and_collectors(session, bucketed)
        yield to_csv(AGING_COLUMNS, _cells(small["total"]))
        customers = session.execute(
            _per_customer(bucketed, order).execution_options(yield_per=CSV_CHUNK)
        )
        for chunk in customers.partitions():
            rows = [_row("customer", r.customer_id, r.name, r.currency, r) for r in chunk]
            yield to_csv((), _cells(rows))
        yield to_csv((), _cells([*small["segment"], *small["collector"]]))


def _cells(rows: list[AgingRow]) -> Iterator[list[Any]]:
    return ([getattr(r, c) for c in AGING_COLUMNS] for r in rows)
