"""The collection KPIs of a period: DSO, CEI, payment timing, promises, disputes, plans,
agencies and reminders."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from arflow.reports.common import VOID, ReportFilter, end_of, filtered, mean, pct, rounded, to_csv
from arflow.reports.receivables import Receivable, last_payments, receivables_at
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
    opening, _ = receivables_at(session, start - timedelta(days=1), today, f)
    closing, mode = receivables_at(session, end, today, f)
    sales = _credit_sales(session, start, end, f)
    planned = _plans_active_at(session, hi, f)
    placements = _placements_by(session, hi, f)

    per: _Tally = defaultdict(lambda: defaultdict(int))
    _count_receivables(per, opening, closing, end)
    for currency, total in sales.items():
        per[currency]["sales"] += total
    _count_plans_and_agencies(per, closing, planned, placements, lo)
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


def _placements_by(session: Session, hi: datetime, f: ReportFilter) -> Sequence[_Placement]:
    """(invoice id, currency, amount, placed_at) of every agency placement before ``hi``."""
    placed_stmt = filtered(
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
    return session.exec(placed_stmt).all()


def _count_receivables(
    per: _Tally, opening: list[Receivable], closing: list[Receivable], end: date
) -> None:
    for r in opening:
        per[r.currency]["opening"] += r.balance_minor
    for r in closing:
        per[r.currency]["closing"] += r.balance_minor
        if r.due_date >= end:
            per[r.currency]["closing_current"] += r.balance_minor


def _count_plans_and_agencies(
    per: _Tally,
    closing: list[Receivable],
    planned: set[int],
    placements: Sequence[_Placement],
    lo: datetime,
) -> None:
    """Plans active and invoices with agencies at the end (their closing balances), and the
    placements made since ``lo``."""
    closing_by_invoice = {r.invoice_id: r for r in closing}
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


def _plans_active_at(session: Session, instant: datetime, f: ReportFilter) -> set[int]:
    """Invoices with a plan active just before ``instant``: created before it and still
    active, or ended (completed, broken, cancelled: its last update) at or after it."""
    stmt = filtered(
        select(PaymentPlan.invoice_id)
        .join(Invoice, col(Invoice.id) == col(PaymentPlan.invoice_id))
        .where(
            col(PaymentPlan.created_at) < instant,
            (col(PaymentPlan.status) == "active") | (col(PaymentPlan.updated_at) >= instant),
        ),
        f,
    )
    return set(session.exec(stmt).all())


def _payment_timing(session: Session, lo: datetime, hi: datetime, f: ReportFilter) -> PaymentTiming:
    last = func.max(Payment.paid_at)
    stmt = last_payments(f).having(last >= lo).having(last < hi)
    to_pay, late = [], []
    for inv, paid_at in session.exec(stmt).all():
        paid_on = paid_at.astimezone(UTC).date()
        to_pay.append((paid_on - inv.issued_on).days)
        late.append((paid_on - inv.due_date).days)
    return PaymentTiming(
        invoices_paid=len(to_pay), avg_days_to_pay=mean(to_pay), avg_days_late=mean(late)
    )


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
