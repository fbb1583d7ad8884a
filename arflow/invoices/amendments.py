"""Corrections of an issued invoice: a credit note lowers its balance; a new due date or
another policy moves its dunning schedule (``PATCH /v1/invoices/{id}``).

Each goes to the invoice's workflow as a recorded update (workflows/trust.py), which applies
it between reminders and records the result (``record_change``): nothing already sent is sent
again, and steps whose time has passed under the new schedule are recorded as skipped.

A credit note is stored first (``pending``) under its own ``external_id``, then sent: the same
``external_id`` and body sent again answers with the first outcome (a retry after a timeout
resends the same update id, which Temporal applies once); another body is a 409.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.config import Settings
from arflow.errors import Conflict, Invalid, conflict, unprocessable
from arflow.invoices.service import get_invoice, run_update, switch_policy
from models import CreditNote, DunningPolicy, Invoice
from models.invoice import CreditNoteCreate, InvoiceAmend
from workflows.types import CLOSED_STATUSES, CreditNoteRequest, DueDateRequest

PENDING, APPLIED, REFUSED = "pending", "applied", "refused"


async def issue_credit_note(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    body: CreditNoteCreate,
    actor: str,
) -> CreditNote:
    """Store the credit note and have the workflow apply it; the note as it ended (``applied``),
    or the refusal raised (409 for the invoice's state, 422 for the amount) with the note kept
    ``refused`` and the reason on it."""
    note = await asyncio.to_thread(_claim, session, invoice_id, body, actor)
    if note.status == APPLIED:
        return note
    if note.status == REFUSED:
        raise conflict(f"credit note {note.external_id!r} was refused: {note.detail}")
    assert note.id is not None
    request = CreditNoteRequest(
        credit_note_id=note.id, amount_minor=note.amount_minor, reason=note.reason, actor=actor
    )
    try:
        await run_update(
            session,
            client,
            settings,
            invoice_id,
            "credit_note",
            request,
            update_id=f"credit-note-{note.id}",
        )
    except (Conflict, Invalid) as exc:
        await asyncio.to_thread(_settle, session, note, REFUSED, exc.message)
        raise
    await asyncio.to_thread(_settle, session, note, APPLIED, None)
    return note


def _claim(session: Session, invoice_id: int, body: CreditNoteCreate, actor: str) -> CreditNote:
    """The credit note ``body`` names: the stored one (same content) or a new pending one."""
    stored = _by_external_id(session, body.external_id)
    if stored is not None:
        return _same(stored, invoice_id, body)
    invoice = get_invoice(session, invoice_id)
    if invoice.status in CLOSED_STATUSES:
        raise conflict(f"invoice {invoice_id} is already {invoice.status}")
    if body.amount_minor > invoice.balance_minor:
        raise unprocessable(
            f"credit note amount {body.amount_minor} is more than the open balance "
            f"{invoice.balance_minor}"
        )
    note = CreditNote(
        external_id=body.external_id,
        invoice_id=invoice_id,
        amount_minor=body.amount_minor,
        currency=invoice.currency,
        reason=body.reason,
        actor=actor,
    )
    session.add(note)
    try:
        session.commit()
    except IntegrityError:  # the same number, sent twice at once
        session.rollback()
        stored = _by_external_id(session, body.external_id)
        if stored is None:
            raise
        return _same(stored, invoice_id, body)
    session.refresh(note)
    return note


def _by_external_id(session: Session, external_id: str) -> CreditNote | None:
    return session.exec(select(CreditNote).where(CreditNote.external_id == external_id)).first()


def _same(stored: CreditNote, invoice_id: int, body: CreditNoteCreate) -> CreditNote:
    if (stored.invoice_id, stored.amount_minor, stored.reason) != (
        invoice_id,
        body.amount_minor,
        body.reason,
    ):
        raise conflict(
            f"credit note {body.external_id!r} exists with another invoice, amount or reason"
        )
    return stored


def _settle(session: Session, note: CreditNote, status: str, detail: str | None) -> None:
    note.status, note.detail = status, detail
    session.add(note)
    session.commit()
    session.refresh(note)


def credit_notes(session: Session, invoice_id: int) -> list[CreditNote]:
    get_invoice(session, invoice_id)
    stmt = select(CreditNote).where(CreditNote.invoice_id == invoice_id)
    return list(session.exec(stmt.order_by(col(CreditNote.id))).all())


async def amend_invoice(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    body: InvoiceAmend,
    actor: str,
) -> Invoice:
    """A corrected due date and/or another policy, each through the workflow. Everything is
    checked before anything is sent, so a bad policy name changes nothing."""
    invoice = get_invoice(session, invoice_id)
    policy = None
    if body.policy_name is not None:
        policy = session.exec(
            select(DunningPolicy).where(DunningPolicy.name == body.policy_name)
        ).first()
        if policy is None:
            raise unprocessable(f"policy {body.policy_name!r} not found")
        if policy.id == invoice.policy_id:
            policy = None
    if body.due_date is not None and body.due_date < invoice.issued_on:
        raise unprocessable("due_date must not be before issued_on")
    if body.due_date is not None and body.due_date != invoice.due_date:
        request = DueDateRequest(
            due_date=body.due_date.isoformat(), actor=actor, reason=body.reason
        )
        invoice, _ = await run_update(
            session, client, settings, invoice_id, "change_due_date", request
        )
    if policy is not None:
        reason = body.reason or "policy changed by a specialist"
        invoice = await switch_policy(session, client, settings, invoice_id, policy, actor, reason)
    return invoice
