"""The legal stage through the API: the case with its documents, documents added by hand, and
the generated ones as files. The workflow's ``open_legal`` activity opens the case."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from arflow.errors import NotFound, conflict, not_found
from arflow.invoices.service import get_invoice
from arflow.invoices.timeline import add_event
from arflow.legal.cases import legal_case_of
from models import LegalCase
from models.legal import GENERATED, LegalCasePublic, LegalDocumentIn, LegalDocumentPublic
from models.types import utcnow


def _case(session: Session, invoice_id: int) -> LegalCase:
    get_invoice(session, invoice_id)
    case = legal_case_of(session, invoice_id)
    if case is None:
        raise not_found("legal case of invoice", invoice_id)
    return case


def public(case: LegalCase) -> LegalCasePublic:
    assert case.id is not None
    documents = []
    for n, doc in enumerate(case.documents, start=1):
        generated = doc.get("kind") == GENERATED
        documents.append(
            LegalDocumentPublic(
                n=n,
                name=str(doc.get("name", "")),
                kind=str(doc.get("kind", "")),
                reference=str(doc.get("reference", "")),
                note=doc.get("note"),
                added_at=datetime.fromisoformat(str(doc["added_at"])),
                added_by=str(doc.get("added_by", "")),
                download_url=(
                    f"/v1/invoices/{case.invoice_id}/legal/documents/{n}" if generated else None
                ),
            )
        )
    return LegalCasePublic(
        id=case.id,
        invoice_id=case.invoice_id,
        stage=case.stage,
        status=case.status,
        amount_minor=case.amount_minor,
        currency=case.currency,
        opened_by=case.opened_by,
        opened_at=case.opened_at,
        closed_at=case.closed_at,
        documents=documents,
    )


def legal_case(session: Session, invoice_id: int) -> LegalCasePublic:
    """The invoice's legal case; 404 for an unknown invoice or one without a case."""
    return public(_case(session, invoice_id))


def add_document(
    session: Session, invoice_id: int, body: LegalDocumentIn, actor: str
) -> LegalCasePublic:
    """Append a document kept elsewhere to the case, with a ``legal_document_added`` event;
    409 if the invoice has no legal case. The case's row is locked first, so two documents
    added at once are both kept."""
    get_invoice(session, invoice_id)
    locked = session.exec(
        update(LegalCase)
        .where(col(LegalCase.invoice_id) == invoice_id)
        .values(invoice_id=invoice_id)
    )
    if locked.rowcount == 0:
        raise conflict(f"invoice {invoice_id} has no legal case: it has not reached that stage")
    case = legal_case_of(session, invoice_id)
    assert case is not None
    session.refresh(case)
    now = utcnow()
    document: dict[str, Any] = {
        "name": body.name,
        "kind": body.kind,
        "reference": body.reference,
        "added_at": now.isoformat(),
        "added_by": actor,
        **({"note": body.note} if body.note else {}),
    }
    case.documents = [*case.documents, document]  # a new list: the JSON column sees the change
    session.add(case)
    add_event(
        session,
        invoice_id,
        "legal_document_added",
        {
            "legal_case_id": case.id,
            "n": len(case.documents),
            "name": body.name,
            "kind": body.kind,
            "reference": body.reference,
            **({"note": body.note} if body.note else {}),
        },
        actor=actor,
        at=now,
    )
    session.commit()
    session.refresh(case)
    return public(case)


def generated_file(
    session: Session, invoice_id: int, n: int, legal_folder: str
) -> tuple[Path, str]:
    """(path, name) of the case's document ``n`` (from 1) if arflow generated it; 404 for
    another number, a document added by reference, or a file no longer there."""
    case = _case(session, invoice_id)
    if not 1 <= n <= len(case.documents):
        raise not_found(f"document {n} of the legal case of invoice", invoice_id)
    doc = case.documents[n - 1]
    name = str(doc.get("name", f"document-{n}.pdf"))
    if doc.get("kind") != GENERATED:
        raise NotFound(
            f"document {n} ({name}) is a reference kept elsewhere, not a file arflow holds: "
            f"{doc.get('reference')}",
        )
    path = Path(str(doc.get("reference", ""))).resolve()
    folder = Path(legal_folder).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise NotFound(f"the file of document {n} ({name}) is not available")
    return path, name
