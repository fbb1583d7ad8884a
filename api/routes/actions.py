"""Specialist actions on one invoice. Those that change collection go to the invoice's
workflow as updates and answer with the invoice's new state; assignment and notes are the
API's own facts and are written directly (``arflow.invoices.actions``)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Admin, IdempotencyKey, SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from arflow.invoices import actions
from arflow.invoices import service as services
from models import Dispute, InvoiceEvent, PaymentPlan, Task
from models.collection import (
    AssignBody,
    DisputeCreate,
    DisputePublic,
    DisputeResolve,
    NoteBody,
    OptionalReason,
    PauseBody,
    PlanCreate,
    PlanPublic,
    PromiseCreate,
    ReasonBody,
    TaskPublic,
)
from models.invoice import InvoiceEventPublic, InvoicePublic
from workflows.types import (
    ActorRequest,
    InstallmentRequest,
    OpenDisputeRequest,
    PauseRequest,
    PlanRequest,
    PromiseRequest,
    ResolveDisputeRequest,
)

router = APIRouter(prefix="/v1", tags=["specialist actions"])


@router.post("/invoices/{invoice_id}/disputes", response_model=InvoicePublic)
async def open_dispute(
    invoice_id: int,
    body: DisputeCreate,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoicePublic:
    """Reminders stop at once; the invoice is ``disputed`` until the dispute is resolved."""
    request = OpenDisputeRequest(
        reason=body.reason, actor=who.actor, amount_minor=body.amount_minor
    )
    return await services.run_action(
        session, client, settings, invoice_id, "open_dispute", request, key
    )


@router.get("/invoices/{invoice_id}/disputes", response_model=list[DisputePublic])
def list_disputes(invoice_id: int, session: SessionDep, _: Viewer) -> list[Dispute]:
    return actions.list_disputes(session, invoice_id)


@router.post("/invoices/{invoice_id}/disputes/{dispute_id}/resolve", response_model=InvoicePublic)
async def resolve_dispute(
    invoice_id: int,
    dispute_id: int,
    body: DisputeResolve,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoicePublic:
    """Upheld (with an optional credit) or rejected (dunning resumes without a burst)."""
    actions.dispute_to_resolve(session, invoice_id, dispute_id)
    request = ResolveDisputeRequest(
        dispute_id=dispute_id,
        outcome=body.outcome,
        note=body.note,
        actor=who.actor,
        credit_minor=body.credit_minor,
    )
    return await services.run_action(
        session, client, settings, invoice_id, "resolve_dispute", request, key
    )


@router.post("/invoices/{invoice_id}/payment-plan", response_model=InvoicePublic)
async def agree_plan(
    invoice_id: int,
    body: PlanCreate,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoicePublic:
    """The workflow follows the plan instead of the original due date."""
    request = PlanRequest(
        installments=[
            InstallmentRequest(due_date=i.due_date.isoformat(), amount_minor=i.amount_minor)
            for i in body.installments
        ],
        note=body.note,
        actor=who.actor,
    )
    return await services.run_action(
        session, client, settings, invoice_id, "set_plan", request, key
    )


@router.get("/invoices/{invoice_id}/payment-plan", response_model=PlanPublic)
def get_plan(invoice_id: int, session: SessionDep, _: Viewer) -> PaymentPlan:
    """The invoice's latest plan, each instalment ``pending``, ``paid``, ``late`` or ``missed``."""
    return actions.get_plan(session, invoice_id)


@router.delete("/invoices/{invoice_id}/payment-plan", response_model=InvoicePublic)
async def cancel_plan(
    invoice_id: int,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
    reason: str = "",
) -> InvoicePublic:
    request = ActorRequest(reason=reason, actor=who.actor)
    return await services.run_action(
        session, client, settings, invoice_id, "cancel_plan", request, key
    )


@router.post("/invoices/{invoice_id}/promise", response_model=InvoicePublic)
async def promise_to_pay(
    invoice_id: int,
    body: PromiseCreate,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoicePublic:
    """Reminders wait until the promised date (plus the policy's grace)."""
    request = PromiseRequest(
        promised_date=body.promised_date.isoformat(),
        amount_minor=body.amount_minor,
        actor=who.actor,
        note=body.note,
    )
    return await services.run_action(session, client, settings, invoice_id, "promise", request, key)


@router.post("/invoices/{invoice_id}/pause", response_model=InvoicePublic)
async def pause(
    invoice_id: int,
    body: PauseBody,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoicePublic:
    """Nothing is sent until ``until`` (00:00 in the customer's zone) or a resume."""
    request = PauseRequest(
        reason=body.reason,
        actor=who.actor,
        until=body.until.isoformat() if body.until else None,
    )
    return await services.run_action(session, client, settings, invoice_id, "pause", request, key)


@router.post("/invoices/{invoice_id}/resume", response_model=InvoicePublic)
async def resume(
    invoice_id: int,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
    body: OptionalReason | None = None,
) -> InvoicePublic:
    request = ActorRequest(reason=body.reason if body else "", actor=who.actor)
    return await services.run_action(session, client, settings, invoice_id, "resume", request, key)


@router.post("/invoices/{invoice_id}/write-off", response_model=InvoicePublic)
async def write_off(
    invoice_id: int,
    body: ReasonBody,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Admin,
    key: IdempotencyKey = None,
) -> InvoicePublic:
    """Close as ``written_off``; the open balance stays recorded for reports."""
    request = ActorRequest(reason=body.reason, actor=who.actor)
    return await services.run_action(
        session, client, settings, invoice_id, "write_off", request, key
    )


@router.post("/invoices/{invoice_id}/assign", response_model=InvoicePublic)
def assign(
    invoice_id: int,
    body: AssignBody,
    session: SessionDep,
    settings: SettingsDep,
    who: Specialist,
) -> InvoicePublic:
    """The collector who owns the invoice (the API's own fact: no workflow involved)."""
    invoice = actions.assign(session, invoice_id, body.collector, who.actor)
    return services.public(invoice, settings)


@router.post("/invoices/{invoice_id}/notes", response_model=InvoiceEventPublic, status_code=201)
def add_note(
    invoice_id: int,
    body: NoteBody,
    session: SessionDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoiceEvent:
    """A free-text note on the timeline (closed invoices take notes too)."""
    return actions.add_note(session, invoice_id, body.text, who.actor, key)


@router.get("/worklist", response_model=list[TaskPublic])
def worklist(
    session: SessionDep, _: Viewer, kind: str | None = None, status: str = "open"
) -> list[Task]:
    """Open tasks for specialists (e.g. disputes past their resolution deadline)."""
    return actions.worklist(session, kind, status)
