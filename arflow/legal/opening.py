"""Opening the legal stage of an invoice: the case, its generated documents, a task and the
record.

The workflow decides that the escalation ladder has reached its legal stage; ``open_legal``
records it: a ``LegalCase`` (one per invoice), a claim summary PDF in the legal folder listed
among the case's documents, a ``legal_review`` task on the specialists' worklist, a
``legal_stage`` timeline event, and the invoice escalated at that stage. A retry finds the
case and does nothing; a retry after a crash before the commit rewrites the same file and
records everything once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.errors import not_found
from arflow.invoices.tasks import new_task
from arflow.invoices.timeline import (
    WORKFLOW_ACTOR,
    add_event,
    commit_once,
    record_skipped,
    set_next_action,
)
from arflow.legal.cases import (
    GENERATED,
    LEGAL_TASK,
    OPENED_KEY,
    WENT_OUT,
    claim_summary_name,
    legal_case_of,
    write_atomically,
)
from arflow.messages.context import charges_not_waived
from arflow.messages.documents import Seller, claim_summary_pdf
from models import AgencyPlacement, Customer, Invoice, LegalCase, OutboxMessage, Payment
from models.types import utcnow
from workflows.types import ESCALATED, LegalInput

log = logging.getLogger("arflow.legal")


def open_legal(session: Session, folder: Path, seller: Seller, inp: LegalInput) -> None:
    """Open the invoice's legal case (once): documents, a task, the event, the status.
    Documents go to ``folder``, one sub-folder per invoice. ``NotFound`` when the invoice
    does not exist."""
    if legal_case_of(session, inp.invoice_id) is not None:
        return  # a retry of an attempt that committed
    invoice = session.get(Invoice, inp.invoice_id)
    if invoice is None:
        raise not_found("invoice", inp.invoice_id)
    customer = session.get(Customer, invoice.customer_id)
    assert customer is not None  # a foreign key
    now = utcnow()
    document = claim_summary(session, folder, seller, invoice, customer, inp)
    names = [document["name"]]
    case = LegalCase(
        invoice_id=inp.invoice_id,
        stage=inp.stage,
        amount_minor=inp.balance_minor,
        currency=inp.currency,
        documents=[document],
        opened_by=WORKFLOW_ACTOR,
        opened_at=now,
    )
    session.add(case)
    try:
        session.flush()
    except IntegrityError:  # a concurrent attempt opened it: its record counts
        session.rollback()
        if legal_case_of(session, inp.invoice_id) is None:
            raise
        return
    new_task(
        session,
        inp.invoice_id,
        LEGAL_TASK,
        {
            "legal_case_id": case.id,
            "stage": inp.stage,
            "amount_minor": inp.balance_minor,
            "currency": inp.currency,
            "documents": names,
        },
        due_at=now,
    )
    record_skipped(session, inp.invoice_id, inp.skipped, "the legal stage was already due")
    add_event(
        session,
        inp.invoice_id,
        "legal_stage",
        {
            "legal_case_id": case.id,
            "stage": inp.stage,
            "amount_minor": inp.balance_minor,
            "currency": inp.currency,
            "documents": names,
        },
        dedupe_key=OPENED_KEY,
        at=now,
    )
    invoice.status = ESCALATED
    invoice.escalation_stage = inp.stage
    invoice.updated_at = now
    set_next_action(invoice, None)
    session.add(invoice)
    commit_once(session, inp.invoice_id, OPENED_KEY)


def claim_summary(
    session: Session,
    folder: Path,
    seller: Seller,
    invoice: Invoice,
    customer: Customer,
    inp: LegalInput,
) -> dict[str, Any]:
    """Write the claim summary PDF; its entry for the case's ``documents``."""
    assert invoice.id is not None
    payments = session.exec(
        select(Payment)
        .where(Payment.invoice_id == invoice.id, Payment.status == "applied")
        .order_by(col(Payment.paid_at), col(Payment.id))
    ).all()
    messages = session.exec(
        select(OutboxMessage)
        .where(
            OutboxMessage.invoice_id == invoice.id,
            col(OutboxMessage.status).in_(WENT_OUT),
        )
        .order_by(col(OutboxMessage.created_at), col(OutboxMessage.id))
    ).all()
    placement = session.exec(
        select(AgencyPlacement).where(AgencyPlacement.invoice_id == invoice.id)
    ).first()
    now = utcnow()
    pdf = claim_summary_pdf(
        seller,
        invoice,
        customer,
        stage=inp.stage,
        balance_minor=inp.balance_minor,
        payments=payments,
        charges=charges_not_waived(session, invoice.id),
        messages=messages,
        placement=placement,
        as_of=now.astimezone(ZoneInfo(customer.timezone)).date(),
    )
    name = claim_summary_name(invoice.number)
    path = folder / f"invoice-{invoice.id}" / name
    write_atomically(path, pdf)
    log.info("claim summary of invoice %s written to %s", invoice.id, path)
    return {
        "name": name,
        "kind": GENERATED,
        "reference": str(path.resolve()),
        "added_at": now.isoformat(),
        "added_by": WORKFLOW_ACTOR,
    }
