"""Disputes: opening, resolving and settling one, pure decisions, no I/O, safe inside the
workflow.

While a dispute is open the invoice is ``disputed``: no reminder and no escalation goes out.
An upheld dispute may credit part or all of the balance; a rejected one gives no credit.
Dunning resumes after either unless another hold is on. The functions change the workflow's
state (``InvoiceWorkflowInput``) they are given and return the events and rows to record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from workflows.payments import record_movement
from workflows.plans import cancel_for_credit
from workflows.schedule import shift
from workflows.types import (
    CREDITED,
    DISPUTED,
    OPEN,
    PAID,
    DisputeRecord,
    DisputeState,
    EventSpec,
    InvoiceWorkflowInput,
    OpenDisputeRequest,
    PlanRecord,
    ResolveDisputeRequest,
    Rows,
    TaskRecord,
)


@dataclass
class Resolution:
    """What resolving a dispute records; ``resume``: why dunning resumes (None: it does not)."""

    events: list[EventSpec]
    dispute: DisputeRecord
    plan: PlanRecord | None
    resume: str | None

    def rows(self) -> Rows:
        return {"dispute": self.dispute, "plan": self.plan}


def open_dispute(
    inp: InvoiceWorkflowInput, req: OpenDisputeRequest, now: datetime
) -> tuple[list[EventSpec], DisputeRecord]:
    """Open the dispute ``req`` (checked already) at ``now``, due for an answer within the
    policy's ``dispute_sla``. Its id is set once the dispute's row is recorded."""
    sla_at = shift(now, inp.policy.dispute_sla, inp.timezone, None)
    inp.status = DISPUTED
    inp.dispute = DisputeState(
        dispute_id=0, opened_at=now, sla_at=sla_at, amount_minor=req.amount_minor
    )
    events = [EventSpec("dispute_opened", {"reason": req.reason, "amount_minor": req.amount_minor})]
    record = DisputeRecord(
        dispute_id=None,
        status="open",
        reason=req.reason,
        amount_minor=req.amount_minor,
        sla_at=sla_at,
    )
    return events, record


def resolve(inp: InvoiceWorkflowInput, req: ResolveDisputeRequest, now: datetime) -> Resolution:
    """Resolve the open dispute as ``req`` says (checked already) at ``now``: an upheld one's
    credit lowers the balance (the invoice is credited when nothing is left, and a plan summing
    to the old balance is cancelled)."""
    dispute = inp.dispute
    assert dispute is not None
    credit = req.credit_minor if req.outcome == "upheld" else 0
    balance = inp.balance_minor - credit
    status = CREDITED if balance == 0 else OPEN
    events = [
        EventSpec(
            f"dispute_{req.outcome}",
            {
                "dispute_id": dispute.dispute_id,
                "credit_minor": credit,
                "note": req.note,
                # set only on an approved credit: earlier histories' events stay as they were
                **({"approved_by": req.approved_by} if req.approved_by else {}),
            },
        )
    ]
    record = DisputeRecord(
        dispute_id=dispute.dispute_id,
        status=req.outcome,
        outcome_note=req.note,
        credit_minor=credit,
    )
    plan_record = None
    if credit and inp.plan is not None:
        # The plan's instalments summed to the old balance: it no longer holds.
        event, plan_record = cancel_for_credit(inp)
        events.append(event)
    inp.dispute = None
    inp.balance_minor = balance
    inp.status = status
    record_movement(inp, -credit, now)
    if status == CREDITED:
        events.append(EventSpec(CREDITED, {"credit_minor": credit}))
    resume = None
    if status == OPEN and inp.hold is None:
        resume = "dispute_rejected" if req.outcome == "rejected" else "dispute_upheld"
    return Resolution(events, record, plan_record, resume)


def overdue(dispute: DisputeState) -> tuple[list[EventSpec], TaskRecord]:
    """The dispute was not answered within its SLA: raised once, as an event and a task."""
    dispute.overdue_raised = True
    events = [EventSpec("dispute_overdue", {"dispute_id": dispute.dispute_id})]
    task = TaskRecord(
        kind="dispute_overdue",
        due_at=dispute.sla_at,
        data={"dispute_id": dispute.dispute_id},
    )
    return events, task


def settled_by_payment(inp: InvoiceWorkflowInput) -> tuple[list[EventSpec], DisputeRecord] | None:
    """A payment paid the invoice: an open dispute is closed by it."""
    if inp.status != PAID or inp.dispute is None:
        return None
    dispute = inp.dispute
    inp.dispute = None
    events = [EventSpec("dispute_closed", {"dispute_id": dispute.dispute_id, "by": "payment"})]
    return events, DisputeRecord(dispute_id=dispute.dispute_id, status="closed")
