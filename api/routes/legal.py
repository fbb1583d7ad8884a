"""The legal stage of an invoice: its case and documents (the workflow opens the case)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import SessionDep, SettingsDep, Specialist, Viewer
from arflow.legal import service as legal
from models.legal import LegalCasePublic, LegalDocumentIn

router = APIRouter(prefix="/v1/invoices", tags=["legal"])


@router.get("/{invoice_id}/legal", response_model=LegalCasePublic)
def get_legal_case(invoice_id: int, session: SessionDep, _: Viewer) -> LegalCasePublic:
    """The invoice's legal case with its documents; 404 if it has none."""
    return legal.legal_case(session, invoice_id)


@router.post("/{invoice_id}/legal/documents", response_model=LegalCasePublic, status_code=201)
def add_legal_document(
    invoice_id: int, body: LegalDocumentIn, session: SessionDep, who: Specialist
) -> LegalCasePublic:
    """Add a document kept elsewhere (a court filing, a lawyer's letter, a judgment) by its URL
    or document-system id; 409 if the invoice has no legal case."""
    return legal.add_document(session, invoice_id, body, who.actor)


@router.get(
    "/{invoice_id}/legal/documents/{n}",
    response_class=FileResponse,
    responses={200: {"content": {"application/pdf": {}}}},
)
def get_legal_document(
    invoice_id: int, n: int, session: SessionDep, settings: SettingsDep, _: Viewer
) -> FileResponse:
    """A generated document of the case (the claim summary PDF), by its number from 1; 404 for
    a document added by reference."""
    path, name = legal.generated_file(session, invoice_id, n, settings.legal_folder)
    return FileResponse(path, media_type="application/pdf", filename=name)
