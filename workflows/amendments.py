"""Corrections of an issued invoice: a credit note lowers its balance, a new due date moves its
dunning schedule. Pure, no I/O, safe inside the workflow: the checks raise the refusal the
update answers with, the changes return the events to record."""

from __future__ import annotations

from datetime import date, datetime

from workflows.commands import refuse
from workflows.payments import record_movement
from workflows.plans import cancel_for_credit
from workflows.progress import done_steps
from workflows.schedule import build_schedule, default_due_at, escalation_at
from workflows.types import (
    CREDITED,
    OPEN,
    CreditNoteRequest,
    DueDateRequest,
    EventSpec,
    InvoiceWorkflowInput,
    PlanRecord,
    ScheduledStep,
)


def check_credit_note(inp: InvoiceWorkflowInput, req: CreditNoteRequest) -> None:
    """A credit note applies to an open invoice (a disputed one is credited by resolving its
    dispute), for at most its open balance."""
    if inp.status != OPEN:
        hint = ": resolve the dispute with a credit instead" if inp.status == "disputed" else ""
        raise refuse(f"a credit note cannot be applied to an invoice that is {inp.status}{hint}")
    if not 0 < req.amount_minor <= inp.balance_minor:
        raise refuse(
            f"credit note amount must be between 1 and the open balance {inp.balance_minor}",
            "InvalidInput",
        )


def credit(
    inp: InvoiceWorkflowInput, req: CreditNoteRequest, now: datetime
) -> tuple[list[EventSpec], PlanRecord | None]:
    """Lower the balance by the credit note (checked already) at ``now``: the invoice is
    credited when nothing is left, and a plan summing to the old balance is cancelled (as for
    a dispute's credit)."""
    inp.balance_minor -= req.amount_minor
    record_movement(inp, -req.amount_minor, now)
    events = [
        EventSpec(
            "credit_note",
            {
                "credit_note_id": req.credit_note_id,
                "amount_minor": req.amount_minor,
                "reason": req.reason,
                "balance_minor": inp.balance_minor,
            },
        )
    ]
    plan_record = None
    if inp.plan is not None:
        event, plan_record = cancel_for_credit(inp)
        events.append(event)
    if inp.balance_minor == 0:
        inp.status = CREDITED
        events.append(EventSpec(CREDITED, {"credit_minor": req.amount_minor}))
    return events, plan_record


def check_due_date(inp: InvoiceWorkflowInput, req: DueDateRequest) -> date:
    """A new due date for an open invoice not yet escalated: returns it."""
    if inp.status != OPEN:
        raise refuse(f"the due date of an invoice that is {inp.status} cannot be changed")
    try:
        due = date.fromisoformat(req.due_date)
    except ValueError:
        raise refuse("due_date must be an ISO date", "InvalidInput") from None
    if default_due_at(due, inp.timezone) == inp.due_at:
        raise refuse(f"the invoice is already due on {due.isoformat()}", "InvalidInput")
    return due


def move_due_date(
    inp: InvoiceWorkflowInput, req: DueDateRequest, now: datetime
) -> tuple[list[ScheduledStep], datetime, list[EventSpec]]:
    """Move the due date (checked already) at ``now``: returns the new schedule, its
    escalation instant and the events. Steps already sent stay sent and are never sent again;
    steps of the new schedule whose time has passed are recorded as skipped (no burst of late
    reminders); steps a cap had moved follow the new schedule."""
    old = inp.due_at
    due = date.fromisoformat(req.due_date)
    inp.due_at = default_due_at(due, inp.timezone)
    inp.deferred = {}
    schedule = build_schedule(inp.policy, inp.due_at, inp.timezone, inp.country)
    escalate_at = escalation_at(inp.policy, inp.due_at, inp.timezone)
    done = done_steps(inp)
    passed = [s.key for s in schedule if s.key not in done and s.at <= now]
    inp.skipped_steps.extend(passed)
    events = [
        EventSpec(
            "due_date_changed",
            {
                "from": old.isoformat(),
                "to": inp.due_at.isoformat(),
                "due_date": due.isoformat(),
                "reason": req.reason,
                "skipped": passed,
            },
        )
    ]
    return schedule, escalate_at, events
