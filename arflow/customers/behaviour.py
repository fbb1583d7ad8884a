"""How a customer pays: figures computed from the database on every read.

Computed on read, not stored as a snapshot: the figures are always current after every payment,
promise and dispute event without a second write path beside the workflow's activities (the
project's rule: one write path per fact), and they cost a handful of indexed aggregate queries
per customer. Reports over many customers use ``arflow/reports/``.

Definitions (dates in the customer's time zone; figures with decimals rounded half up to 0.1):

- paid invoice: status ``paid``; its payment date is the day of its last payment (refunds and
  unapplied receipts left out), as in the reports;
- days late = max(0, payment date - due date); days to pay = payment date - issue date;
- weighted days late = sum(days late x invoice amount) / sum(invoice amount), amounts in minor
  units as they are (a customer's invoices are normally in one currency);
- paid on time = days late is 0;
- open = not closed (open, disputed, escalated); overdue = open, not disputed, and due before
  today; days overdue = today - due date; disputed amounts are shown apart, not as overdue;
- exposure (per currency) = open balance + unbilled orders.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from models import (
    Customer,
    Dispute,
    Invoice,
    Payment,
    PaymentPlan,
    Promise,
    UnbilledOrder,
)
from models.types import utcnow

ONE_PLACE = Decimal("0.1")

OPEN_STATUSES = ("open", "disputed", "escalated")


def round1(value: Decimal) -> Decimal:
    return value.quantize(ONE_PLACE, rounding=ROUND_HALF_UP)


def pct(part: int, whole: int) -> Decimal | None:
    return round1(Decimal(part) * 100 / Decimal(whole)) if whole else None


class CurrencyBalance(BaseModel):
    currency: str
    open_minor: int = Field(description="balance of open, disputed and escalated invoices")
    overdue_minor: int = Field(description="of that, past due and not disputed")
    disputed_minor: int = Field(description="of that, in dispute")
    unbilled_minor: int = Field(description="orders sent by API, not invoiced yet")
    exposure_minor: int = Field(description="open_minor + unbilled_minor")
    overdue_pct: Decimal | None = Field(description="overdue_minor / open_minor x 100")


class Counts(BaseModel):
    total: int
    open: int
    kept_or_completed: int
    broken: int


class DisputeCounts(BaseModel):
    opened: int
    open: int
    upheld: int
    rejected: int


class CreditStatus(BaseModel):
    limit_minor: int | None
    currency: str | None
    exposure_minor: int | None = Field(description="exposure in the limit's currency")
    available_minor: int | None = Field(description="limit - exposure, never below 0")
    utilisation_pct: Decimal | None = Field(description="exposure / limit x 100")
    hold: bool
    hold_reason: str | None


class Behaviour(BaseModel):
    customer_id: int
    as_of: date = Field(description="today in the customer's time zone")
    computed: str = Field(default="on read", description="always current: nothing is cached")
    invoice_count: int = Field(description="all invoices but cancelled ones")
    open_invoices: int
    paid_invoices: int
    written_off_invoices: int
    avg_days_late: Decimal | None
    weighted_days_late: Decimal | None = Field(description="days late weighted by amount")
    max_days_late: int | None
    avg_days_to_pay: Decimal | None
    paid_on_time: int
    paid_on_time_pct: Decimal | None
    broken_promises: int = Field(description="the customer's counter (kept by the workflow)")
    broken_plans: int = Field(description="the customer's counter (kept by the workflow)")
    promises: Counts = Field(description="from the promises table (kept = kept)")
    plans: Counts = Field(description="from the payment plans table (kept = completed)")
    disputes: DisputeCounts
    balances: list[CurrencyBalance]
    max_days_overdue: int = Field(description="oldest overdue open invoice, 0 if none")
    credit: CreditStatus


def today_for(customer: Customer, now: datetime) -> date:
    return now.astimezone(ZoneInfo(customer.timezone)).date()


def behaviour(session: Session, customer: Customer, now: datetime | None = None) -> Behaviour:
    """Every figure of ``customer`` as of ``now`` (default: this instant)."""
    assert customer.id is not None
    now = now or utcnow()
    zone = ZoneInfo(customer.timezone)
    today = now.astimezone(zone).date()
    invoices = _invoices_of(session, customer.id)
    ids = _invoice_ids(customer.id)
    paid = _paid_record(session, invoices, ids, zone)
    balances, max_overdue = _balances(session, customer.id, invoices, today)
    late = paid.days_late
    return Behaviour(
        customer_id=customer.id,
        as_of=today,
        invoice_count=sum(1 for i in invoices if i.status != "cancelled"),
        open_invoices=sum(1 for i in invoices if i.status in OPEN_STATUSES),
        paid_invoices=len(late),
        written_off_invoices=sum(1 for i in invoices if i.status == "written_off"),
        avg_days_late=_mean(late),
        weighted_days_late=(
            round1(Decimal(paid.weighted_num) / Decimal(paid.weighted_den))
            if paid.weighted_den
            else None
        ),
        max_days_late=max(late) if late else None,
        avg_days_to_pay=_mean(paid.days_to_pay),
        paid_on_time=sum(1 for d in late if d == 0),
        paid_on_time_pct=pct(sum(1 for d in late if d == 0), len(late)),
        broken_promises=customer.broken_promises,
        broken_plans=customer.broken_plans,
        promises=_status_counts(session, Promise, ids, "kept"),
        plans=_status_counts(session, PaymentPlan, ids, "completed"),
        disputes=_dispute_counts(session, ids),
        balances=balances,
        max_days_overdue=max_overdue,
        credit=credit_status(customer, balances),
    )


def _invoices_of(session: Session, customer_id: int) -> list[_Inv]:
    # The columns the figures need, not whole rows: this runs with every payment, and a large
    # account has thousands of invoices.
    return [
        _Inv(*row)
        for row in session.execute(
            sa_select(
                Invoice.id,  # type: ignore[call-overload]
                Invoice.status,
                Invoice.currency,
                Invoice.amount_minor,
                Invoice.balance_minor,
                Invoice.issued_on,
                Invoice.due_date,
            ).where(Invoice.customer_id == customer_id)
        ).all()
    ]


@dataclass
class _PaidRecord:
    """Per paid invoice: days late and days to pay; and the amount-weighted lateness sums."""

    days_late: list[int] = field(default_factory=list)
    days_to_pay: list[int] = field(default_factory=list)
    weighted_num: int = 0
    weighted_den: int = 0


def _paid_record(session: Session, invoices: list[_Inv], ids: Any, zone: ZoneInfo) -> _PaidRecord:
    """Paid invoices and their last payment."""
    rows = session.exec(
        select(Payment.invoice_id, func.max(Payment.paid_at))
        .where(
            col(Payment.invoice_id).in_(ids),
            col(Payment.kind) == "payment",
            col(Payment.status) != "unapplied",
        )
        .group_by(col(Payment.invoice_id))
    ).all()
    last_paid = {inv_id: _aware(at) for inv_id, at in rows if at is not None}
    record = _PaidRecord()
    for inv in invoices:
        if inv.status != "paid" or inv.id not in last_paid:
            continue
        paid_on = last_paid[inv.id].astimezone(zone).date()
        days_late = max(0, (paid_on - inv.due_date).days)
        record.days_late.append(days_late)
        record.days_to_pay.append((paid_on - inv.issued_on).days)
        record.weighted_num += days_late * inv.amount_minor
        record.weighted_den += inv.amount_minor
    return record


def _balances(
    session: Session, customer_id: int, invoices: list[_Inv], today: date
) -> tuple[list[CurrencyBalance], int]:
    """Balances per currency, and the days overdue of the oldest overdue open invoice."""
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    max_overdue = 0
    for inv in invoices:
        if inv.status not in OPEN_STATUSES:
            continue
        cell = sums[inv.currency]
        cell["open"] += inv.balance_minor
        if inv.status == "disputed":
            cell["disputed"] += inv.balance_minor
        elif inv.due_date < today and inv.balance_minor > 0:
            cell["overdue"] += inv.balance_minor
            max_overdue = max(max_overdue, (today - inv.due_date).days)
    for currency, amount in session.exec(
        select(UnbilledOrder.currency, func.sum(UnbilledOrder.amount_minor))
        .where(UnbilledOrder.customer_id == customer_id)
        .group_by(col(UnbilledOrder.currency))
    ).all():
        sums[currency]["unbilled"] += int(amount or 0)
    balances = [
        CurrencyBalance(
            currency=currency,
            open_minor=cell["open"],
            overdue_minor=cell["overdue"],
            disputed_minor=cell["disputed"],
            unbilled_minor=cell["unbilled"],
            exposure_minor=cell["open"] + cell["unbilled"],
            overdue_pct=pct(cell["overdue"], cell["open"]),
        )
        for currency, cell in sorted(sums.items())
    ]
    return balances, max_overdue


def credit_status(customer: Customer, balances: list[CurrencyBalance]) -> CreditStatus:
    limit = customer.credit_limit_minor
    currency = customer.credit_currency
    if limit is None or currency is None:
        return CreditStatus(
            limit_minor=None,
            currency=None,
            exposure_minor=None,
            available_minor=None,
            utilisation_pct=None,
            hold=customer.credit_hold,
            hold_reason=customer.credit_hold_reason,
        )
    exposure = next((b.exposure_minor for b in balances if b.currency == currency), 0)
    return CreditStatus(
        limit_minor=limit,
        currency=currency,
        exposure_minor=exposure,
        available_minor=max(0, limit - exposure),
        utilisation_pct=pct(exposure, limit),
        hold=customer.credit_hold,
        hold_reason=customer.credit_hold_reason,
    )


class _Inv(NamedTuple):
    id: int | None
    status: str
    currency: str
    amount_minor: int
    balance_minor: int
    issued_on: date
    due_date: date


def _invoice_ids(customer_id: int) -> Any:
    """The customer's invoice ids, as a subquery for ``IN``."""
    return select(Invoice.id).where(Invoice.customer_id == customer_id)


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _mean(values: list[int]) -> Decimal | None:
    return round1(Decimal(sum(values)) / Decimal(len(values))) if values else None


def _status_counts(
    session: Session, model: type[Promise] | type[PaymentPlan], ids: Any, good: str
) -> Counts:
    rows = session.exec(
        select(model.status, func.count())
        .where(col(model.invoice_id).in_(ids))
        .group_by(col(model.status))
    ).all()
    by_status = {status: int(n) for status, n in rows}
    return Counts(
        total=sum(by_status.values()),
        open=by_status.get("open", 0) + by_status.get("active", 0),
        kept_or_completed=by_status.get(good, 0),
        broken=by_status.get("broken", 0),
    )


def _dispute_counts(session: Session, ids: Any) -> DisputeCounts:
    rows = session.exec(
        select(Dispute.status, func.count())
        .where(col(Dispute.invoice_id).in_(ids))
        .group_by(col(Dispute.status))
    ).all()
    by_status = {status: int(n) for status, n in rows}
    return DisputeCounts(
        opened=sum(by_status.values()),
        open=by_status.get("open", 0),
        upheld=by_status.get("upheld", 0),
        rejected=by_status.get("rejected", 0),
    )
