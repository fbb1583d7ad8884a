"""Customer profiles: the attributes a specialist sets, and what follows from them (segment,
credit hold), each change on the customer's timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from arflow.access import Principal
from arflow.customers.behaviour import Behaviour, behaviour
from arflow.customers.credit import HoldState, reassess
from arflow.customers.events import record_customer_event
from arflow.customers.risk import Risk, risk
from arflow.customers.segments import (
    SegmentDecision,
    load_segments,
    reevaluate_segment,
    segment_for,
)
from arflow.errors import forbidden, not_found, unprocessable
from models import Customer
from models.profile import ProfileUpdate

# ProfileUpdate field -> Customer column
COLUMNS = {
    "key_account": "key_account",
    "annual_revenue_minor": "annual_revenue_minor",
    "credit_limit_minor": "credit_limit_minor",
    "credit_currency": "credit_currency",
    "assigned_collector": "assigned_collector",
    "segment": "pinned_segment",
}


class ProfilePublic(BaseModel):
    customer_id: int
    key_account: bool
    annual_revenue_minor: int | None
    credit_limit_minor: int | None
    credit_currency: str | None
    assigned_collector: str | None
    pinned_segment: str | None
    segment: str
    statement_day: int | None
    credit_hold: bool
    credit_hold_reason: str | None

    @classmethod
    def of(cls, c: Customer) -> ProfilePublic:
        assert c.id is not None
        return cls(
            customer_id=c.id,
            key_account=c.key_account,
            annual_revenue_minor=c.annual_revenue_minor,
            credit_limit_minor=c.credit_limit_minor,
            credit_currency=c.credit_currency,
            assigned_collector=c.assigned_collector,
            pinned_segment=c.pinned_segment,
            segment=c.segment,
            statement_day=c.statement_day,
            credit_hold=c.credit_hold,
            credit_hold_reason=c.credit_hold_reason,
        )


class ProfileResult(BaseModel):
    profile: ProfilePublic
    changed_fields: list[str]
    segment: str
    previous_segment: str
    segment_changed: bool
    segment_reasons: list[str]
    policy_name: str = Field(description="the policy of the (new) segment")
    policy_change_invoice_ids: list[int] = Field(
        description="open invoices whose workflows should switch to the segment's policy"
    )
    credit_hold_changed: bool
    policy_switch_failed: dict[int, str] = Field(
        default_factory=dict,
        description="invoices whose workflow did not switch policy, with the reason",
    )


class ProfileView(BaseModel):
    profile: ProfilePublic
    evaluated_segment: str = Field(description="the segment the rules give now")
    segment_reasons: list[str]
    risk: Risk


class BehaviourView(Behaviour):
    risk: Risk


def get_customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    return customer


def behaviour_view(
    session: Session, customer_id: int, now: datetime | None = None
) -> BehaviourView:
    b = behaviour(session, get_customer(session, customer_id), now)
    return BehaviourView(**b.model_dump(), risk=risk(b))


def profile_view(session: Session, customer_id: int, now: datetime | None = None) -> ProfileView:
    customer = get_customer(session, customer_id)
    b = behaviour(session, customer, now)
    seg, reasons = segment_for(customer, b, load_segments(session))
    return ProfileView(
        profile=ProfilePublic.of(customer),
        evaluated_segment=seg.name,
        segment_reasons=reasons,
        risk=risk(b),
    )


@dataclass
class CustomerRefresh:
    hold: HoldState
    segment: SegmentDecision


def refresh_customer(
    session: Session, customer_id: int, actor: str = "workflow", now: datetime | None = None
) -> CustomerRefresh:
    """After anything that changes a customer's figures (a payment, a promise or plan kept or
    broken, a dispute resolved, an order): move the segment if the rules now say another one,
    then reassess the credit hold (its overdue limit is the segment's). Records the customer
    events; joins the caller's transaction (no commit). ``segment.invoice_ids``: open invoices
    whose workflows should switch policy."""
    customer = get_customer(session, customer_id)
    b = behaviour(session, customer, now)
    decision = reevaluate_segment(session, customer, actor, now, b)
    hold = reassess(session, customer, b, actor)
    return CustomerRefresh(hold=hold, segment=decision)


def update_profile(
    session: Session,
    customer_id: int,
    body: ProfileUpdate,
    who: Principal,
    now: datetime | None = None,
) -> ProfileResult:
    """Set the attributes given (``null`` clears; a limit cleared takes its currency with it),
    record ``profile_updated``, re-evaluate the segment and the credit hold, commit. Raising
    the credit limit needs an admin (403 for a specialist); lowering it does not."""
    actor = who.actor
    customer = get_customer(session, customer_id)
    assert customer.id is not None
    given = body.model_fields_set
    if body.segment is not None and body.segment not in {s.name for s in load_segments(session)}:
        raise unprocessable(f"unknown segment {body.segment!r}")
    wanted: dict[str, Any] = {COLUMNS[name]: getattr(body, name) for name in given}
    if "credit_limit_minor" in wanted and wanted["credit_limit_minor"] is None:
        wanted["credit_currency"] = None
    limit_change = _limit_change(customer, wanted)
    before = (customer.credit_limit_minor, customer.credit_currency)
    if limit_change == "raised" and not who.is_admin:
        raise forbidden("raising a credit limit needs the admin role (lowering it does not)")
    changes: dict[str, dict[str, Any]] = {}
    for column, value in wanted.items():
        old = getattr(customer, column)
        if old != value:
            changes[column] = {"from": old, "to": value}
            setattr(customer, column, value)
    if changes:
        session.add(customer)
        record_customer_event(session, customer.id, "profile_updated", {"changes": changes}, actor)
        if limit_change == "raised":
            _record_raise(session, customer, before, who)
        session.flush()
    refreshed = refresh_customer(session, customer.id, actor, now)
    session.commit()
    return _result(customer, refreshed, sorted(changes))


def _limit_change(customer: Customer, wanted: dict[str, Any]) -> str | None:
    """``raised``, ``lowered``, ``set`` or None (the limit stays as it is). No limit (null)
    is the highest of all: clearing one raises it, setting one where there was none (``set``)
    lowers it. A limit moved to another currency cannot be compared: it counts as raised."""
    if "credit_limit_minor" not in wanted and "credit_currency" not in wanted:
        return None
    old = (customer.credit_limit_minor, customer.credit_currency)
    new = (
        wanted.get("credit_limit_minor", old[0]),
        wanted.get("credit_currency", old[1]),
    )
    if new == old:
        return None
    if new[0] is None:
        return "raised"
    if old[0] is None:
        return "set"
    if new[1] != old[1] or new[0] > old[0]:
        return "raised"
    return "lowered"


def _record_raise(
    session: Session, customer: Customer, before: tuple[int | None, str | None], who: Principal
) -> None:
    """``credit_limit_raised`` on the customer's timeline beside ``profile_updated``: a raise
    is an admin's decision, so its requester and approver are that admin. (A lower limit is
    anyone's to set and ``profile_updated`` says who did.)"""
    assert customer.id is not None
    record_customer_event(
        session,
        customer.id,
        "credit_limit_raised",
        {
            "from_minor": before[0],
            "from_currency": before[1],
            "to_minor": customer.credit_limit_minor,
            "to_currency": customer.credit_currency,
            "requested_by": who.actor,
            "approved_by": who.actor,
        },
        who.actor,
    )


def _result(customer: Customer, refreshed: CustomerRefresh, changed: list[str]) -> ProfileResult:
    decision = refreshed.segment
    return ProfileResult(
        profile=ProfilePublic.of(customer),
        changed_fields=changed,
        segment=decision.segment,
        previous_segment=decision.previous,
        segment_changed=decision.changed,
        segment_reasons=decision.reasons,
        policy_name=decision.policy_name,
        policy_change_invoice_ids=decision.invoice_ids,
        credit_hold_changed=refreshed.hold.changed,
    )


def reevaluate_customers(
    session: Session, actor: str, now: datetime | None, limit: int, offset: int
) -> list[ProfileResult]:
    """Refresh a page of customers (by id), one transaction each; the ones that changed."""
    ids = session.exec(select(Customer.id).order_by(col(Customer.id)).offset(offset).limit(limit))
    out = []
    for customer_id in list(ids.all()):
        assert customer_id is not None
        refreshed = refresh_customer(session, customer_id, actor, now)
        session.commit()
        if refreshed.segment.changed or refreshed.hold.changed:
            out.append(_result(get_customer(session, customer_id), refreshed, []))
    return out
