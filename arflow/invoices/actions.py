"""What a specialist does to one invoice and reads about it. Actions that change collection (a
dispute, a plan, a promise, a pause) go to the invoice's workflow as updates and answer with
the invoice's new state; the collector who owns it and notes on its timeline are our own facts,
written directly. Also read here: its disputes, payment plan and outbox messages, the worklist.

The JSON API's routes and the dashboard's views both call these."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.access import Principal
from arflow.config import Settings
from arflow.errors import conflict, not_found
from arflow.invoices import approvals
from arflow.invoices.confirm import confirm
from arflow.invoices.service import get_invoice, run_update
from arflow.invoices.timeline import add_event
from models import (
    CreditApproval,
    Dispute,
    Invoice,
    InvoiceEvent,
    OutboxMessage,
    PaymentPlan,
    Task,
)
from models.collection import DisputeCreate, DisputeResolve, PauseBody, PlanCreate, PromiseCreate
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

#: The updates that take only a reason and the actor.
ActorUpdate = Literal["resume", "cancel_plan", "write_off", "send_now"]


def assign(session: Session, invoice_id: int, collector: str, actor: str) -> Invoice:
    """The collector who owns the invoice (the API's own fact: no workflow involved); an
    ``assigned`` event on the timeline when it changes."""
    invoice = get_invoice(session, invoice_id)
    if invoice.collector != collector:
        previous = invoice.collector
        invoice.collector = collector
        invoice.updated_at = utcnow()
        session.add(invoice)
        add_event(
            session,
            invoice_id,
            "assigned",
            {"collector": collector, "previous": previous},
            actor=actor,
        )
        session.commit()
        session.refresh(invoice)
    return invoice


def _note_with_key(session: Session, invoice_id: int, dedupe: str) -> InvoiceEvent | None:
    return session.exec(
        select(InvoiceEvent).where(
            InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.dedupe_key == dedupe
        )
    ).first()


def add_note(
    session: Session, invoice_id: int, text: str, actor: str, key: str | None = None
) -> InvoiceEvent:
    """A free-text note on the timeline (closed invoices take notes too). The same ``key``
    again answers with the note it stored first."""
    get_invoice(session, invoice_id)
    dedupe = f"note:{key}" if key else None
    if dedupe:
        existing = _note_with_key(session, invoice_id, dedupe)
        if existing is not None:
            return existing
    note = InvoiceEvent(
        invoice_id=invoice_id,
        kind="note",
        data={"text": text},
        actor=actor,
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


def list_disputes(session: Session, invoice_id: int) -> list[Dispute]:
    get_invoice(session, invoice_id)
    stmt = select(Dispute).where(Dispute.invoice_id == invoice_id).order_by(col(Dispute.id))
    return list(session.exec(stmt).all())


def get_plan(session: Session, invoice_id: int) -> PaymentPlan:
    """The invoice's latest payment plan."""
    get_invoice(session, invoice_id)
    plan = session.exec(
        select(PaymentPlan)
        .where(PaymentPlan.invoice_id == invoice_id)
        .order_by(col(PaymentPlan.id).desc())
    ).first()
    if plan is None:
        raise not_found("payment plan of invoice", invoice_id)
    return plan


def worklist(session: Session, kind: str | None = None, status: str = "open") -> list[Task]:
    """Tasks for specialists in ``status`` (of one ``kind`` if given), soonest due first."""
    stmt = select(Task).where(Task.status == status)
    if kind:
        stmt = stmt.where(Task.kind == kind)
    return list(session.exec(stmt.order_by(col(Task.due_at), col(Task.id))).all())


def messages(session: Session, invoice_id: int) -> list[OutboxMessage]:
    """The invoice's outbox messages, oldest first."""
    get_invoice(session, invoice_id)
    stmt = (
        select(OutboxMessage)
        .where(OutboxMessage.invoice_id == invoice_id)
        .order_by(col(OutboxMessage.id))
    )
    return list(session.exec(stmt).all())


# -- actions the invoice's workflow decides (updates) -------------------------------------------
# Each returns the invoice as it is after the workflow's answer; with a key, a double click
# (or a retry) is applied once (``run_update``).


async def _update(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    update: str,
    request: object,
    key: str | None,
) -> Invoice:
    invoice, _ = await run_update(session, client, settings, invoice_id, update, request, key)
    return invoice


async def open_dispute(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    body: DisputeCreate,
    actor: str,
    key: str | None = None,
) -> Invoice:
    """Reminders stop at once; the invoice is ``disputed`` until the dispute is resolved."""
    request = OpenDisputeRequest(reason=body.reason, actor=actor, amount_minor=body.amount_minor)
    return await _update(session, client, settings, invoice_id, "open_dispute", request, key)


async def resolve_dispute(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    dispute_id: int,
    body: DisputeResolve,
    who: Principal,
    key: str | None = None,
) -> Invoice | CreditApproval:
    """Upheld (with an optional credit) or rejected; 404 when the dispute is not this
    invoice's, 409 when it is resolved already or a credit for it waits for approval.
    A specialist's credit above the policy's threshold is not applied: it answers with the
    pending ``CreditApproval`` (``arflow.invoices.approvals``)."""
    invoice = get_invoice(session, invoice_id)
    dispute = session.get(Dispute, dispute_id)
    if dispute is None or dispute.invoice_id != invoice_id:
        raise not_found("dispute", dispute_id)
    if dispute.status != "open":
        raise conflict(f"dispute {dispute_id} is already {dispute.status}")
    if approvals.needs_approval(session, invoice, body, who):
        return approvals.request_approval(session, invoice, dispute, body, who)
    waiting = approvals.pending_for(session, dispute_id)
    if waiting is not None:
        raise conflict(
            f"a credit for dispute {dispute_id} is waiting for approval (approval "
            f"{waiting.id}): approve or decline it first",
            {"approval_id": waiting.id},
        )
    request = ResolveDisputeRequest(
        dispute_id=dispute_id,
        outcome=body.outcome,
        note=body.note,
        actor=who.actor,
        credit_minor=body.credit_minor,
    )
    invoice = await _update(session, client, settings, invoice_id, "resolve_dispute", request, key)
    # The customer hears the outcome (once per dispute: the confirmation's id is its key).
    await confirm(session, client, settings, invoice_id, "dispute-outcome", dispute_id)
    return invoice


async def agree_plan(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    body: PlanCreate,
    actor: str,
    key: str | None = None,
) -> Invoice:
    """The workflow follows the plan instead of the original due date."""
    request = PlanRequest(
        installments=[
            InstallmentRequest(due_date=i.due_date.isoformat(), amount_minor=i.amount_minor)
            for i in body.installments
        ],
        note=body.note,
        actor=actor,
    )
    return await _update(session, client, settings, invoice_id, "set_plan", request, key)


async def promise(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    body: PromiseCreate,
    actor: str,
    key: str | None = None,
) -> Invoice:
    """Reminders wait until the promised date (plus the policy's grace)."""
    request = PromiseRequest(
        promised_date=body.promised_date.isoformat(),
        amount_minor=body.amount_minor,
        actor=actor,
        note=body.note,
    )
    return await _update(session, client, settings, invoice_id, "promise", request, key)


async def pause(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    body: PauseBody,
    actor: str,
    key: str | None = None,
) -> Invoice:
    """Nothing is sent until ``until`` (00:00 in the customer's zone) or a resume."""
    request = PauseRequest(
        reason=body.reason, actor=actor, until=body.until.isoformat() if body.until else None
    )
    return await _update(session, client, settings, invoice_id, "pause", request, key)


async def by_actor(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    update: ActorUpdate,
    reason: str,
    actor: str,
    key: str | None = None,
) -> Invoice:
    """An update that takes only a reason: ``resume``, ``cancel_plan``, ``write_off`` or
    ``send_now``."""
    request = ActorRequest(reason=reason, actor=actor)
    return await _update(session, client, settings, invoice_id, update, request, key)


async def send_now(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    actor: str,
    key: str | None = None,
) -> Invoice:
    """Send the invoice's next reminder step now (409 with the reason when it cannot)."""
    return await by_actor(session, client, settings, invoice_id, "send_now", "send now", actor, key)
