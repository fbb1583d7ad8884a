"""Specialist actions on one invoice. Those that change collection go to the invoice's
workflow as updates and answer with the invoice's new state; assignment and notes are the
API's own facts and are written directly (``arflow.invoices.actions``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Admin, IdempotencyKey, SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from api.idempotency import IdempotentRoute
from arflow.invoices import account_actions, actions
from arflow.invoices import service as services
from models import CreditApproval, Dispute, InvoiceEvent, PaymentPlan, Task
from models.account_plan import AccountPlanCreate, AccountPlanPublic
from models.approval import CreditApprovalPublic
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

router = APIRouter(prefix="/v1", tags=["specialist actions"], route_class=IdempotentRoute)


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
    invoice = await actions.open_dispute(
        session, client, settings, invoice_id, body, who.actor, key
    )
    return services.public(invoice, settings)


@router.get("/invoices/{invoice_id}/disputes", response_model=list[DisputePublic])
def list_disputes(invoice_id: int, session: SessionDep, _: Viewer) -> list[Dispute]:
    return actions.list_disputes(session, invoice_id)


@router.post(
    "/invoices/{invoice_id}/disputes/{dispute_id}/resolve",
    response_model=InvoicePublic,
    responses={
        202: {
            "model": CreditApprovalPublic,
            "description": "the credit waits for an admin or a second specialist",
        }
    },
)
async def resolve_dispute(
    invoice_id: int,
    dispute_id: int,
    body: DisputeResolve,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoicePublic | JSONResponse:
    """Upheld (with an optional credit) or rejected (dunning resumes without a burst). A
    specialist's credit above the policy's ``dispute_credit_approval_minor`` is not applied:
    202 with the pending approval (``POST /v1/approvals/{id}/approve``)."""
    outcome = await actions.resolve_dispute(
        session, client, settings, invoice_id, dispute_id, body, who, key
    )
    if isinstance(outcome, CreditApproval):
        shown = CreditApprovalPublic.model_validate(outcome)
        return JSONResponse(shown.model_dump(mode="json"), status_code=202)
    return services.public(outcome, settings)


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
    invoice = await actions.agree_plan(session, client, settings, invoice_id, body, who.actor, key)
    return services.public(invoice, settings)


@router.post("/customers/{customer_id}/payment-plan", response_model=AccountPlanPublic)
async def agree_account_plan(
    customer_id: int,
    body: AccountPlanCreate,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> AccountPlanPublic:
    """One plan across several invoices of the customer (``invoice_ids``, or every open one
    without a plan and not disputed, in one currency): the instalments, summing to their open
    balance, pay the oldest invoice first, one split across two when it is larger than what
    is left. Answers each invoice's part and state; 409 naming the invoice that refused, the
    plans agreed before it cancelled."""
    return await account_actions.agree_account_plan(
        session, client, settings, customer_id, body, who.actor
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
    invoice = await actions.by_actor(
        session, client, settings, invoice_id, "cancel_plan", reason, who.actor, key
    )
    return services.public(invoice, settings)


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
    invoice = await actions.promise(session, client, settings, invoice_id, body, who.actor, key)
    return services.public(invoice, settings)


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
    invoice = await actions.pause(session, client, settings, invoice_id, body, who.actor, key)
    return services.public(invoice, settings)


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
    reason = body.reason if body else ""
    invoice = await actions.by_actor(
        session, client, settings, invoice_id, "resume", reason, who.actor, key
    )
    return services.public(invoice, settings)


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
    invoice = await actions.by_actor(
        session, client, settings, invoice_id, "write_off", body.reason, who.actor, key
    )
    return services.public(invoice, settings)


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
