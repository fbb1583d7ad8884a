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
    reasons: list[RiskReason] = []

    def add(factor: str, value: Decimal, points: int, cap: int, text: str) -> None:
        points = min(points, cap)
        if points > 0:
            reasons.append(
                RiskReason(factor=factor, value=value, points=points, max_points=cap, text=text)
            )

    if b.weighted_days_late is not None:
        w = b.weighted_days_late
        add(
            "weighted_days_late",
            w,
            _whole(w),
            25,
            f"paid invoices were {w} days late on average, weighted by amount (1 point per day)",
        )
    if b.paid_on_time_pct is not None:
        share = Decimal(100) - b.paid_on_time_pct
        add(
            "share_paid_late",
            share,
            _whole(share / 5),
            20,
            f"{share} % of paid invoices were paid late (1 point per 5 %)",
        )
    shares = [(c.overdue_pct, c.currency) for c in b.balances if c.overdue_pct is not None]
    if shares:
        worst, currency = max(shares)
        add(
            "overdue_share",
            worst,
            _whole(worst / 5),
            20,
            f"{worst} % of the open {currency} balance is overdue (1 point per 5 %)",
        )
    promises = max(b.broken_promises, b.promises.broken)
    add(
        "broken_promises",
        Decimal(promises),
        5 * promises,
        10,
        f"{promises} broken promise(s) to pay (5 points each)",
    )
    plans = max(b.broken_plans, b.plans.broken)
    add(
        "broken_plans",
        Decimal(plans),
        10 * plans,
        10,
        f"{plans} broken payment plan(s) (10 points each)",
    )
    rejected = b.disputes.rejected
    add(
        "rejected_disputes",
        Decimal(rejected),
        5 * rejected,
        5,
        f"{rejected} dispute(s) rejected (5 points each)",
    )
    credit = b.credit
    if credit.limit_minor is not None and credit.exposure_minor is not None:
        if credit.utilisation_pct is not None:
            used = credit.utilisation_pct
            over = used >= 100
        else:  # a limit of 0: any exposure is over it
            used = Decimal(0)
            over = credit.exposure_minor > 0
        points = 10 if over else 5 if used >= 80 else 0
        add(
            "credit_utilisation",
            used,
            points,
            10,
            f"exposure is {used} % of the credit limit (5 points from 80 %, 10 from 100 %)",
        )
    score = min(100, sum(r.points for r in reasons))
    return Risk(score=score, band=band_of(score), reasons=reasons)
