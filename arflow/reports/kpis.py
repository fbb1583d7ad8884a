"""The collection KPIs of a period: DSO, CEI, payment timing, promises, disputes, plans,
agencies and reminders."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Date, Select, Subquery, case, cast, literal
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from arflow.reports.common import (
    VOID,
    ReportFilter,
    end_of,
    filtered,
    pct,
    rounded,
    to_csv,
)
from arflow.reports.receivables import last_payments, receivables_query
from models import AgencyPlacement, Dispute, Invoice, OutboxMessage, Payment, PaymentPlan, Promise

# Outbox statuses by what they say about delivery (today: queued, sent; providers add more).
PENDING_STATUSES = frozenset({"queued", "sending"})
DELIVERED_STATUSES = frozenset({"delivered", "opened", "clicked"})
FAILED_STATUSES = frozenset({"failed", "bounced", "undelivered", "dropped", "rejected"})

# Per currency, named counters: opening, closing, closing_current, sales, plans, placed, agency...
_Tally = dict[str, dict[str, int]]
# An agency placement: invoice id, currency, amount placed, placed_at.
_Placement = tuple[int, str, int, datetime]


# -- KPIs -------------------------------------------------------------------------------


class CurrencyKpis(BaseModel):
    currency: str
    opening_receivables_minor: int = Field(description="open receivables by the end of from - 1")
    credit_sales_minor: int = Field(description="invoices issued from..to (not cancelled)")
    closing_receivables_minor: int = Field(description="open receivables by the end of to")
    closing_current_receivables_minor: int = Field(
        description="of those, not yet due on to (due_date >= to)"
    )
    dso_days: Decimal | None = Field(
        description="closing receivables / credit sales x days in the period; null without sales"
    )
    cei_pct: Decimal | None = Field(
        description="(opening + sales - closing) / (opening + sales - closing current) x 100"
    )
    active_plans: int = Field(description="invoices on a payment plan active at the end of to")
    active_plans_minor: int = Field(description="their balances by the end of to")
    agency_placed: int = Field(description="invoices placed with an agency from..to")
    agency_placed_minor: int = Field(description="the amounts placed")
    with_agencies: int = Field(description="placed invoices still open by the end of to")
    with_agencies_minor: int = Field(description="their balances by the end of to")


class PaymentTiming(BaseModel):
    invoices_paid: int = Field(description="invoices now paid whose last payment is in from..to")
    avg_days_to_pay: Decimal | None = Field(description="mean of last payment date - issued_on")
    avg_days_late: Decimal | None = Field(
        description="mean of last payment date - due_date (negative: paid early)"
    )


class PromiseStats(BaseModel):
    kept: int = Field(description="promises marked kept from..to (promises.updated_at)")
    broken: int = Field(description="promises marked broken from..to")
    kept_rate_pct: Decimal | None = Field(description="kept / (kept + broken) x 100")


class DisputeStats(BaseModel):
    opened: int = Field(description="disputes opened from..to")
    resolved: int = Field(description="disputes resolved from..to")
    median_days_to_resolve: Decimal | None = Field(
        description="median of resolved_at - opened_at (days) over the disputes resolved"
    )


class ChannelStats(BaseModel):
    channel: str
    total: int = Field(description="outbox rows created from..to")
    pending: int = Field(description="queued or sending: not handed to the channel yet")
    sent: int = Field(description="handed to the channel: total - pending")
    delivered: int = Field(description="status delivered (or opened, clicked)")
    failed: int = Field(description="status failed, bounced, undelivered, dropped or rejected")
    delivery_rate_pct: Decimal | None = Field(description="delivered / sent x 100")
    failure_rate_pct: Decimal | None = Field(description="failed / sent x 100")
    by_status: dict[str, int]


class KpiReport(BaseModel):
    from_date: date
    to_date: date
    days: int = Field(description="days in the period, both ends included")
    closing_balances: Literal["current", "reconstructed"]
    filters: ReportFilter
    currencies: list[CurrencyKpis]
    payment_timing: PaymentTiming
    promises: PromiseStats
    disputes: DisputeStats
    reminders: list[ChannelStats]


def kpis(session: Session, start: date, end: date, today: date, f: ReportFilter) -> KpiReport:
    """The collection KPIs for the period ``start..end`` (both days included)."""
    days = (end - start).days + 1
    lo, hi = end_of(start - timedelta(days=1)), end_of(end)
    opening, _ = receivables_query(start - timedelta(days=1), today, f)
    closing, mode = receivables_query(end, today, f)
    sales = _credit_sales(session, start, end, f)

    per: _Tally = defaultdict(lambda: defaultdict(int))
    _count_receivables(session, per, opening, closing, end)
    for currency, total in sales.items():
        per[currency]["sales"] += total
    _count_plans_and_agencies(session, per, closing, hi, lo, f)
    if f.currency is not None and f.currency not in per:
        per[f.currency] = defaultdict(int)  # the asked currency is listed even when empty

    return KpiReport(
        from_date=start,
        to_date=end,
        days=days,
        closing_balances=mode,
        filters=f,
        currencies=[_currency_kpis(currency, per[currency], days) for currency in sorted(per)],
        payment_timing=_payment_timing(session, lo, hi, f),
        promises=_promises(session, lo, hi, f),
        disputes=_disputes(session, lo, hi, f),
        reminders=_reminders(session, lo, hi, f),
    )


def _credit_sales(session: Session, start: date, end: date, f: ReportFilter) -> dict[str, int]:
    """Amounts of the invoices issued ``start..end`` (not cancelled), per currency."""
    sales_stmt = filtered(
        select(Invoice.currency, func.sum(Invoice.amount_minor))
        .where(
            col(Invoice.issued_on) >= start,
            col(Invoice.issued_on) <= end,
            col(Invoice.status) != VOID,
        )
        .group_by(col(Invoice.currency)),
        f,
    )
    return {cur: int(total or 0) for cur, total in session.exec(sales_stmt).all()}


def _count_receivables(
    session: Session, per: _Tally, opening: Subquery, closing: Subquery, end: date
) -> None:
    """Opening and closing receivables per currency, and the closing ones not yet due on
    ``end`` (summed in the database)."""
    for currency, total in session.execute(
        sa_select(opening.c.currency, func.sum(opening.c.balance_minor)).group_by(
            opening.c.currency
        )
    ):
        per[currency]["opening"] += int(total)
    not_due = case((closing.c.due_date >= end, closing.c.balance_minor), else_=0)
    for currency, total, current in session.execute(
        sa_select(
            closing.c.currency, func.sum(closing.c.balance_minor), func.sum(not_due)
        ).group_by(closing.c.currency)
    ):
        per[currency]["closing"] += int(total)
        per[currency]["closing_current"] += int(current)


def _count_plans_and_agencies(
    session: Session, per: _Tally, closing: Subquery, hi: datetime, lo: datetime, f: ReportFilter
) -> None:
    """Plans active and invoices with agencies at the end (their closing balances: each
    planned invoice once, each placement before ``hi`` once), and the placements made since
    ``lo``."""
    planned = _plans_active_at(hi, f)
    for currency, n, total in session.execute(
        sa_select(closing.c.currency, func.count(), func.sum(closing.c.balance_minor))
        .where(closing.c.invoice_id.in_(planned))
        .group_by(closing.c.currency)
    ):
        per[currency]["plans"] += int(n)
        per[currency]["plans_minor"] += int(total)
    placed = _placements_by(hi, f)
    for currency, n, total in session.execute(
        sa_select(placed.c.currency, func.count(), func.sum(placed.c.amount_minor))
        .where(placed.c.placed_at >= lo)
        .group_by(placed.c.currency)
    ):
        per[currency]["placed"] += int(n)
        per[currency]["placed_minor"] += int(total)
    # The IN (the join's own condition again) lets the planner start from the few placements
    # instead of every open receivable (SQLite read all 70,000 at 100,000 invoices).
    for currency, n, total in session.execute(
        sa_select(closing.c.currency, func.count(), func.sum(closing.c.balance_minor))
        .join(placed, placed.c.invoice_id == closing.c.invoice_id)
        .where(closing.c.invoice_id.in_(sa_select(placed.c.invoice_id)))
        .group_by(closing.c.currency)
    ):
        per[currency]["agency"] += int(n)
        per[currency]["agency_minor"] += int(total)


def _placements_by(hi: datetime, f: ReportFilter) -> Subquery:
    """Every agency placement before ``hi``: invoice id, currency, amount, placed_at."""
    return filtered(
        sa_select(
            col(AgencyPlacement.invoice_id).label("invoice_id"),
            col(AgencyPlacement.currency).label("currency"),
            col(AgencyPlacement.amount_minor).label("amount_minor"),
            col(AgencyPlacement.placed_at).label("placed_at"),
        )
        .join(Invoice, col(Invoice.id) == col(AgencyPlacement.invoice_id))
        .where(col(AgencyPlacement.placed_at) < hi),
        f,
    ).subquery("placed")


def _currency_kpis(currency: str, v: dict[str, int], days: int) -> CurrencyKpis:
    opening_minor, sales_minor = v["opening"], v["sales"]
    closing_minor, current_minor = v["closing"], v["closing_current"]
    dso = rounded(Decimal(closing_minor) * days / Decimal(sales_minor)) if sales_minor else None
    cei_den = opening_minor + sales_minor - current_minor
    cei = (
        rounded(Decimal(opening_minor + sales_minor - closing_minor) * 100 / Decimal(cei_den))
        if cei_den > 0
        else None
    )
    return CurrencyKpis(
        currency=currency,
        opening_receivables_minor=opening_minor,
        credit_sales_minor=sales_minor,
        closing_receivables_minor=closing_minor,
        closing_current_receivables_minor=current_minor,
        dso_days=dso,
        cei_pct=cei,
        active_plans=v["plans"],
        active_plans_minor=v["plans_minor"],
        agency_placed=v["placed"],
        agency_placed_minor=v["placed_minor"],
        with_agencies=v["agency"],
        with_agencies_minor=v["agency_minor"],
    )


def _plans_active_at(instant: datetime, f: ReportFilter) -> Select[Any]:
    """Invoices with a plan active just before ``instant``: created before it and still
    active, or ended (completed, broken, cancelled: its last update) at or after it."""
    stmt: Select[Any] = filtered(
        sa_select(col(PaymentPlan.invoice_id))
        .join(Invoice, col(Invoice.id) == col(PaymentPlan.invoice_id))
        .where(
            col(PaymentPlan.created_at) < instant,
            (col(PaymentPlan.status) == "active") | (col(PaymentPlan.updated_at) >= instant),
        ),
        f,
    )
    return stmt


def _payment_timing(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> PaymentTiming:
    """Summed in the database: at 100,000 invoices the period holds ~18,000 paid ones, whose
    rows cost more to read than the whole rest of the report."""
    last = func.max(Payment.paid_at)
    paid = last_payments(f).having(last >= lo).having(last < hi).subquery("paid")
    paid_on = _utc_day_number(session, paid.c.paid_at)
    n, to_pay, late = session.execute(
        sa_select(
            func.count(),
            func.sum(paid_on - _day_number(session, paid.c.issued_on)),
            func.sum(paid_on - _day_number(session, paid.c.due_date)),
        )
    ).one()
    average = (lambda total: rounded(Decimal(int(total)) / Decimal(n))) if n else lambda _: None
    return PaymentTiming(
        invoices_paid=n, avg_days_to_pay=average(to_pay), avg_days_late=average(late)
    )


def _day_number(session: Session, day: Any) -> Any:
    """A date column as a day number (the difference of two is whole days)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.julianday(day)
    return day - literal(date(2000, 1, 1), Date)  # PostgreSQL: date - date is an integer


def _utc_day_number(session: Session, instant: Any) -> Any:
    """An instant's UTC calendar day as ``_day_number``: SQLite keeps UTC instants as text
    (``date()`` takes their day), PostgreSQL as timestamptz (its UTC wall time's day)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.julianday(func.date(instant))
    return cast(func.timezone("UTC", instant), Date) - literal(date(2000, 1, 1), Date)


def _promises(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> PromiseStats:
    stmt = filtered(
        select(Promise.status, func.count())
        .join(Invoice, col(Invoice.id) == col(Promise.invoice_id))
        .where(
            col(Promise.status).in_(("kept", "broken")),
            col(Promise.updated_at) >= lo,
            col(Promise.updated_at) < hi,
        )
        .group_by(col(Promise.status)),
        f,
    )
    counts = {status: int(n) for status, n in session.exec(stmt).all()}
    kept, broken = counts.get("kept", 0), counts.get("broken", 0)
    return PromiseStats(kept=kept, broken=broken, kept_rate_pct=pct(kept, kept + broken))


def _disputes(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> DisputeStats:
    joined = select(Dispute).join(Invoice, col(Invoice.id) == col(Dispute.invoice_id))
    opened_stmt = filtered(
        select(func.count())
        .select_from(Dispute)
        .join(Invoice, col(Invoice.id) == col(Dispute.invoice_id))
        .where(col(Dispute.opened_at) >= lo, col(Dispute.opened_at) < hi),
        f,
    )
    resolved = session.exec(
        filtered(
            joined.where(
                col(Dispute.status) != "open",
                col(Dispute.resolved_at) >= lo,
                col(Dispute.resolved_at) < hi,
            ),
            f,
        )
    ).all()
    durations = [
        Decimal(int((d.resolved_at - d.opened_at).total_seconds())) / 86400
        for d in resolved
        if d.resolved_at is not None
    ]
    return DisputeStats(
        opened=int(session.exec(opened_stmt).one()),
        resolved=len(resolved),
        median_days_to_resolve=rounded(statistics.median(durations)) if durations else None,
    )


def _reminders(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> list[ChannelStats]:
    stmt = filtered(
        select(OutboxMessage.channel, OutboxMessage.status, func.count())
        .join(Invoice, col(Invoice.id) == col(OutboxMessage.invoice_id))
        .where(col(OutboxMessage.created_at) >= lo, col(OutboxMessage.created_at) < hi)
        .group_by(col(OutboxMessage.channel), col(OutboxMessage.status)),
        f,
    )
    by_channel: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, status, n in session.exec(stmt).all():
        by_channel[channel][status] = int(n)
    out = []
    for channel in sorted(by_channel):
        statuses = dict(sorted(by_channel[channel].items()))
        total = sum(statuses.values())
        pending = sum(n for s, n in statuses.items() if s in PENDING_STATUSES)
        delivered = sum(n for s, n in statuses.items() if s in DELIVERED_STATUSES)
        failed = sum(n for s, n in statuses.items() if s in FAILED_STATUSES)
        sent = total - pending
        out.append(
            ChannelStats(
                channel=channel,
                total=total,
                pending=pending,
                sent=sent,
                delivered=delivered,
                failed=failed,
                delivery_rate_pct=pct(delivered, sent),
                failure_rate_pct=pct(failed, sent),
                by_status=statuses,
            )
        )
    return out


KPI_COLUMNS = ("metric", "currency", "channel", "value")


def kpis_csv(report: KpiReport) -> str:
    """Long format: one metric per row (``currency`` or ``channel`` where it applies)."""
    rows: list[tuple[str, str, str, Any]] = [
        ("from_date", "", "", report.from_date),
        ("to_date", "", "", report.to_date),
        ("days", "", "", report.days),
    ]
    for c in report.currencies:
        for name, value in c.model_dump(exclude={"currency"}).items():
            rows.append((name, c.currency, "", value))
    for group in (report.payment_timing, report.promises, report.disputes):
        rows.extend((name, "", "", value) for name, value in group.model_dump().items())
    for ch in report.reminders:
        for name, value in ch.model_dump(exclude={"channel", "by_status"}).items():
            rows.append((f"reminders_{name}", "", ch.channel, value))
        for status, n in ch.by_status.items():
            rows.append((f"reminders_status_{status}", "", ch.channel, n))
    return to_csv(KPI_COLUMNS, rows)
