"""The checks of the specialist actions (the workflow's updates): pure, no I/O, safe inside the
workflow.

Each update's validator runs the check at once, and the workflow's loop runs it again when it
applies the action (the state may have moved in between). A check returns nothing, or raises
the refusal the update answers with: ``refuse`` gives InvalidState (the API answers 409) or
InvalidInput (422).
"""

from __future__ import annotations

from datetime import date, datetime

from temporalio.exceptions import ApplicationError

from workflows.ladder import at_agency
from workflows.types import (
    CLOSED_STATUSES,
    DISPUTED,
    ESCALATED,
    OPEN,
    PAUSED,
    ActorRequest,
    AgencyEndRequest,
    CancelRequest,
    InvoiceWorkflowInput,
    OpenDisputeRequest,
    PauseRequest,
    PlanRequest,
    PolicyChangeRequest,
    PromiseRequest,
    ResolveDisputeRequest,
    ScheduledStep,
    SendOutcome,
)


def refuse(message: str, kind: str = "InvalidState") -> ApplicationError:
    """An update's business refusal: InvalidState answers 409, InvalidInput 422."""
    return ApplicationError(message, type=kind, non_retryable=True)


def require_started(inp: InvoiceWorkflowInput | None) -> None:
    if inp is None:
        raise ApplicationError("the workflow has not started yet", type="NotReady")


def check_not_closed(inp: InvoiceWorkflowInput) -> None:
    if inp.status in CLOSED_STATUSES:
        raise refuse(f"invoice is already {inp.status}")


def check_cancel(request: CancelRequest, in_progress: bool) -> None:
    if in_progress:
        raise ApplicationError("a cancellation is already in progress", type="InvalidState")
    if not request.reason.strip():
        raise ApplicationError("a reason is required", type="InvalidInput")


def check_dispute_opening(inp: InvoiceWorkflowInput, req: OpenDisputeRequest) -> None:
    if inp.status == DISPUTED:
        raise refuse("the invoice already has an open dispute")
    if inp.status != OPEN:
        raise refuse(f"a dispute cannot be opened on an invoice that is {inp.status}")
    if req.amount_minor is not None and not 0 < req.amount_minor <= inp.balance_minor:
        raise refuse(
            f"disputed amount must be between 1 and the open balance {inp.balance_minor}",
            "InvalidInput",
        )


def check_resolution(inp: InvoiceWorkflowInput, req: ResolveDisputeRequest) -> None:
    if inp.dispute is None or inp.dispute.dispute_id != req.dispute_id:
        raise refuse(f"dispute {req.dispute_id} is not open on this invoice")
    if req.outcome not in ("upheld", "rejected"):
        raise refuse("outcome must be upheld or rejected", "InvalidInput")
    if req.outcome == "rejected" and req.credit_minor:
        raise refuse("a rejected dispute gives no credit", "InvalidInput")
    if not 0 <= req.credit_minor <= inp.balance_minor:
        raise refuse(
            f"credit must be between 0 and the open balance {inp.balance_minor}",
            "InvalidInput",
        )


def check_plan(inp: InvoiceWorkflowInput, req: PlanRequest, today: date) -> None:
    """A plan's instalments: dated from ``today`` on, strictly increasing, summing to the
    open balance, at most the policy's number."""
    if inp.status != OPEN:
        raise refuse(f"a payment plan cannot be agreed on an invoice that is {inp.status}")
    if inp.plan is not None:
        raise refuse("the invoice already has a payment plan; cancel it first")
    items = req.installments
    if not items:
        raise refuse("a plan needs at least one instalment", "InvalidInput")
    if len(items) > inp.policy.max_installments:
        raise refuse(
            f"at most {inp.policy.max_installments} instalments are allowed", "InvalidInput"
        )
    if any(i.amount_minor <= 0 for i in items):
        raise refuse("every instalment amount must be greater than 0", "InvalidInput")
    total = sum(i.amount_minor for i in items)
    if total != inp.balance_minor:
        raise refuse(
            f"instalments sum to {total}, the open balance is {inp.balance_minor}",
            "InvalidInput",
        )
    try:
        dates = [date.fromisoformat(i.due_date) for i in items]
    except ValueError:
        raise refuse("instalment due dates must be ISO dates", "InvalidInput") from None
    if dates[0] < today:
        raise refuse("the first instalment is due in the past", "InvalidInput")
    if any(b <= a for a, b in zip(dates, dates[1:], strict=False)):
        raise refuse("instalment due dates must be strictly increasing", "InvalidInput")


def check_cancel_plan(inp: InvoiceWorkflowInput) -> None:
    if inp.plan is None:
        raise refuse("the invoice has no payment plan")


def check_promise(inp: InvoiceWorkflowInput, req: PromiseRequest, today: date) -> None:
    if inp.status != OPEN:
        raise refuse(f"a promise cannot be recorded on an invoice that is {inp.status}")
    if inp.plan is not None:
        raise refuse("the invoice follows a payment plan; change the plan instead")
    if not 0 < req.amount_minor <= inp.balance_minor:
        raise refuse(
            f"promised amount must be between 1 and the open balance {inp.balance_minor}",
            "InvalidInput",
        )
    try:
        promised = date.fromisoformat(req.promised_date)
    except ValueError:
        raise refuse("promised_date must be an ISO date", "InvalidInput") from None
    if promised < today:
        raise refuse("promised_date is in the past", "InvalidInput")


def check_pause(inp: InvoiceWorkflowInput, req: PauseRequest, today: date) -> None:
    if inp.status != OPEN:
        raise refuse(f"an invoice that is {inp.status} cannot be paused")
    if inp.hold is not None:
        raise refuse(f"the invoice is already on hold ({inp.hold})")
    if req.until is not None:
        try:
            until = date.fromisoformat(req.until)
        except ValueError:
            raise refuse("until must be an ISO date", "InvalidInput") from None
        if until <= today:
            raise refuse("until must be a future date", "InvalidInput")


def check_resume(inp: InvoiceWorkflowInput) -> None:
    if inp.hold != PAUSED:
        raise refuse("the invoice is not paused")


def check_write_off(req: ActorRequest) -> None:
    if not req.reason.strip():
        raise refuse("a reason is required", "InvalidInput")


def check_change_policy(req: PolicyChangeRequest) -> None:
    if not req.policy.steps:
        raise refuse("the policy has no steps", "InvalidInput")


def check_send_now(
    inp: InvoiceWorkflowInput, step: ScheduledStep | None, now: datetime
) -> ScheduledStep:
    """``step``, the next dunning step not sent or skipped, may go out at ``now``: returns it."""
    if inp.status != OPEN:
        raise refuse(f"the invoice is {inp.status}: no reminder goes out")
    if inp.hold is not None:
        raise refuse(f"reminders are on hold ({inp.hold})")
    if step is None:
        raise refuse("every reminder step has been sent; escalation is next")
    if step.at >= inp.due_at > now:
        raise refuse("the invoice is not due yet and the next reminder is for after the due date")
    return step


def outside_hours(step: ScheduledStep, allowed: datetime) -> ApplicationError:
    """A send-now outside the contact hours: refused, the step moved to ``allowed``."""
    return refuse(
        f"outside the customer's contact hours: step {step.key} goes out at {allowed.isoformat()}"
    )


def not_sent(step: ScheduledStep, outcome: SendOutcome) -> ApplicationError:
    """A send-now no channel took."""
    return refuse(f"step {step.key} could not go out now: {outcome.detail or outcome.status}")


def check_agency_ended(inp: InvoiceWorkflowInput, req: AgencyEndRequest) -> None:
    if req.outcome not in ("recalled", "returned", "closed"):
        raise refuse("outcome must be recalled, returned or closed", "InvalidInput")
    if not req.reason.strip():
        raise refuse("a reason is required", "InvalidInput")
    if inp.status != ESCALATED or not at_agency(inp):
        raise refuse("the invoice is not with a collection agency")
