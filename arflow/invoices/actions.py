"""A specialist's own facts about one invoice and what they read: the collector who owns it,
notes on its timeline, its disputes, payment plan and outbox messages, and the worklist.

Actions that change collection (a dispute, a plan, a pause) go to the invoice's workflow as
updates: ``arflow.invoices.service.run_action``."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.errors import conflict, not_found
from arflow.invoices.service import get_invoice
from arflow.invoices.timeline import add_event
from models import Dispute, Invoice, InvoiceEvent, OutboxMessage, PaymentPlan, Task
from models.types import utcnow


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


def dispute_to_resolve(session: Session, invoice_id: int, dispute_id: int) -> Dispute:
    """The invoice's dispute ``dispute_id``, still open (404 when it is not this invoice's,
    409 when it is resolved already)."""
    dispute = session.get(Dispute, dispute_id)
    if dispute is None or dispute.invoice_id != invoice_id:
        raise not_found("dispute", dispute_id)
    if dispute.status != "open":
        raise conflict(f"dispute {dispute_id} is already {dispute.status}")
    return dispute


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
