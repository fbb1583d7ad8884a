"""The report of a segment's champion / challenger experiment: per arm, what its invoices
brought in and what it cost in reminders, disputes and opt-outs, and the difference in the
share collected within 60 days of due with a 95% confidence interval.

Conventions (as every report, ``arflow.reports.common``): money is minor units per currency,
cancelled invoices are void, days are UTC calendar days, ratios are Decimals rounded half-up
to one place (null when the denominator is zero).

- An invoice is *collected within N days* when it is paid and its last payment (UTC day) is
  at most N days after its due date (paid early counts). Only invoices whose window is over
  by ``today`` (due date + N < today) are *eligible*; the share is collected / eligible, so a
  young experiment is not read as a poor one.
- *Days to pay*: last payment day - issue day, over the arm's paid invoices; *days late*:
  last payment day - due date.
- *Reminders*: ``reminder_sent`` events of the arm's invoices; per 1,000 collected: per 1,000
  major units (e.g. EUR 1,000.00) of payments received on them (kind payment, not
  unapplied), per currency.
- *Disputes*: disputes opened on the arm's invoices. *Opt-outs*: contact blocks of the arm's
  customers that a customer asked for (opt-out, cease-contact, unsubscribe, spam report,
  SMS STOP; bounces are not), created while the experiment ran.
- The interval: ``statsmodels.stats.proportion.confint_proportions_2indep`` (Newcomb's
  hybrid score interval), challenger minus champion, on the 60-day eligible invoices.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from babel.numbers import get_currency_precision
from pydantic import BaseModel, Field
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from arflow.errors import not_found
from arflow.experiments import service
from arflow.reports.common import VOID, mean, pct, rounded
from models import ContactBlock, Dispute, Experiment, Invoice, InvoiceEvent, Payment
from models.experiment import ARMS, ExperimentPublic

WINDOWS = (30, 60, 90)
SHARE_WINDOW = 60
CONFIDENCE = 95
CI_METHOD = "newcomb"
OPT_OUT_REASONS = ("opt_out", "cease_contact", "unsubscribed", "spam_report", "stop")


class Collected(BaseModel):
    days: int = Field(description="within this many days after the due date")
    eligible: int = Field(description="invoices whose window is over (due date + days < today)")
    invoices: int = Field(description="of those, paid within the window")
    share_pct: Decimal | None = Field(description="invoices / eligible x 100")


class CollectedAmount(BaseModel):
    days: int
    eligible_minor: int
    collected_minor: int = Field(description="amounts of the invoices paid within the window")


class ArmCurrency(BaseModel):
    currency: str
    invoices: int
    amount_minor: int
    collected: list[CollectedAmount]
    received_minor: int = Field(description="payments received on the arm's invoices")
    reminders_sent: int
    reminders_per_1000_collected: Decimal | None = Field(
        description="reminders sent per 1,000 major units received (null: nothing received)"
    )


class ArmReport(BaseModel):
    arm: str
    policy: str
    version: int | None
    invoices: int
    customers: int
    currencies: list[ArmCurrency]
    collected: list[Collected]
    paid: int = Field(description="invoices paid")
    avg_days_to_pay: Decimal | None = Field(description="mean of last payment day - issued_on")
    avg_days_late: Decimal | None = Field(description="mean of last payment day - due date")
    reminders_sent: int
    disputes_opened: int
    opt_outs: int


class ShareDifference(BaseModel):
    metric: str
    champion_pct: Decimal | None
    challenger_pct: Decimal | None
    difference_pct: Decimal | None = Field(description="challenger - champion, in points")
    ci_low_pct: Decimal | None
    ci_high_pct: Decimal | None
    confidence_pct: int = CONFIDENCE
    method: str


class ExperimentReport(BaseModel):
    segment: str
    today: date
    experiment: ExperimentPublic | None
    message: str | None = None
    arms: list[ArmReport]
    difference: ShareDifference | None = None


@dataclass
class _Row:
    id: int
    customer_id: int
    currency: str
    amount_minor: int
    issued_on: date
    due_date: date
    arm: str
    paid_on: date | None = None


def experiment_report(
    session: Session, segment: str, today: date, experiment_id: int | None = None
) -> ExperimentReport:
    """The report of the segment's latest experiment (running or ended), or of
    ``experiment_id``."""
    seg = service.segment_or_404(session, segment)
    past = service.history(session, seg.name)
    if experiment_id is not None:
        past = [e for e in past if e.id == experiment_id]
        if not past:
            raise not_found("experiment", f"{experiment_id} of segment {segment!r}")
    if not past:
        return ExperimentReport(
            segment=seg.name,
            today=today,
            experiment=None,
            message=f"segment {seg.name!r} has never run an experiment",
            arms=[],
        )
    exp = past[0]
    assert exp.id is not None
    rows = _rows(session, exp.id)
    facts = _Facts(
        reminders=_per_invoice(
            session,
            _of_experiment(select(InvoiceEvent.invoice_id, func.count()), exp.id)
            .where(col(InvoiceEvent.kind) == "reminder_sent")
            .group_by(col(InvoiceEvent.invoice_id)),
        ),
        received=_per_invoice(
            session,
            _of_experiment(select(Payment.invoice_id, func.sum(Payment.amount_minor)), exp.id)
            .where(col(Payment.kind) == "payment", col(Payment.status) != "unapplied")
            .group_by(col(Payment.invoice_id)),
        ),
        disputes=_per_invoice(
            session,
            _of_experiment(select(Dispute.invoice_id, func.count()), exp.id).group_by(
                col(Dispute.invoice_id)
            ),
        ),
    )
    arms = [
        _arm(session, exp, name, [r for r in rows if r.arm == name], facts, today) for name in ARMS
    ]
    return ExperimentReport(
        segment=seg.name,
        today=today,
        experiment=service.public(exp, seg),
        arms=arms,
        difference=_difference(arms),
    )


@dataclass
class _Facts:
    """Per invoice of the experiment: reminders sent, amount received, disputes opened."""

    reminders: dict[int, int]
    received: dict[int, int]
    disputes: dict[int, int]


def _of_experiment(stmt: Any, experiment_id: int) -> Any:
    """``stmt`` (selecting an invoice id column first) narrowed to the experiment's invoices."""
    invoice_id = stmt.selected_columns[0]
    return stmt.join(Invoice, col(Invoice.id) == invoice_id).where(
        col(Invoice.experiment_id) == experiment_id
    )


def _rows(session: Session, experiment_id: int) -> list[_Row]:
    """The experiment's invoices (not void), with the day of their last payment when paid.
    Columns, not entities: building 10,000 models took most of a second."""
    stmt = sa_select(
        col(Invoice.id),
        col(Invoice.customer_id),
        col(Invoice.currency),
        col(Invoice.amount_minor),
        col(Invoice.issued_on),
        col(Invoice.due_date),
        col(Invoice.experiment_arm),
    ).where(col(Invoice.experiment_id) == experiment_id, col(Invoice.status) != VOID)
    rows = {
        int(i): _Row(int(i), int(c), str(cur), int(amount), issued, due, str(arm))
        for i, c, cur, amount, issued, due, arm in session.execute(stmt).all()
    }
    last = func.max(Payment.paid_at)
    paid_stmt = (
        select(Invoice.id, last)
        .join(Payment, col(Payment.invoice_id) == col(Invoice.id))
        .where(
            col(Invoice.experiment_id) == experiment_id,
            col(Invoice.status) == "paid",
            col(Payment.kind) == "payment",
            col(Payment.status) != "unapplied",
        )
        .group_by(col(Invoice.id))
    )
    for invoice_id, paid_at in session.exec(paid_stmt).all():
        if invoice_id in rows and isinstance(paid_at, datetime):
            rows[invoice_id].paid_on = paid_at.date()  # UTC (UTCDateTime)
    return list(rows.values())


def _per_invoice(session: Session, stmt: Any) -> dict[int, int]:
    return {int(i): int(n or 0) for i, n in session.exec(stmt).all()}


def _arm(
    session: Session,
    exp: Experiment,
    name: str,
    rows: list[_Row],
    facts: _Facts,
    today: date,
) -> ArmReport:
    reminders = {r.id: facts.reminders.get(r.id, 0) for r in rows}
    received = {r.id: facts.received.get(r.id, 0) for r in rows}
    disputes = sum(facts.disputes.get(r.id, 0) for r in rows)
    customers = sorted({r.customer_id for r in rows})
    opt_outs = 0
    if customers:
        arm_customers = select(Invoice.customer_id).where(
            col(Invoice.experiment_id) == exp.id,
            col(Invoice.experiment_arm) == name,
            col(Invoice.status) != VOID,
        )
        blocks = (
            select(func.count())
            .select_from(ContactBlock)
            .where(
                col(ContactBlock.customer_id).in_(arm_customers),
                col(ContactBlock.reason).in_(OPT_OUT_REASONS),
                col(ContactBlock.created_at) >= exp.started_at,
            )
        )
        if exp.ended_at is not None:
            blocks = blocks.where(col(ContactBlock.created_at) < exp.ended_at)
        opt_outs = session.exec(blocks).one()

    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        tally = per[r.currency]
        tally["invoices"] += 1
        tally["amount"] += r.amount_minor
        tally["received"] += received.get(r.id, 0)
        tally["reminders"] += reminders.get(r.id, 0)
        for n in WINDOWS:
            if r.due_date + timedelta(days=n) < today:
                tally[f"eligible_{n}"] += r.amount_minor
                if _within(r, n):
                    tally[f"collected_{n}"] += r.amount_minor
    paid = [r for r in rows if r.paid_on is not None]
    challenger = name == "challenger"
    return ArmReport(
        arm=name,
        policy=exp.challenger_policy if challenger else exp.champion_policy,
        version=exp.challenger_version if challenger else exp.champion_version,
        invoices=len(rows),
        customers=len(customers),
        currencies=[_currency(cur, per[cur]) for cur in sorted(per)],
        collected=[_collected(rows, n, today) for n in WINDOWS],
        paid=len(paid),
        avg_days_to_pay=mean([_days(r.issued_on, r.paid_on) for r in paid]),
        avg_days_late=mean([_days(r.due_date, r.paid_on) for r in paid]),
        reminders_sent=sum(reminders.values()),
        disputes_opened=int(disputes),
        opt_outs=int(opt_outs),
    )


def _days(start: date, end: date | None) -> int:
    assert end is not None
    return (end - start).days


def _within(r: _Row, days: int) -> bool:
    return r.paid_on is not None and (r.paid_on - r.due_date).days <= days


def _collected(rows: list[_Row], days: int, today: date) -> Collected:
    eligible = [r for r in rows if r.due_date + timedelta(days=days) < today]
    hits = sum(1 for r in eligible if _within(r, days))
    return Collected(
        days=days, eligible=len(eligible), invoices=hits, share_pct=pct(hits, len(eligible))
    )


def _currency(currency: str, t: dict[str, int]) -> ArmCurrency:
    received = t["received"]
    per_1000 = None
    if received:
        # reminders per 1,000 major units: reminders x 1000 x 10^exponent / minor units received
        scale = 1000 * 10 ** int(get_currency_precision(currency))
        per_1000 = rounded(Decimal(t["reminders"] * scale) / Decimal(received))
    return ArmCurrency(
        currency=currency,
        invoices=t["invoices"],
        amount_minor=t["amount"],
        collected=[
            CollectedAmount(
                days=n, eligible_minor=t[f"eligible_{n}"], collected_minor=t[f"collected_{n}"]
            )
            for n in WINDOWS
        ],
        received_minor=received,
        reminders_sent=t["reminders"],
        reminders_per_1000_collected=per_1000,
    )


def _difference(arms: list[ArmReport]) -> ShareDifference:
    by = {a.arm: next(c for c in a.collected if c.days == SHARE_WINDOW) for a in arms}
    champion, challenger = by["champion"], by["challenger"]
    diff = low = high = None
    if champion.eligible and challenger.eligible:
        diff = rounded(
            Decimal(challenger.invoices * 100) / challenger.eligible
            - Decimal(champion.invoices * 100) / champion.eligible
        )
        # statsmodels (with scipy and pandas) is imported here, by the one report that
        # needs it: at the top it added seconds and ~100 MB to every API process's start.
        from statsmodels.stats.proportion import confint_proportions_2indep

        lo, hi = confint_proportions_2indep(
            challenger.invoices,
            challenger.eligible,
            champion.invoices,
            champion.eligible,
            method=CI_METHOD,
            compare="diff",
            alpha=1 - CONFIDENCE / 100,
        )
        low, high = _points(float(lo)), _points(float(hi))
    return ShareDifference(
        metric=f"invoices collected within {SHARE_WINDOW} days of due / eligible",
        champion_pct=champion.share_pct,
        challenger_pct=challenger.share_pct,
        difference_pct=diff,
        ci_low_pct=low,
        ci_high_pct=high,
        method=f"statsmodels confint_proportions_2indep, method={CI_METHOD}, challenger - champion",
    )


def _points(share: float) -> Decimal:
    """A difference of proportions (-1..1) in percentage points, one place."""
    return rounded(Decimal(repr(share)) * 100)
