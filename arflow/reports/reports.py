"""Reports: aging, KPIs (DSO, CEI, ...) and the cash forecast, computed from the database.

Pure-ish functions: each takes a ``Session``, the report's parameters and ``today`` (the
caller decides what today is, in UTC) and returns a Pydantic model. Nothing here writes.

Conventions shared by every report:

- Money is an ``int`` of minor units next to its ISO 4217 code; amounts are summed per
  currency only (EUR is never added to USD).
- Ratios and averages are ``Decimal`` rounded half-up (days and percentages to one place)
  and serialised as JSON strings (``"117.8"``); ``null`` when the denominator is zero.
- A day is a UTC calendar day: "by ``d``" means before ``d + 1 day`` 00:00 UTC.
- Cancelled invoices are void: they count nowhere (not as receivables, nor as sales).
- Open receivables are invoices with status open, disputed or escalated and a balance > 0.

Receivables as of a day (``receivables_at``): for a day on or after today the current state
is used (``invoices.balance_minor`` and status). For a past day the balance is
reconstructed: invoices issued by then and not closed by then (``closed_at``), amount minus
the signed payments paid by then (refunds and chargebacks are negative; payments kept as
customer credit because the invoice was already closed, status ``unapplied``, are left out),
minus upheld dispute credits resolved by then; an early-payment discount the invoice holds
settles the rest once the payments reach it; the result is kept between 0 and the amount.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import Select

from models import (
    AgencyPlacement,
    Customer,
    Dispute,
    Invoice,
    OutboxMessage,
    Payment,
    PaymentPlan,
    Promise,
)

OPEN_STATUSES = ("open", "disputed", "escalated")
VOID = "cancelled"
# Outbox statuses by what they say about delivery (today: queued, sent; providers add more).
PENDING_STATUSES = frozenset({"queued", "sending"})
DELIVERED_STATUSES = frozenset({"delivered", "opened", "clicked"})
FAILED_STATUSES = frozenset({"failed", "bounced", "undelivered", "dropped", "rejected"})
BUCKETS = ("current", "days_1_30", "days_31_60", "days_61_90", "days_over_90")
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


def _filtered(stmt: S, f: ReportFilter) -> S:
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


def end_of(day: date) -> datetime:
    """The first instant after ``day`` (UTC): "by ``day``" means before this."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def _round(value: Decimal) -> Decimal:
    return value.quantize(ONE_PLACE, rounding=ROUND_HALF_UP)


def _pct(part: int, whole: int) -> Decimal | None:
    return _round(Decimal(part) * 100 / Decimal(whole)) if whole else None


def _mean(values: Sequence[int]) -> Decimal | None:
    return _round(Decimal(sum(values)) / Decimal(len(values))) if values else None


# -- receivables as of a day ----------------------------------------------------------------


@dataclass(frozen=True)
class Receivable:
    invoice_id: int
    customer_id: int
    currency: str
    due_date: date
    collector: str | None
    balance_minor: int


def receivables_at(
    session: Session, as_of: date, today: date, f: ReportFilter
) -> tuple[list[Receivable], Literal["current", "reconstructed"]]:
    """Open receivables by the end of ``as_of`` and how their balances were found."""
    if as_of >= today:
        stmt = _filtered(
            select(Invoice).where(
                col(Invoice.status).in_(OPEN_STATUSES), col(Invoice.balance_minor) > 0
            ),
            f,
        )
        rows = session.exec(stmt.order_by(col(Invoice.id))).all()
        return [_receivable(inv, inv.balance_minor) for inv in rows], "current"
    return _reconstructed(session, as_of, f), "reconstructed"


def _receivable(inv: Invoice, balance: int) -> Receivable:
    assert inv.id is not None
    return Receivable(
        invoice_id=inv.id,
        customer_id=inv.customer_id,
        currency=inv.currency,
        due_date=inv.due_date,
        collector=inv.collector,
        balance_minor=balance,
    )


def _reconstructed(session: Session, as_of: date, f: ReportFilter) -> list[Receivable]:
    cutoff = end_of(as_of)
    alive = _filtered(
        select(Invoice).where(
            col(Invoice.issued_on) <= as_of,
            col(Invoice.status) != VOID,
            (col(Invoice.closed_at).is_(None)) | (col(Invoice.closed_at) >= cutoff),
        ),
        f,
    )
    invoices = session.exec(alive.order_by(col(Invoice.id))).all()
    if not invoices:
        return []
    paid_stmt = _filtered(
        select(Payment.invoice_id, func.sum(Payment.amount_minor))
        .join(Invoice, col(Invoice.id) == col(Payment.invoice_id))
        .where(col(Payment.paid_at) < cutoff, col(Payment.status) != "unapplied")
        .group_by(col(Payment.invoice_id)),
        f,
    )
    paid = {i: int(total or 0) for i, total in session.exec(paid_stmt).all()}
    credit_stmt = _filtered(
        select(Dispute.invoice_id, func.sum(Dispute.credit_minor))
        .join(Invoice, col(Invoice.id) == col(Dispute.invoice_id))
        .where(
            col(Dispute.status) == "upheld",
            col(Dispute.resolved_at) < cutoff,
            col(Dispute.credit_minor) > 0,
        )
        .group_by(col(Dispute.invoice_id)),
        f,
    )
    credited = {i: int(total or 0) for i, total in session.exec(credit_stmt).all()}
    out = []
    for inv in invoices:
        assert inv.id is not None
        balance = inv.amount_minor - paid.get(inv.id, 0) - credited.get(inv.id, 0)
        if inv.discount_taken_minor and 0 < balance <= inv.discount_taken_minor:
            balance = 0  # the payment that reached the discounted amount settled it
        balance = max(0, min(inv.amount_minor, balance))
        if balance > 0:
            out.append(_receivable(inv, balance))
    return out


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
    opening, _ = receivables_at(session, start - timedelta(days=1), today, f)
    closing, mode = receivables_at(session, end, today, f)
    closing_by_invoice = {r.invoice_id: r for r in closing}

    sales_stmt = _filtered(
        select(Invoice.currency, func.sum(Invoice.amount_minor))
        .where(
            col(Invoice.issued_on) >= start,
            col(Invoice.issued_on) <= end,
            col(Invoice.status) != VOID,
        )
        .group_by(col(Invoice.currency)),
        f,
    )
    sales = {cur: int(total or 0) for cur, total in session.exec(sales_stmt).all()}

    planned = _plans_active_at(session, hi, f)
    placed_stmt = _filtered(
        select(
            AgencyPlacement.invoice_id,
            AgencyPlacement.currency,
            AgencyPlacement.amount_minor,
            AgencyPlacement.placed_at,
        )
        .join(Invoice, col(Invoice.id) == col(AgencyPlacement.invoice_id))
        .where(col(AgencyPlacement.placed_at) < hi),
        f,
    )
    placements = session.exec(placed_stmt).all()

    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in opening:
        per[r.currency]["opening"] += r.balance_minor
    for r in closing:
        per[r.currency]["closing"] += r.balance_minor
        if r.due_date >= end:
            per[r.currency]["closing_current"] += r.balance_minor
    for currency, total in sales.items():
        per[currency]["sales"] += total
    for invoice_id in planned:
        found = closing_by_invoice.get(invoice_id)
        if found is not None:
            per[found.currency]["plans"] += 1
            per[found.currency]["plans_minor"] += found.balance_minor
    for invoice_id, currency, amount, placed_at in placements:
        if placed_at >= lo:
            per[currency]["placed"] += 1
            per[currency]["placed_minor"] += amount
        found = closing_by_invoice.get(invoice_id)
        if found is not None:
            per[found.currency]["agency"] += 1
            per[found.currency]["agency_minor"] += found.balance_minor
    if f.currency is not None and f.currency not in per:
        per[f.currency] = defaultdict(int)  # the asked currency is listed even when empty

    currencies = []
    for currency in sorted(per):
        v = per[currency]
        opening_minor, sales_minor = v["opening"], v["sales"]
        closing_minor, current_minor = v["closing"], v["closing_current"]
        dso = _round(Decimal(closing_minor) * days / Decimal(sales_minor)) if sales_minor else None
        cei_den = opening_minor + sales_minor - current_minor
        cei = (
            _round(Decimal(opening_minor + sales_minor - closing_minor) * 100 / Decimal(cei_den))
            if cei_den > 0
            else None
        )
        currencies.append(
            CurrencyKpis(
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
        )
    return KpiReport(
        from_date=start,
        to_date=end,
        days=days,
        closing_balances=mode,
        filters=f,
        currencies=currencies,
        payment_timing=_payment_timing(session, lo, hi, f),
        promises=_promises(session, lo, hi, f),
        disputes=_disputes(session, lo, hi, f),
        reminders=_reminders(session, lo, hi, f),
    )


def _plans_active_at(session: Session, instant: datetime, f: ReportFilter) -> set[int]:
    """Invoices with a plan active just before ``instant``: created before it and still
    active, or ended (completed, broken, cancelled: its last update) at or after it."""
    stmt = _filtered(
        select(PaymentPlan.invoice_id)
        .join(Invoice, col(Invoice.id) == col(PaymentPlan.invoice_id))
        .where(
            col(PaymentPlan.created_at) < instant,
            (col(PaymentPlan.status) == "active") | (col(PaymentPlan.updated_at) >= instant),
        ),
        f,
    )
    return set(session.exec(stmt).all())


def _last_payments(f: ReportFilter) -> Select[Invoice, datetime]:
    """(paid invoice, its last payment instant) pairs."""
    last = func.max(Payment.paid_at)
    stmt = (
        select(Invoice, last)
        .join(Payment, col(Payment.invoice_id) == col(Invoice.id))
        .where(
            col(Invoice.status) == "paid",
            col(Payment.kind) == "payment",
            col(Payment.status) != "unapplied",
        )
        .group_by(col(Invoice.id))  # the other columns depend on the primary key
    )
    return _filtered(stmt, f)


def _payment_timing(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> PaymentTiming:
    last = func.max(Payment.paid_at)
    stmt = _last_payments(f).having(last >= lo).having(last < hi)
    to_pay, late = [], []
    for inv, paid_at in session.exec(stmt).all():
        paid_on = paid_at.astimezone(UTC).date()
        to_pay.append((paid_on - inv.issued_on).days)
        late.append((paid_on - inv.due_date).days)
    return PaymentTiming(
        invoices_paid=len(to_pay), avg_days_to_pay=_mean(to_pay), avg_days_late=_mean(late)
    )


def _promises(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> PromiseStats:
    stmt = _filtered(
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
    return PromiseStats(kept=kept, broken=broken, kept_rate_pct=_pct(kept, kept + broken))


def _disputes(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> DisputeStats:
    joined = select(Dispute).join(Invoice, col(Invoice.id) == col(Dispute.invoice_id))
    opened_stmt = _filtered(
        select(func.count())
        .select_from(Dispute)
        .join(Invoice, col(Invoice.id) == col(Dispute.invoice_id))
        .where(col(Dispute.opened_at) >= lo, col(Dispute.opened_at) < hi),
        f,
    )
    resolved = session.exec(
        _filtered(
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
        median_days_to_resolve=_round(statistics.median(durations)) if durations else None,
    )


def _reminders(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> list[ChannelStats]:
    stmt = _filtered(
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
                delivery_rate_pct=_pct(delivered, sent),
                failure_rate_pct=_pct(failed, sent),
                by_status=statuses,
            )
        )
    return out


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
    open_stmt = _filtered(
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
    stmt = _last_payments(ReportFilter()).where(col(Invoice.customer_id).in_(wanted))
    for inv, paid_at in session.exec(stmt).all():
        late[inv.customer_id].append(max(0, (paid_at.astimezone(UTC).date() - inv.due_date).days))
    out = {}
    for customer_id in wanted:
        paid = counts.get((customer_id, "paid"), 0)
        written_off = counts.get((customer_id, "written_off"), 0)
        rate = _pct(paid, paid + written_off)
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
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for r in rows:
        writer.writerow([_cell(v) for v in r])
    return out.getvalue()


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
