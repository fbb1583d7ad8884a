"""Specialist actions on one invoice. Those that change collection go to the invoice's
workflow as updates and answer with the invoice's new state; assignment and notes are the
API's own facts and are written directly."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from api.deps import Admin, SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from api.errors import not_found
from arflow.invoices import service as services
from arflow.invoices.timeline import add_event
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
from models.types import utcnow
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
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="the same key again (a double click, a retry) applies the action once",
    ),
]


async def _act(
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    invoice_id: int,
    update: str,
    request: object,
    key: str | None,
) -> InvoicePublic:
    invoice, _ = await services.run_update(
        session, client, settings, invoice_id, update, request, key
    )
    return services.public(invoice, settings)


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
    return await _act(session, settings, client, invoice_id, "open_dispute", request, key)


@router.get("/invoices/{invoice_id}/disputes", response_model=list[DisputePublic])
def list_disputes(invoice_id: int, session: SessionDep, _: Viewer) -> list[Dispute]:
    services.get_invoice(session, invoice_id)
    stmt = select(Dispute).where(Dispute.invoice_id == invoice_id).order_by(col(Dispute.id))
    return list(session.exec(stmt).all())


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
    dispute = session.get(Dispute, dispute_id)
    if dispute is None or dispute.invoice_id != invoice_id:
        raise not_found("dispute", dispute_id)
    if dispute.status != "open":
        raise services.conflict(f"dispute {dispute_id} is already {dispute.status}")
    request = ResolveDisputeRequest(
        dispute_id=dispute_id,
        outcome=body.outcome,
        note=body.note,
        actor=who.actor,
        credit_minor=body.credit_minor,
    )
    return await _act(session, settings, client, invoice_id, "resolve_dispute", request, key)


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
    return await _act(session, settings, client, invoice_id, "set_plan", request, key)


@router.get("/invoices/{invoice_id}/payment-plan", response_model=PlanPublic)
def get_plan(invoice_id: int, session: SessionDep, _: Viewer) -> PaymentPlan:
    """The invoice's latest plan, each instalment ``pending``, ``paid``, ``late`` or ``missed``."""
    services.get_invoice(session, invoice_id)
    plan = session.exec(
        select(PaymentPlan)
        .where(PaymentPlan.invoice_id == invoice_id)
        .order_by(col(PaymentPlan.id).desc())
    ).first()
    if plan is None:
        raise not_found("payment plan of invoice", invoice_id)
    return plan


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
    return await _act(session, settings, client, invoice_id, "cancel_plan", request, key)


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
    return await _act(session, settings, client, invoice_id, "promise", request, key)


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
    return await _act(session, settings, client, invoice_id, "pause", request, key)


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
    return await _act(session, settings, client, invoice_id, "resume", request, key)


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
    return await _act(session, settings, client, invoice_id, "write_off", request, key)


@router.post("/invoices/{invoice_id}/assign", response_model=InvoicePublic)
def assign(
    invoice_id: int,
    body: AssignBody,
    session: SessionDep,
    settings: SettingsDep,
    who: Specialist,
) -> InvoicePublic:
    """The collector who owns the invoice (the API's own fact: no workflow involved)."""
    invoice = services.get_invoice(session, invoice_id)
    if invoice.collector != body.collector:
        previous = invoice.collector
        invoice.collector = body.collector
        invoice.updated_at = utcnow()
        session.add(invoice)
        add_event(
            session,
            invoice_id,
            "assigned",
            {"collector": body.collector, "previous": previous},
            actor=who.actor,
        )
        session.commit()
        session.refresh(invoice)
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
    services.get_invoice(session, invoice_id)
    dedupe = f"note:{key}" if key else None
    if dedupe:
        existing = session.exec(
            select(InvoiceEvent).where(
                InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.dedupe_key == dedupe
            )
        ).first()
        if existing is not None:
            return existing
    note = InvoiceEvent(
        invoice_id=invoice_id,
        kind="note",
        data={"text": body.text},
        actor=who.actor,
        dedupe_key=dedupe,
        at=utcnow(),
    )
    session.add(note)
    try:
        session.commit()
    except IntegrityError:  # the same key at the same moment: the other request stored it
        session.rollback()
        found = session.exec(
            select(InvoiceEvent).where(
                InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.dedupe_key == dedupe
            )
        ).one()
        return found
    session.refresh(note)
    return note


@router.get("/worklist", response_model=list[TaskPublic])
def worklist(
    session: SessionDep, _: Viewer, kind: str | None = None, status: str = "open"
) -> list[Task]:
    """Open tasks for specialists (e.g. disputes past their resolution deadline)."""
    stmt = select(Task).where(Task.status == status)
    if kind:
        stmt = stmt.where(Task.kind == kind)
    return list(session.exec(stmt.order_by(col(Task.due_at), col(Task.id))).all())
