"""The risk score: 0 (no sign of risk) to 100, from a customer's behaviour figures.

A pure, deterministic function of ``arflow.customers.behaviour.Behaviour``. Points are whole
numbers computed from the figures *as shown* (rounded to 0.1), so anyone can check a score by hand:

| factor | value | points | at most |
|---|---|---|---|
| ``weighted_days_late`` | days late weighted by amount | 1 per whole day | 25 |
| ``share_paid_late`` | 100 - paid_on_time_pct | 1 per whole 5 % | 20 |
| ``overdue_share`` | overdue / open balance %, worst currency | 1 per whole 5 % | 20 |
| ``broken_promises`` | max(counter, broken rows) | 5 each | 10 |
| ``broken_plans`` | max(counter, broken rows) | 10 each | 10 |
| ``rejected_disputes`` | disputes resolved against the customer | 5 each | 5 |
| ``credit_utilisation`` | exposure / limit % (limit set) | 5 from 80 %, 10 from 100 % | 10 |

The maxima add up to 100. Upheld disputes (the customer was right) cost nothing. Bands: ``low``
below 30, ``medium`` 30 to 59, ``high`` from 60. Only factors that score are listed as reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

from pydantic import BaseModel

from arflow.customers.behaviour import Behaviour

MEDIUM_FROM = 30
HIGH_FROM = 60
Band = Literal["low", "medium", "high"]


class RiskReason(BaseModel):
    factor: str
    value: Decimal
    points: int
    max_points: int
    text: str


class Risk(BaseModel):
    score: int
    band: Band
    reasons: list[RiskReason]


def band_of(score: int) -> Band:
    if score >= HIGH_FROM:
        return "high"
    return "medium" if score >= MEDIUM_FROM else "low"


def _whole(value: Decimal) -> int:
    """Whole units, rounded down (values here are never negative)."""
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def risk(b: Behaviour) -> Risk:
    """Score ``b``: the sum of the factors' points (see the module's table)."""
    reasons = [r for r in (factor(b) for factor in _FACTORS) if r is not None]
    score = min(100, sum(r.points for r in reasons))
    return Risk(score=score, band=band_of(score), reasons=reasons)


def _reason(factor: str, value: Decimal, points: int, cap: int, text: str) -> RiskReason | None:
    """The factor's reason, its points capped; none when it scores nothing."""
    points = min(points, cap)
    if points > 0:
        return RiskReason(factor=factor, value=value, points=points, max_points=cap, text=text)
    return None


def _weighted_days_late(b: Behaviour) -> RiskReason | None:
    if b.weighted_days_late is None:
        return None
    w = b.weighted_days_late
    return _reason(
        "weighted_days_late",
        w,
        _whole(w),
        25,
        f"paid invoices were {w} days late on average, weighted by amount (1 point per day)",
    )


def _share_paid_late(b: Behaviour) -> RiskReason | None:
    if b.paid_on_time_pct is None:
        return None
    share = Decimal(100) - b.paid_on_time_pct
    return _reason(
        "share_paid_late",
        share,
        _whole(share / 5),
        20,
        f"{share} % of paid invoices were paid late (1 point per 5 %)",
    )


def _overdue_share(b: Behaviour) -> RiskReason | None:
    shares = [(c.overdue_pct, c.currency) for c in b.balances if c.overdue_pct is not None]
    if not shares:
        return None
    worst, currency = max(shares)
    return _reason(
        "overdue_share",
        worst,
        _whole(worst / 5),
        20,
        f"{worst} % of the open {currency} balance is overdue (1 point per 5 %)",
    )


def _broken_promises(b: Behaviour) -> RiskReason | None:
    promises = max(b.broken_promises, b.promises.broken)
    return _reason(
        "broken_promises",
        Decimal(promises),
        5 * promises,
        10,
        f"{promises} broken promise(s) to pay (5 points each)",
    )


def _broken_plans(b: Behaviour) -> RiskReason | None:
    plans = max(b.broken_plans, b.plans.broken)
    return _reason(
        "broken_plans",
        Decimal(plans),
        10 * plans,
        10,
        f"{plans} broken payment plan(s) (10 points each)",
    )


def _rejected_disputes(b: Behaviour) -> RiskReason | None:
    rejected = b.disputes.rejected
    return _reason(
        "rejected_disputes",
        Decimal(rejected),
        5 * rejected,
        5,
        f"{rejected} dispute(s) rejected (5 points each)",
    )


def _credit_utilisation(b: Behaviour) -> RiskReason | None:
    credit = b.credit
    if credit.limit_minor is None or credit.exposure_minor is None:
        return None
    if credit.utilisation_pct is not None:
        used = credit.utilisation_pct
        over = used >= 100
    else:  # a limit of 0: any exposure is over it
        used = Decimal(0)
        over = credit.exposure_minor > 0
    points = 10 if over else 5 if used >= 80 else 0
    return _reason(
        "credit_utilisation",
        used,
        points,
        10,
        f"exposure is {used} % of the credit limit (5 points from 80 %, 10 from 100 %)",
    )


# The factors in the order their reasons are listed (the module's table).
_FACTORS: tuple[Callable[[Behaviour], RiskReason | None], ...] = (
    _weighted_days_late,
    _share_paid_late,
    _overdue_share,
    _broken_promises,
    _broken_plans,
    _rejected_disputes,
    _credit_utilisation,
)
