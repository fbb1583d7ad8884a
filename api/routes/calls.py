"""Call tasks: a policy step on the ``call`` channel puts a call on the worklist; the
specialist records how it went (``arflow.invoices.calls``)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, SettingsDep, Specialist, TemporalDep
from arflow.invoices import calls
from models.collection import CallOutcome, CallResult, TaskPublic

router = APIRouter(prefix="/v1/call-tasks", tags=["specialist actions"])


@router.post("/{task_id}/outcome", response_model=CallResult)
async def call_outcome(
    task_id: int,
    body: CallOutcome,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> CallResult:
    """Record the call. ``reached`` starts the policy's call cooldown (no call for 7 days after
    a conversation); ``wrong_number`` blocks calls and SMS to that number, so the next steps
    fall back to other channels; a promise made on the call holds reminders like any promise."""
    task, invoice = await calls.record_outcome(session, client, settings, task_id, body, who.actor)
    return CallResult(
        task=TaskPublic.model_validate(task, from_attributes=True),
        invoice_status=invoice.status,
        hold=invoice.hold,
    )
