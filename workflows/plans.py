"""Payment plans: pure decisions, no I/O, safe inside the workflow.

A plan splits the open balance into instalments. Each instalment has three steps: a reminder
``plan_reminder_offset`` before it is due, a late notice the day after, and the plan breaks
``plan_grace`` after the due date if it is still not paid. Payments fill instalments in order.

The functions change the plan and the workflow's state (``InvoiceWorkflowInput``) they are
given, and return the events and rows the workflow records.
"""

from __future__ import annotations

from datetime import date, datetime

from workflows.ladder import window
from workflows.schedule import default_due_at, shift
from workflows.types import (
    PAID,
    PLAN,
    EventSpec,
    InstallmentState,
    InvoiceWorkflowInput,
    PlanRecord,
    PlanRequest,
    PlanState,
    PromiseRecord,
    Rows,
)

# (instant, step key, kind, instalment) of a plan step.
PlanPoint = tuple[datetime, str, str, InstallmentState]


def agree(
    inp: InvoiceWorkflowInput, req: PlanRequest
) -> tuple[list[EventSpec], PlanRecord, PromiseRecord | None]:
    """Put the invoice on the plan ``req`` (checked already): it holds dunning and supersedes a
    promise. Returns the events, the plan's row and the superseded promise's row."""
    installments = [
        InstallmentState(
            n=i + 1,
            due_date=item.due_date,
            due_at=default_due_at(date.fromisoformat(item.due_date), inp.timezone),
            amount_minor=item.amount_minor,
        )
        for i, item in enumerate(req.installments)
    ]
    superseded = inp.promise
    inp.promise = None  # a plan supersedes a promise
    inp.hold = PLAN
    inp.pause = None
    inp.plans_agreed += 1
    inp.plan = PlanState(plan_id=0, installments=installments, seq=inp.plans_agreed)
    events = [EventSpec("plan_agreed", {"installments": len(installments), "note": req.note})]
    record = PlanRecord(plan_id=None, status="active", installments=installments, note=req.note)
    promise = (
        PromiseRecord(promise_id=superseded.promise_id, status="superseded") if superseded else None
    )
    return events, record, promise


def cancel(inp: InvoiceWorkflowInput, reason: str) -> tuple[list[EventSpec], PlanRecord]:
    """A specialist cancels the plan: the invoice leaves it (the hold stays until dunning
    resumes). Returns the events and the plan's row."""
    plan = inp.plan
    assert plan is not None
    inp.plan = None
    events = [EventSpec("plan_cancelled", {"plan_id": plan.plan_id, "reason": reason})]
    return events, PlanRecord(
        plan_id=plan.plan_id, status="cancelled", installments=plan.installments
    )


def cancel_for_credit(inp: InvoiceWorkflowInput) -> tuple[EventSpec, PlanRecord]:
    """A credit lowered the balance the instalments summed to: the plan no longer holds. The
    invoice leaves it and a plan's hold is lifted. Returns the event and the plan's row."""
    plan = inp.plan
    assert plan is not None
    event = EventSpec("plan_cancelled", {"plan_id": plan.plan_id, "why": "credit"})
    record = PlanRecord(plan_id=plan.plan_id, status="cancelled", installments=plan.installments)
    inp.plan = None
    inp.hold = None if inp.hold == PLAN else inp.hold
    return event, record


def broken(
    inp: InvoiceWorkflowInput, plan: PlanState, inst: InstallmentState
) -> tuple[list[EventSpec], PlanRecord]:
    """Instalment ``inst`` was missed: the plan is broken and the invoice leaves it."""
    inp.plan = None
    events = [EventSpec("plan_broken", {"plan_id": plan.plan_id, "installment": inst.n})]
    return events, PlanRecord(plan_id=plan.plan_id, status="broken", installments=plan.installments)


def plan_points(inp: InvoiceWorkflowInput, plan: PlanState) -> list[PlanPoint]:
    """(instant, step key, kind, instalment) of every plan step not yet done."""
    pol, tz = inp.policy, inp.timezone
    points = []
    for inst in plan.installments:
        if inst.state in ("paid", "missed"):
            continue
        prefix = f"plan{plan.seq}-{inst.n}"
        for kind, at in (
            (
                "plan_before",
                window(inp, shift(inst.due_at, pol.plan_reminder_offset, tz, pol.send_at)),
            ),
            ("plan_late", window(inp, shift(inst.due_at, "P1D", tz, pol.send_at))),
            ("plan_broken", shift(inst.due_at, pol.plan_grace, tz, pol.send_at)),
        ):
            key = f"{prefix}-{kind.removeprefix('plan_')}"
            if key not in plan.done_steps:
                points.append((at, key, kind, inst))
    return points


def mark_late(plan: PlanState, now: datetime) -> tuple[str, list[EventSpec], PlanRecord] | None:
    """Pending instalments whose due instant has passed become late: the dedupe key, events
    and plan row to record; None when none did."""
    late = [i for i in plan.installments if i.state == "pending" and now > i.due_at]
    if not late:
        return None
    for inst in late:
        inst.state = "late"
    key = f"plan{plan.seq}:late:{','.join(str(i.n) for i in late)}"
    events = [EventSpec("installment_late", {"plan_id": plan.plan_id, "n": late[0].n})]
    return key, events, PlanRecord(plan.plan_id, "active", installments=plan.installments)


def due_points(inp: InvoiceWorkflowInput, plan: PlanState, now: datetime) -> list[PlanPoint]:
    """The plan steps due at ``now``, oldest first."""
    return sorted((p for p in plan_points(inp, plan) if p[0] <= now), key=lambda p: p[0])


def miss(
    inp: InvoiceWorkflowInput, plan: PlanState, point: PlanPoint
) -> tuple[list[EventSpec], Rows]:
    """The instalment of ``point``, a ``plan_broken`` step, was missed: the plan is broken,
    and that counts against the customer. Returns the events and the rows to record."""
    _, key, _, inst = point
    inst.state = "missed"
    plan.done_steps.append(key)
    events, record = broken(inp, plan, inst)
    return events, {"plan": record, "customer_counter": "broken_plans"}


def latest_reminder(plan: PlanState, points: list[PlanPoint]) -> tuple[PlanPoint, list[str]]:
    """No burst: of the plan reminders due (``points``, oldest first), only the latest goes
    out. Marks them all done; returns the latest and the keys of the others (skipped)."""
    *older, latest = points
    plan.done_steps.extend(p[1] for p in older)
    plan.done_steps.append(latest[1])
    return latest, [p[1] for p in older]


def next_point_at(inp: InvoiceWorkflowInput, plan: PlanState) -> datetime | None:
    """When the plan's next step is due; None when none is left."""
    upcoming = plan_points(inp, plan)
    return min(p[0] for p in upcoming) if upcoming else None


def allocate(plan: PlanState, amount: int) -> None:
    """Payments fill instalments in order; overpaying one rolls into the next."""
    for inst in plan.installments:
        if amount <= 0:
            break
        if inst.state in ("paid", "missed"):
            continue
        take = min(amount, inst.amount_minor - inst.paid_minor)
        inst.paid_minor += take
        amount -= take
        if inst.paid_minor >= inst.amount_minor:
            inst.state = "paid"


def apply_payment(inp: InvoiceWorkflowInput, amount: int) -> tuple[list[EventSpec], PlanRecord]:
    """A payment of ``amount`` on the invoice's plan (the balance already lowered): it fills
    the instalments; the plan is completed when all are paid or the invoice is."""
    plan = inp.plan
    assert plan is not None
    allocate(plan, amount)
    done = inp.status == PAID or all(i.state == "paid" for i in plan.installments)
    if done:
        inp.plan = None
        inp.hold = None if inp.hold == PLAN else inp.hold
    events = [EventSpec("plan_completed", {"plan_id": plan.plan_id})] if done else []
    status = "completed" if done else "active"
    return events, PlanRecord(plan.plan_id, status, installments=plan.installments)
