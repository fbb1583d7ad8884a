"""Late fees, interest and compensation: pure arithmetic, no I/O, safe inside the workflow.

Money is an ``int`` of minor units. Rates and percentages are decimal strings (``"12.5"``),
so they travel through Temporal's JSON payloads exactly.

- **Fixed fee per stage**: a policy maps a stage (the dunning step key that triggers it, e.g.
  ``final_notice``) to an amount in minor units.
- **Percentage fee per stage**: percent of the open balance at that stage, rounded half up to
  the minor unit.
- **Interest**: simple, per day overdue, at a rate per annum, day count ACT/365 Fixed: each
  calendar day past the due date earns ``balance x rate / 100 / 365``, in leap years too (so
  366 days overdue earn 366/365 of the annual rate). Days run from the day after the due date
  up to and including the day computed to; the balance of a day is the balance at its end (a
  payment on day D stops interest on the amount paid from day D).
- **Rounding**: interest accrues exactly (rational arithmetic, nothing rounded per day or per
  balance period) and is rounded once, half up to the minor unit, on the *total* accrued from
  the due date. A charge posted for a later period is that rounded total minus everything
  charged before, so periodic postings add up to exactly the one-off figure (no drift).
  100,000.00 at 12.5% for 365 days is 12,500.00; for 30 days 1,027.40 (1,027.3973 rounded).
- **EU B2B preset** (Late Payment Directive 2011/7/EU): statutory interest = the configured
  ECB reference rate + 8 percentage points, plus a fixed EUR 40 compensation per late invoice.
  The Directive fixes the reference rate per half-year; this module takes the rate it is given
  (a rate change is a new ``Accrual`` period with its own rate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from workflows.types import ChargeSpec, PostChargesInput

DAYS_PER_YEAR = 365  # ACT/365 Fixed
EU_STATUTORY_MARGIN_PCT = "8"
EU_COMPENSATION_MINOR = 4000  # EUR 40.00
FEE = "fee"
INTEREST = "interest"
COMPENSATION = "compensation"


def parse_rate(text: str) -> Fraction:
    """A decimal string as an exact fraction; ValueError for anything else."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise ValueError(f"rate {text!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"rate {text!r} must be a finite number >= 0")
    return Fraction(value)


def round_half_up(value: Fraction) -> int:
    """To the nearest integer, halves away from zero (money: 0.5 cent -> 1 cent)."""
    sign = -1 if value < 0 else 1
    return sign * int((abs(value) * 2 + 1) // 2)


def add_pct(a: str, b: str) -> str:
    """Two percentages added exactly (``"4.5" + "8" = "12.5"``)."""
    return str(Decimal(a) + Decimal(b))


@dataclass(frozen=True)
class Accrual:
    """One stretch of days at one balance and rate: from the day after ``start`` up to and
    including ``end``."""

    start: date
    end: date
    balance_minor: int
    rate_pct: str  # per annum

    @property
    def days(self) -> int:
        return max(0, (self.end - self.start).days)


def interest_exact(balance_minor: int, rate_pct: str, days: int) -> Fraction:
    """Simple interest, ACT/365, exact (no rounding); nothing on a balance at or below zero."""
    if balance_minor <= 0 or days <= 0:
        return Fraction(0)
    return Fraction(balance_minor) * parse_rate(rate_pct) * days / (100 * DAYS_PER_YEAR)


def interest_minor(balance_minor: int, rate_pct: str, days: int) -> int:
    """Simple interest for ``days`` days, rounded half up once."""
    return round_half_up(interest_exact(balance_minor, rate_pct, days))


def accrued_interest_minor(accruals: Sequence[Accrual]) -> int:
    """Interest over all ``accruals``, summed exactly and rounded half up once."""
    total = sum(
        (interest_exact(a.balance_minor, a.rate_pct, a.days) for a in accruals), Fraction(0)
    )
    return round_half_up(total)


def accruals_for(
    due_date: date,
    until: date,
    opening_balance_minor: int,
    rate_pct: str,
    movements: Sequence[tuple[date, int]] = (),
) -> list[Accrual]:
    """The accrual periods from ``due_date`` up to ``until``: the balance starts at
    ``opening_balance_minor`` and changes by each ``(day, amount)`` movement (payments
    negative, reversals positive) from that day on. Movements on or before the due date only
    change the opening balance."""
    balance = opening_balance_minor
    start = due_date
    out: list[Accrual] = []
    for day, amount in sorted(movements):
        if day > until:
            break
        last_day_at_old_balance = day - timedelta(days=1)
        if last_day_at_old_balance > start:
            out.append(Accrual(start, last_day_at_old_balance, balance, rate_pct))
            start = last_day_at_old_balance
        balance += amount
    if until > start:
        out.append(Accrual(start, until, balance, rate_pct))
    return out


@dataclass(frozen=True)
class ChargeLine:
    """A charge to record on the invoice (``invoice_charges``); ``dedupe_key`` makes posting
    it twice a no-op."""

    kind: str  # fee, interest, compensation
    amount_minor: int
    currency: str
    dedupe_key: str
    stage: str | None = None
    period_from: date | None = None
    period_to: date | None = None
    basis: dict[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class ChargePolicy:
    """What a late invoice is charged. Fixed amounts (stage fees, compensation) are in
    ``currency`` and charged only on invoices in it; ``None``: in the invoice's currency."""

    name: str = "custom"
    currency: str | None = None
    stage_fees_minor: dict[str, int] = field(default_factory=dict)
    stage_fee_pct: dict[str, str] = field(default_factory=dict)  # percent of the open balance
    interest_rate_pct: str | None = None  # per annum, simple, ACT/365
    compensation_minor: int = 0  # once per late invoice

    def fixed_applies(self, invoice_currency: str) -> bool:
        return self.currency is None or self.currency == invoice_currency


def eu_b2b_policy(
    ecb_reference_rate_pct: str,
    stage_fees_minor: dict[str, int] | None = None,
) -> ChargePolicy:
    """Late Payment Directive 2011/7/EU: interest at the ECB reference rate + 8 points per day
    overdue, and EUR 40 compensation per late invoice (EUR invoices; for another currency,
    build a ``ChargePolicy`` with the national equivalent)."""
    return ChargePolicy(
        name="eu_b2b",
        currency="EUR",
        stage_fees_minor=dict(stage_fees_minor or {}),
        interest_rate_pct=add_pct(ecb_reference_rate_pct, EU_STATUTORY_MARGIN_PCT),
        compensation_minor=EU_COMPENSATION_MINOR,
    )


def policy_from_spec(spec: ChargeSpec) -> ChargePolicy:
    """The calculator's policy for a dunning policy's ``charges``."""
    if spec.preset == "eu_b2b":
        assert spec.ecb_reference_rate_pct is not None
        eu = eu_b2b_policy(spec.ecb_reference_rate_pct, spec.stage_fees_minor)
        return replace(eu, stage_fee_pct=dict(spec.stage_fee_pct))
    return ChargePolicy(
        name=spec.name,
        currency=spec.currency,
        stage_fees_minor=dict(spec.stage_fees_minor),
        stage_fee_pct=dict(spec.stage_fee_pct),
        interest_rate_pct=spec.interest_rate_pct,
        compensation_minor=spec.compensation_minor,
    )


def percent_fee_minor(balance_minor: int, pct: str) -> int:
    """``pct`` percent of the balance, rounded half up."""
    return round_half_up(Fraction(max(balance_minor, 0)) * parse_rate(pct) / 100)


def stage_charges(
    policy: ChargePolicy, stage: str, balance_minor: int, currency: str
) -> list[ChargeLine]:
    """The fees a stage (dunning step) triggers: its fixed fee, then its percentage fee."""
    out: list[ChargeLine] = []
    fixed = policy.stage_fees_minor.get(stage, 0)
    if fixed > 0 and policy.fixed_applies(currency):
        out.append(
            ChargeLine(FEE, fixed, currency, f"fee:{stage}", stage=stage, basis={"fixed": fixed})
        )
    pct = policy.stage_fee_pct.get(stage)
    if pct is not None:
        amount = percent_fee_minor(balance_minor, pct)
        if amount > 0:
            out.append(
                ChargeLine(
                    FEE,
                    amount,
                    currency,
                    f"fee_pct:{stage}",
                    stage=stage,
                    basis={"percent": pct, "balance_minor": balance_minor},
                )
            )
    return out


def compensation_charge(policy: ChargePolicy, currency: str) -> ChargeLine | None:
    """The fixed compensation for a late invoice (once per invoice)."""
    if policy.compensation_minor <= 0 or not policy.fixed_applies(currency):
        return None
    return ChargeLine(
        COMPENSATION,
        policy.compensation_minor,
        currency,
        "compensation",
        basis={"policy": policy.name},
    )


def interest_charge(
    accruals: Sequence[Accrual],
    currency: str,
    charged_before_minor: int = 0,
    since: date | None = None,
) -> ChargeLine | None:
    """Interest not charged yet: the rounded total over ``accruals`` (from the due date) minus
    ``charged_before_minor`` (every earlier interest charge of the invoice, waived ones too, so
    a waived charge is not charged again). ``since``: the last day already charged for."""
    if not accruals:
        return None
    total = accrued_interest_minor(accruals)
    amount = total - charged_before_minor
    if amount <= 0:
        return None
    start = since or accruals[0].start
    end = accruals[-1].end
    rates = sorted({a.rate_pct for a in accruals})
    return ChargeLine(
        INTEREST,
        amount,
        currency,
        f"interest:{end.isoformat()}",
        period_from=start,
        period_to=end,
        basis={
            "rate_pct": ",".join(rates),
            "days": max(0, (end - start).days),
            "accrued_total_minor": total,
            "charged_before_minor": charged_before_minor,
            "day_count": "ACT/365",
        },
    )


def lines_due(
    inp: PostChargesInput, interest_so_far: Callable[[], tuple[int, date | None]]
) -> list[ChargeLine]:
    """What the policy of ``inp`` charges now: the stage's fees, then, once overdue, the
    compensation and the interest from the due date up to ``inp.until`` less what was charged
    before. ``interest_so_far``: every earlier interest charge's total and the last day charged
    for (asked only when interest is due). The ``post_charges`` activity (from the database)
    and the policy simulation (from its own postings) both ask."""
    policy = policy_from_spec(inp.charges)
    lines = (
        stage_charges(policy, inp.stage, inp.stage_balance_minor, inp.currency) if inp.stage else []
    )
    due = date.fromisoformat(inp.due_date)
    if inp.until is None or date.fromisoformat(inp.until) <= due:
        return lines
    until = date.fromisoformat(inp.until)
    compensation = compensation_charge(policy, inp.currency)
    if compensation is not None:
        lines.append(compensation)
    if policy.interest_rate_pct is not None:
        movements = [(date.fromisoformat(m.day), m.amount_minor) for m in inp.movements]
        accruals = accruals_for(due, until, inp.opening_minor, policy.interest_rate_pct, movements)
        charged_before, since = interest_so_far()
        line = interest_charge(
            accruals, inp.currency, charged_before_minor=charged_before, since=since
        )
        if line is not None:
            lines.append(line)
    return lines
