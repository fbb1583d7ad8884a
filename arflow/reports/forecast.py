"""The cash forecast: expected receipts per ISO week, discounted by each customer's history."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from arflow.reports.common import OPEN_STATUSES, ReportFilter, as_utc, filtered, pct, to_csv
from arflow.reports.receivables import last_payments
from models import Invoice, PaymentPlan, Promise

# -- cash forecast ------------------------------------------------------------------------


class CustomerFactor(BaseModel):
    """What a customer's history does to the money they owe."""

    customer_id: int
    paid_invoices: int = Field(description="invoices closed as paid")
    written_off_invoices: int
    collection_rate_pct: Decimal = Field(
        description="paid / (paid + written off) x 100; 100 without history"
    )
    shift_days: int = Field(
        description="mean over paid invoices of max(0, last payment date - due_date), "
        "rounded half-up; 0 without history"
    )


class ForecastWeek(BaseModel):
    week: str = Field(description="ISO week, e.g. 2026-W14")
    week_start: date = Field(description="its Monday")
    currency: str
    invoices_minor: int = Field(description="expected from open balances by due date")
    plans_minor: int = Field(description="expected from unpaid plan instalments")
    promises_minor: int = Field(description="expected from open promises")
    expected_minor: int = Field(description="the sum of the three")
    scheduled_minor: int = Field(
        description="the same money at its contractual date, undiscounted (past dates: today)"
    )


class ForecastBeyond(BaseModel):
    currency: str
    expected_minor: int
    scheduled_minor: int


class ForecastReport(BaseModel):
    today: date
    weeks: int
    filters: ReportFilter
    rows: list[ForecastWeek] = Field(description="every week x currency, zeros included")
    beyond_horizon: list[ForecastBeyond] = Field(description="money expected after the last week")
    customers: list[CustomerFactor]


@dataclass
class _Expected:
    source: Literal["invoices", "plans", "promises"]
    currency: str
    customer_id: int
    on: date
    amount_minor: int


def forecast(session: Session, weeks: int, today: date, f: ReportFilter) -> ForecastReport:
    """Expected receipts per ISO week for ``weeks`` weeks from the week of ``today``.

    Money due: each open invoice's balance at its due date; an active payment plan replaces
    that with the unpaid part of each instalment at its due date; an open promise takes the
    promised amount (at most the balance) to the promised date and leaves the rest at the
    due date. All capped so that no invoice counts more than its balance.

    Discount by the customer's history (all their invoices, any currency): the date moves
    later by the customer's ``shift_days`` (never before today: overdue money is expected
    this week), and the amount is multiplied by the ``collection_rate`` (rounded half-up to
    a minor unit per item). ``scheduled_minor`` shows the same money undiscounted at its
    contractual date.
    """
    items = _scheduled_items(session, f)
    factors = _customer_factors(session, {i.customer_id for i in items})
    first = today - timedelta(days=today.weekday())
    horizon_end = first + timedelta(weeks=weeks)
    currencies = sorted({i.currency for i in items} | ({f.currency} if f.currency else set()))
    cells: dict[tuple[int, str], dict[str, int]] = {
        (w, c): defaultdict(int) for w in range(weeks) for c in currencies
    }
    beyond: dict[str, dict[str, int]] = {c: defaultdict(int) for c in currencies}

    def cell(on: date, currency: str) -> dict[str, int]:
        if on >= horizon_end:
            return beyond[currency]
        return cells[((on - first).days // 7, currency)]

    for item in items:
        factor = factors[item.customer_id]
        scheduled_on = max(item.on, today)
        expected_on = max(item.on + timedelta(days=factor.shift_days), today)
        expected = int(
            (Decimal(item.amount_minor) * factor.collection_rate_pct / 100).quantize(
                Decimal(1), rounding=ROUND_HALF_UP
            )
        )
        cell(scheduled_on, item.currency)["scheduled"] += item.amount_minor
        target = cell(expected_on, item.currency)
        target[item.source] += expected
        target["expected"] += expected

    rows = []
    for w in range(weeks):
        start = first + timedelta(weeks=w)
        iso = start.isocalendar()
        for c in currencies:
            v = cells[(w, c)]
            rows.append(
                ForecastWeek(
                    week=f"{iso.year}-W{iso.week:02d}",
                    week_start=start,
                    currency=c,
                    invoices_minor=v["invoices"],
                    plans_minor=v["plans"],
                    promises_minor=v["promises"],
                    expected_minor=v["expected"],
                    scheduled_minor=v["scheduled"],
                )
            )
    return ForecastReport(
        today=today,
        weeks=weeks,
        filters=f,
        rows=rows,
        beyond_horizon=[
            ForecastBeyond(
                currency=c,
                expected_minor=beyond[c]["expected"],
                scheduled_minor=beyond[c]["scheduled"],
            )
            for c in currencies
        ],
        customers=[factors[c] for c in sorted(factors)],
    )


def _scheduled_items(session: Session, f: ReportFilter) -> list[_Expected]:
    open_stmt = filtered(
        select(Invoice).where(
            col(Invoice.status).in_(OPEN_STATUSES), col(Invoice.balance_minor) > 0
        ),
        f,
    )
    invoices = session.exec(open_stmt.order_by(col(Invoice.id))).all()
    ids = [i.id for i in invoices if i.id is not None]
    if not ids:
        return []
    plans: dict[int, PaymentPlan] = {}
    for found_plan in session.exec(
        select(PaymentPlan)
        .where(col(PaymentPlan.invoice_id).in_(ids), col(PaymentPlan.status) == "active")
        .order_by(col(PaymentPlan.id))
    ).all():
        plans[found_plan.invoice_id] = found_plan  # the latest active plan wins
    promises: dict[int, Promise] = {}
    for found_promise in session.exec(
        select(Promise)
        .where(col(Promise.invoice_id).in_(ids), col(Promise.status) == "open")
        .order_by(col(Promise.id))
    ).all():
        promises[found_promise.invoice_id] = found_promise

    items: list[_Expected] = []
    for inv in invoices:
        assert inv.id is not None
        left = inv.balance_minor

        def take(source: Any, on: date, amount: int, inv: Invoice = inv) -> None:
            nonlocal left
            amount = min(amount, left)
            if amount > 0:
                items.append(_Expected(source, inv.currency, inv.customer_id, on, amount))
                left -= amount

        plan = plans.get(inv.id)
        promise = promises.get(inv.id)
        if plan is not None:
            for inst in plan.installments:
                if inst.get("state") in ("paid", "missed"):
                    continue
                unpaid = int(inst["amount_minor"]) - int(inst.get("paid_minor", 0))
                take("plans", date.fromisoformat(str(inst["due_date"])), unpaid)
        elif promise is not None:
            take("promises", promise.promised_date, promise.amount_minor)
        take("invoices", inv.due_date, left)
    return items


def _customer_factors(session: Session, ids: set[int]) -> dict[int, CustomerFactor]:
    if not ids:
        return {}
    wanted = sorted(ids)
    counts: dict[tuple[int, str], int] = {}
    for customer_id, status, n in session.exec(
        select(Invoice.customer_id, Invoice.status, func.count())
        .where(
            col(Invoice.customer_id).in_(wanted),
            col(Invoice.status).in_(("paid", "written_off")),
        )
        .group_by(col(Invoice.customer_id), col(Invoice.status))
    ).all():
        counts[(customer_id, status)] = int(n)
    late: dict[int, list[int]] = defaultdict(list)
    stmt = last_payments(ReportFilter()).where(col(Invoice.customer_id).in_(wanted))
    for row in session.execute(stmt):
        late[row.customer_id].append(max(0, (as_utc(row.paid_at).date() - row.due_date).days))
    out = {}
    for customer_id in wanted:
        paid = counts.get((customer_id, "paid"), 0)
        written_off = counts.get((customer_id, "written_off"), 0)
        rate = pct(paid, paid + written_off)
        days = late.get(customer_id, [])
        shift = (
            int((Decimal(sum(days)) / len(days)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            if days
            else 0
        )
        out[customer_id] = CustomerFactor(
            customer_id=customer_id,
            paid_invoices=paid,
            written_off_invoices=written_off,
            collection_rate_pct=rate if rate is not None else Decimal("100.0"),
            shift_days=shift,
        )
    return out


FORECAST_COLUMNS = (
    "week",
    "week_start",
    "currency",
    "invoices_minor",
    "plans_minor",
    "promises_minor",
    "expected_minor",
    "scheduled_minor",
)


def forecast_csv(report: ForecastReport) -> str:
    """One row per week and currency, then one ``beyond`` row per currency."""
    rows: list[list[Any]] = [[getattr(r, c) for c in FORECAST_COLUMNS] for r in report.rows]
    for b in report.beyond_horizon:
        rows.append(["beyond", "", b.currency, "", "", "", b.expected_minor, b.scheduled_minor])
    return to_csv(FORECAST_COLUMNS, rows)
