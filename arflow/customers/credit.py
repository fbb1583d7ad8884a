"""Credit limits, exposure, credit checks and the credit hold.

- exposure (in the limit's currency) = balance of the customer's open invoices (open, disputed,
  escalated) + unbilled orders sent by API;
- the account goes on **credit hold** when exposure is over the limit, or when an invoice (not
  in dispute) is overdue more than N days (N from the customer's segment, default 60); the
  hold lifts when neither holds any more. Each change is a customer event
  (``credit_hold_on``, ``credit_hold_changed``, ``credit_hold_off``);
- a credit check declines while on hold, and when exposure + the amount asked would pass the
  limit.

``reassess_credit_hold`` is what every path that changes a balance calls (payments, orders,
profile changes, credit checks); it joins the caller's transaction (no commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.customers.behaviour import Behaviour, behaviour
from arflow.customers.events import record_customer_event
from arflow.customers.segments import hold_overdue_days
from arflow.errors import conflict, not_found, unprocessable
from models import Customer, Invoice, UnbilledOrder
from models.profile import (
    CheckCode,
    CreditCheckRequest,
    CreditCheckResult,
    Decision,
    OrderCreate,
)
from models.types import utcnow

OVER_LIMIT = "over_limit"
OVERDUE = "overdue"


@dataclass
class HoldState:
    """The hold after a reassessment, and whether it changed."""

    on: bool
    changed: bool
    reason: str | None
    causes: list[str] = field(default_factory=list)


def _exposure(b: Behaviour, currency: str) -> int:
    return next((c.exposure_minor for c in b.balances if c.currency == currency), 0)


def _causes(
    session: Session, customer: Customer, b: Behaviour
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(cause codes, their texts, figures for the event)."""
    codes: list[str] = []
    texts: list[str] = []
    data: dict[str, Any] = {}
    limit, currency = customer.credit_limit_minor, customer.credit_currency
    if limit is not None and currency is not None:
        exposure = _exposure(b, currency)
        data.update(exposure_minor=exposure, limit_minor=limit, currency=currency)
        if exposure > limit:
            codes.append(OVER_LIMIT)
            texts.append(f"exposure is over the credit limit ({currency})")
    days = hold_overdue_days(session, customer)
    if b.max_days_overdue > days:
        cutoff = b.as_of - timedelta(days=days)
        late = session.exec(
            select(Invoice.id).where(
                Invoice.customer_id == customer.id,
                col(Invoice.status).in_(("open", "escalated")),
                col(Invoice.balance_minor) > 0,
                col(Invoice.due_date) < cutoff,
            )
        ).all()
        codes.append(OVERDUE)
        texts.append(f"an invoice is overdue more than {days} days")
        data.update(overdue_days_limit=days, overdue_invoice_ids=sorted(i for i in late if i))
        data["max_days_overdue"] = b.max_days_overdue
    return codes, texts, data


def reassess(session: Session, customer: Customer, b: Behaviour, actor: str) -> HoldState:
    """Put the customer on credit hold, change its reason or lift it, as the figures in ``b``
    say (computed as of ``b.as_of``); records the customer event (at this instant). Does not
    commit."""
    assert customer.id is not None
    codes, texts, data = _causes(session, customer, b)
    reason = "; ".join(texts) or None
    at = utcnow()
    changed = True
    if codes and not customer.credit_hold:
        customer.credit_hold = True
        customer.credit_hold_since = at
        record_customer_event(
            session,
            customer.id,
            "credit_hold_on",
            {"causes": codes, "reason": reason, **data},
            actor,
            at,
        )
    elif codes and reason != customer.credit_hold_reason:
        record_customer_event(
            session,
            customer.id,
            "credit_hold_changed",
            {"causes": codes, "reason": reason, "was": customer.credit_hold_reason, **data},
            actor,
            at,
        )
    elif not codes and customer.credit_hold:
        record_customer_event(
            session,
            customer.id,
            "credit_hold_off",
            {"was": customer.credit_hold_reason, **data},
            actor,
            at,
        )
        customer.credit_hold = False
        customer.credit_hold_since = None
    else:
        changed = False
    customer.credit_hold_reason = reason
    session.add(customer)
    session.flush()
    return HoldState(on=customer.credit_hold, changed=changed, reason=reason, causes=codes)


def reassess_credit_hold(
    session: Session, customer_id: int, actor: str = "system", now: datetime | None = None
) -> HoldState:
    """Reassess the customer's credit hold from the current figures (call it after a payment,
    an order or a profile change). Joins the caller's transaction: the caller commits."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    return reassess(session, customer, behaviour(session, customer, now), actor)


def credit_check(
    session: Session,
    customer: Customer,
    body: CreditCheckRequest,
    actor: str,
    now: datetime | None = None,
) -> CreditCheckResult:
    """Approve or decline ``body.amount_minor`` more credit; reassesses (and commits) the hold
    first, so the answer and the hold agree."""
    limit, currency = customer.credit_limit_minor, customer.credit_currency
    if limit is not None and currency is not None and body.currency != currency:
        raise unprocessable(
            f"the credit limit is in {currency}: a check in {body.currency} cannot be compared"
        )
    b = behaviour(session, customer, now)
    hold = reassess(session, customer, b, actor)
    session.commit()
    exposure = _exposure(b, body.currency)
    after = exposure + body.amount_minor
    decision: Decision
    code: CheckCode
    if hold.on:
        decision, code = "decline", "credit_hold"
        reason = f"the account is on credit hold: {hold.reason}"
    elif limit is None:
        decision, code, reason = "approve", "no_limit", "no credit limit is set"
    elif after > limit:
        decision, code = "decline", "over_limit"
        reason = (
            f"exposure {exposure} + {body.amount_minor} = {after} would pass the credit limit "
            f"{limit} {body.currency}"
        )
    else:
        decision, code = "approve", "within_limit"
        reason = f"exposure {exposure} + {body.amount_minor} = {after} is within {limit}"
    return CreditCheckResult(
        decision=decision,
        code=code,
        reason=reason,
        currency=body.currency,
        amount_minor=body.amount_minor,
        exposure_minor=exposure,
        limit_minor=limit,
        available_minor=None if limit is None else max(0, limit - exposure),
        credit_hold=hold.on,
    )


# -- unbilled orders --------------------------------------------------------------------


def add_order(
    session: Session,
    customer: Customer,
    body: OrderCreate,
    actor: str,
    now: datetime | None = None,
) -> tuple[UnbilledOrder, bool]:
    """Store an unbilled order (idempotent on its external id); reassesses the hold."""
    assert customer.id is not None
    found = _order(session, customer.id, body.external_id)
    if found is not None:
        if (found.amount_minor, found.currency) != (body.amount_minor, body.currency):
            raise conflict(f"order {body.external_id!r} already exists with different data")
        return found, False
    order = UnbilledOrder(
        customer_id=customer.id,
        external_id=body.external_id,
        amount_minor=body.amount_minor,
        currency=body.currency,
        created_by=actor,
    )
    session.add(order)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        again = _order(session, customer.id, body.external_id)
        if again is None:
            raise
        return again, False
    reassess_credit_hold(session, customer.id, actor, now)
    session.commit()
    session.refresh(order)
    return order, True


def delete_order(
    session: Session,
    customer: Customer,
    external_id: str,
    actor: str,
    now: datetime | None = None,
) -> None:
    """The order is invoiced (or cancelled): it leaves the exposure; reassesses the hold."""
    assert customer.id is not None
    order = _order(session, customer.id, external_id)
    if order is None:
        raise not_found("order", repr(external_id))
    session.delete(order)
    session.flush()
    reassess_credit_hold(session, customer.id, actor, now)
    session.commit()


def list_orders(session: Session, customer_id: int) -> list[UnbilledOrder]:
    stmt = (
        select(UnbilledOrder)
        .where(UnbilledOrder.customer_id == customer_id)
        .order_by(col(UnbilledOrder.id))
    )
    return list(session.exec(stmt).all())


def _order(session: Session, customer_id: int, external_id: str) -> UnbilledOrder | None:
    return session.exec(
        select(UnbilledOrder).where(
            UnbilledOrder.customer_id == customer_id, UnbilledOrder.external_id == external_id
        )
    ).first()
