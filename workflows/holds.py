"""Holds on dunning (a pause, a promise to pay) and lifting them: pure decisions, no I/O, safe
inside the workflow.

While a hold is on, no reminder and no escalation goes out. When it is lifted, dunning goes on
without a burst and the escalation comes no earlier than the policy's ``resume_grace``. (A
payment plan is a hold too: see ``workflows.plans``.) The functions change the workflow's state
(``InvoiceWorkflowInput``) they are given and return the events and rows to record.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from workflows.ladder import hold_back_escalation
from workflows.schedule import default_due_at, shift
from workflows.types import (
    OPEN,
    PAID,
    PAUSED,
    PROMISE,
    EventSpec,
    InvoiceWorkflowInput,
    PauseRequest,
    PauseState,
    PromiseRecord,
    PromiseRequest,
    PromiseState,
    Rows,
    TaskRecord,
)

SMALL_BALANCE = "small_balance"


def lift(inp: InvoiceWorkflowInput, now: datetime, why: str) -> None:
    """Lift the hold at ``now``; the next reminder says ``why`` dunning resumed."""
    inp.hold = None
    inp.pause = None
    hold_back_escalation(inp, now)
    inp.catch_up_note = why


def pause(inp: InvoiceWorkflowInput, req: PauseRequest) -> list[EventSpec]:
    """Pause dunning as ``req`` says (checked already): until 00:00 local on its ``until``
    day, or until resumed."""
    until = None
    if req.until is not None:
        until = default_due_at(date.fromisoformat(req.until) - timedelta(days=1), inp.timezone)
        until += timedelta(seconds=1)  # 00:00 local on the given day
    inp.hold = PAUSED
    inp.pause = PauseState(reason=req.reason, until=until)
    return [EventSpec("paused", {"reason": req.reason, "until": req.until})]


def promise(
    inp: InvoiceWorkflowInput, req: PromiseRequest
) -> tuple[list[EventSpec], PromiseRecord]:
    """Hold dunning for the promise ``req`` (checked already), checked the policy's
    ``promise_grace`` after the promised day ends. Its id is set once its row is recorded."""
    promised = date.fromisoformat(req.promised_date)
    check_at = shift(
        default_due_at(promised, inp.timezone), inp.policy.promise_grace, inp.timezone, None
    )
    inp.hold = PROMISE
    inp.pause = None
    inp.promise = PromiseState(
        promise_id=0,
        promised_date=req.promised_date,
        amount_minor=req.amount_minor,
        check_at=check_at,
    )
    events = [
        EventSpec(
            "promise_to_pay",
            {
                "promised_date": req.promised_date,
                "amount_minor": req.amount_minor,
                "note": req.note,
            },
        )
    ]
    record = PromiseRecord(
        promise_id=None,
        status="open",
        promised_date=req.promised_date,
        amount_minor=req.amount_minor,
    )
    return events, record


def promise_broken(inp: InvoiceWorkflowInput) -> tuple[list[EventSpec], Rows]:
    """The promise's check came and it was not kept: the invoice leaves it, and that counts
    against the customer. Returns the events and the rows to record."""
    current = inp.promise
    assert current is not None
    inp.promise = None
    events = [
        EventSpec(
            "promise_broken",
            {
                "promise_id": current.promise_id,
                "promised_minor": current.amount_minor,
                "paid_minor": current.paid_since_minor,
            },
        )
    ]
    record = PromiseRecord(promise_id=current.promise_id, status="broken")
    return events, {"promise": record, "customer_counter": "broken_promises"}


def promise_payment(
    inp: InvoiceWorkflowInput, amount_minor: int
) -> tuple[list[EventSpec], PromiseRecord] | None:
    """A payment towards the invoice's promise (the balance already lowered). The promise is
    kept, and the invoice leaves it, once the payments since reach the amount promised or
    the invoice is paid; None while it is not."""
    current = inp.promise
    assert current is not None
    current.paid_since_minor += amount_minor
    if current.paid_since_minor < current.amount_minor and inp.status != PAID:
        return None
    inp.promise = None
    events = [EventSpec("promise_kept", {"promise_id": current.promise_id})]
    return events, PromiseRecord(promise_id=current.promise_id, status="kept")


def small_balance(inp: InvoiceWorkflowInput) -> bool:
    """Open, on no hold, with something left but less than the policy's minimum: no reminder
    and no escalation for it (chasing it would cost more than it brings)."""
    return (
        inp.status == OPEN
        and inp.hold is None
        and 0 < inp.balance_minor < (inp.policy.min_balance_minor)
    )


def small_balance_task(
    inp: InvoiceWorkflowInput, now: datetime
) -> tuple[str, list[EventSpec], TaskRecord]:
    """Raised once per invoice: the event and the worklist task asking for a write-off
    decision (closed by the invoice's close: written off, paid, credited)."""
    inp.small_balance_raised = True
    data = {"balance_minor": inp.balance_minor, "min_balance_minor": inp.policy.min_balance_minor}
    task = TaskRecord(kind=SMALL_BALANCE, due_at=now, data=data)
    return "small-balance", [EventSpec(SMALL_BALANCE, data)], task
