"""Where an invoice stands: the dunning steps done, the next step and the next action, and the
state the workflow answers with. Pure, no I/O, safe inside the workflow.

The functions read the workflow's state (``InvoiceWorkflowInput``), its dunning schedule and
the schedule's escalation instant.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Unpack

from workflows.holds import small_balance
from workflows.ladder import escalation_due_at, interest_due, next_stage, stage_due_at, window
from workflows.plans import plan_points
from workflows.schedule import build_schedule, due_steps, escalation_at
from workflows.schedule import next_action as next_dunning_action
from workflows.types import (
    DISPUTED,
    OPEN,
    PAUSED,
    PLAN,
    PROMISE,
    ChangeSet,
    CustomerZone,
    EventSpec,
    InvoiceState,
    InvoiceWorkflowInput,
    NextAction,
    PolicyChangeRequest,
    Rows,
    ScheduledStep,
)


def schedule_for(inp: InvoiceWorkflowInput) -> tuple[list[ScheduledStep], datetime]:
    """The dunning schedule of the invoice's policy, with the steps a cap or a send-now moved
    (carried over runs), and its escalation instant."""
    schedule = build_schedule(inp.policy, inp.due_at, inp.timezone, inp.country)
    for step in schedule:
        if step.key in inp.deferred:
            step.at = inp.deferred[step.key]
    return schedule, escalation_at(inp.policy, inp.due_at, inp.timezone)


def done_steps(inp: InvoiceWorkflowInput) -> set[str]:
    """The dunning steps sent or skipped."""
    return set(inp.sent_steps) | set(inp.skipped_steps)


def next_step(
    inp: InvoiceWorkflowInput, schedule: list[ScheduledStep], escalate_at: datetime
) -> ScheduledStep | None:
    """The next dunning step not sent or skipped yet (before the escalation)."""
    done = done_steps(inp)
    return next((s for s in schedule if s.at < escalate_at and s.key not in done), None)


def dunning_due(
    inp: InvoiceWorkflowInput, schedule: list[ScheduledStep], escalate_at: datetime, now: datetime
) -> tuple[ScheduledStep | None, list[ScheduledStep], bool]:
    """The dunning step to send at ``now`` and the passed ones to skip (``due_steps`` over the
    steps before the schedule's escalation instant ``escalate_at``), and whether the
    escalation ladder's turn has come (a stage done or held back by a cap, or the escalation
    instant, no earlier than a hold's grace, reached)."""
    steps = [s for s in schedule if s.at < escalate_at]
    send, skip = due_steps(steps, done_steps(inp), now)
    ladder_turn = bool(
        inp.ladder_done or inp.ladder_deferred or now >= escalation_due_at(inp, escalate_at)
    )
    return send, skip, ladder_turn


def next_action(
    inp: InvoiceWorkflowInput, schedule: list[ScheduledStep], escalate_at: datetime
) -> NextAction | None:
    """What the workflow does next, and when: a dispute's deadline, the end of a hold, a plan
    step, the next reminder or ladder stage; None when nothing is ahead."""
    if inp.status == DISPUTED and inp.dispute and not inp.dispute.overdue_raised:
        return NextAction(kind="dispute_deadline", at=inp.dispute.sla_at)
    if inp.status != OPEN:
        return None
    if inp.hold == PAUSED and inp.pause:
        return NextAction(kind="resume", at=inp.pause.until) if inp.pause.until else None
    if inp.hold == PROMISE and inp.promise:
        return NextAction(kind="promise_check", at=inp.promise.check_at)
    if inp.hold == PLAN and inp.plan:
        points = plan_points(inp, inp.plan)
        if points:
            at, key, kind, _ = min(points, key=lambda p: p[0])
            return NextAction(kind=kind, at=at, step_key=key)
        return None
    if small_balance(inp):
        return None  # waits for a write-off decision or a payment
    nxt = next_dunning_action(schedule, done_steps(inp), escalation_due_at(inp, escalate_at), False)
    if nxt is None or nxt.kind != "escalation":
        return nxt
    stage = next_stage(inp)
    if stage is None:
        return None
    at = stage_due_at(inp, stage, escalate_at)
    if not inp.policy.ladder:
        return NextAction(kind="escalation", at=at)
    return NextAction(kind="escalation", at=at, step_key=stage.key)


def sleep_for(
    inp: InvoiceWorkflowInput, wake_at: datetime | None | bool, now: datetime
) -> timedelta | None:
    """How long the loop sleeps at ``now`` unless a message comes: until ``wake_at`` (None:
    nothing is due) or the next interest posting, whichever is first; None: no timeout."""
    interest_at = interest_due(inp)
    if interest_at is not None and (not isinstance(wake_at, datetime) or interest_at < wake_at):
        wake_at = interest_at
    if isinstance(wake_at, datetime):
        return max(wake_at - now, timedelta(0))
    return None


def invoice_state(inp: InvoiceWorkflowInput, next_action: NextAction | None) -> InvoiceState:
    """The state the workflow's query and updates answer with."""
    return InvoiceState(
        invoice_id=inp.invoice_id,
        status=inp.status,
        currency=inp.currency,
        amount_minor=inp.amount_minor,
        balance_minor=inp.balance_minor,
        sent_steps=list(inp.sent_steps),
        skipped_steps=list(inp.skipped_steps),
        next_action=next_action,
        hold=inp.hold,
        dispute_id=inp.dispute.dispute_id if inp.dispute else None,
        plan_id=inp.plan.plan_id if inp.plan else None,
        promise_id=inp.promise.promise_id if inp.promise else None,
    )


def follow_policy(
    inp: InvoiceWorkflowInput, req: PolicyChangeRequest, now: datetime
) -> tuple[list[ScheduledStep], datetime, list[EventSpec]]:
    """Switch to the policy ``req`` names at ``now``: returns its schedule, its escalation
    instant and the events. Its steps whose time has passed are recorded as skipped (never
    sent late in a burst); the steps already sent stay sent."""
    old = inp.policy
    inp.policy = req.policy
    inp.deferred = {}
    if req.segment is not None:
        inp.segment = req.segment
    schedule = build_schedule(req.policy, inp.due_at, inp.timezone, inp.country)
    escalate_at = escalation_at(req.policy, inp.due_at, inp.timezone)
    done = done_steps(inp)
    passed = [s.key for s in schedule if s.key not in done and s.at <= now]
    inp.skipped_steps.extend(passed)
    data: dict[str, object] = {
        "from": old.name,
        "to": req.policy.name,
        "reason": req.reason,
        "skipped": passed,
    }
    if req.policy.version is not None:  # specs recorded before versions carry none
        data |= {"from_version": old.version, "to_version": req.policy.version}
    return schedule, escalate_at, [EventSpec("policy_changed", data)]


def move_customer(inp: InvoiceWorkflowInput, zone: CustomerZone, now: datetime) -> list[EventSpec]:
    """The customer's stored time zone and country are now ``zone``: take them (the caller
    rebuilds the schedule with ``schedule_for``). Steps a cap or a send-now moved keep their
    instant but move into the new contact window, as does a notice a cap held back; a step the
    new zone makes due already waits for the window if it is closed now. Nothing sent or
    skipped changes. Returns the events; none when the zone and country are the same."""
    changes: dict[str, dict[str, str | None]] = {}
    if zone.timezone != inp.timezone:
        changes["timezone"] = {"from": inp.timezone, "to": zone.timezone}
    if zone.country != inp.country:
        changes["country"] = {"from": inp.country, "to": zone.country}
    if not changes:
        return []
    inp.timezone, inp.country = zone.timezone, zone.country
    inp.deferred = {key: window(inp, at) for key, at in inp.deferred.items()}
    if inp.ladder_deferred is not None:
        inp.ladder_deferred = window(inp, inp.ladder_deferred)
    schedule, _ = schedule_for(inp)
    done = done_steps(inp)
    allowed = window(inp, now)
    for step in schedule:
        if step.key not in done and step.at <= now < allowed:
            inp.deferred[step.key] = allowed
    return [EventSpec("customer_zone_changed", dict(changes))]


def change_set(
    inp: InvoiceWorkflowInput,
    dedupe_key: str,
    events: list[EventSpec],
    actor: str,
    next_action: NextAction | None,
    **rows: Unpack[Rows],
) -> ChangeSet:
    """The state as it is now with a change's events and rows, as ``record_change`` records
    them."""
    return ChangeSet(
        invoice_id=inp.invoice_id,
        actor=actor,
        dedupe_key=dedupe_key,
        events=events,
        status=inp.status,
        hold=inp.hold,
        balance_minor=inp.balance_minor,
        next_action=next_action,
        **rows,
    )
