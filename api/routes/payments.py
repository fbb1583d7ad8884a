"""Money in: bank statement imports, the unmatched queue, CSV mappings, customer credit."""

from __future__ import annotations

from typing import Literal
from uuid import uuid4

from fastapi import APIRouter, File, Form, Query, UploadFile

from api.deps import IdempotencyKey, SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from api.errors import ApiError, unprocessable
from api.idempotency import IdempotentRoute
from api.limits import max_body
from arflow.payments import reconcile
from arflow.payments.service import apply_credit, credit_of
from models import ReceivedLine, StatementImport
from models.bank import (
    LINE_STATUSES,
    AccountCounts,
    AppliedLine,
    ApplyLine,
    CreditEntryPublic,
    CreditPublic,
    CsvMappingIn,
    CsvMappingPublic,
    DismissLine,
    ImportReport,
    ReceivedLinePage,
    ReceivedLinePublic,
    SavedCsvMapping,
    StatementImportPublic,
    UseCredit,
)
from models.payment import DeliveryPublic

router = APIRouter(prefix="/v1", tags=["payments in"], route_class=IdempotentRoute)
MAX_STATEMENT_BYTES = 20 * 1024 * 1024
#: Room for the multipart envelope (boundaries, part headers, the mapping field) around the file.
MULTIPART_ROOM = 64 * 1024


@router.post("/bank-statements", status_code=201, response_model=ImportReport)
@max_body(MAX_STATEMENT_BYTES + MULTIPART_ROOM)
async def import_bank_statement(
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    file: UploadFile = File(description="camt.053 XML, MT940 or CSV; the format is detected"),
    mapping: str | None = Form(default=None, description="saved CSV mapping (CSV files only)"),
) -> ImportReport:
    """Import a statement: matched lines pay their invoices, the rest wait in the unmatched
    queue. The same file (or an overlapping statement) again applies nothing twice."""
    content = await file.read(MAX_STATEMENT_BYTES + 1)
    if len(content) > MAX_STATEMENT_BYTES:
        raise ApiError(
            413, "too_large", f"the statement is larger than {MAX_STATEMENT_BYTES} bytes"
        )
    result, deliveries = await reconcile.import_statement(
        session,
        client,
        settings,
        file.filename or "statement",
        content,
        mapping=mapping,
        source="api",
        actor=who.actor,
    )
    return ImportReport(
        import_id=result.import_id,
        filename=result.filename,
        format=result.format,
        counts=result.counts,
        errors=result.errors,
        lines=result.lines,
        deliveries=[DeliveryPublic(**d.__dict__) for d in deliveries],
        accounts=[AccountCounts(**a) for a in result.accounts],
    )


@router.get("/bank-statements", response_model=list[StatementImportPublic])
def list_imports(
    session: SessionDep,
    _: Viewer,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> list[StatementImport]:
    return reconcile.list_imports(session, limit, offset)


# -- unmatched queue --------------------------------------------------------------------


@router.get("/unmatched-payments", response_model=ReceivedLinePage)
def unmatched_payments(
    session: SessionDep,
    _: Viewer,
    status: Literal["unmatched", "matched", "applied", "dismissed", "ignored"] = "unmatched",
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> ReceivedLinePage:
    """Receipts waiting for a specialist (``status`` shows the others, e.g. ``matched``)."""
    assert status in LINE_STATUSES
    rows = reconcile.lines_of(session, status, limit, offset)
    total = reconcile.count_lines(session, status)
    return ReceivedLinePage(
        items=[ReceivedLinePublic.model_validate(r, from_attributes=True) for r in rows],
        total=total,
    )


@router.post("/unmatched-payments/{line_id}/apply", response_model=AppliedLine)
async def apply_unmatched(
    line_id: int,
    body: ApplyLine,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> AppliedLine:
    """Apply a queued receipt: amounts to invoices, any rest to a customer's credit."""
    if not body.allocations and body.credit_customer_id is None:
        raise unprocessable("give allocations, credit_customer_id, or both")
    line, deliveries = await reconcile.apply_and_deliver(
        session,
        client,
        settings,
        line_id,
        [(a.invoice_id, a.amount_minor) for a in body.allocations],
        body.credit_customer_id,
        body.note,
        who.actor,
    )
    return AppliedLine(
        line=ReceivedLinePublic.model_validate(line, from_attributes=True),
        deliveries=[DeliveryPublic(**d.__dict__) for d in deliveries],
    )


@router.post("/unmatched-payments/{line_id}/dismiss", response_model=ReceivedLinePublic)
def dismiss_unmatched(
    line_id: int, body: DismissLine, session: SessionDep, who: Specialist
) -> ReceivedLine:
    """Take a receipt out of the queue without applying it (e.g. it was sent back)."""
    return reconcile.dismiss_line(session, line_id, body.note, who.actor)


# -- CSV mappings -------------------------------------------------------------------------


@router.post("/csv-mappings", status_code=201, response_model=CsvMappingPublic)
def create_mapping(body: CsvMappingIn, session: SessionDep, _: Specialist) -> SavedCsvMapping:
    """Save how one bank's CSV export reads (checked now, used by name on import)."""
    return reconcile.save_mapping(session, body.name, body.columns)


@router.get("/csv-mappings", response_model=list[CsvMappingPublic])
def list_mappings(session: SessionDep, _: Viewer) -> list[SavedCsvMapping]:
    return reconcile.list_mappings(session)


# -- customer credit ------------------------------------------------------------------------


@router.get("/customers/{customer_id}/credit", response_model=CreditPublic)
def customer_credit(customer_id: int, session: SessionDep, _: Viewer) -> CreditPublic:
    balances, entries = credit_of(session, customer_id)
    return CreditPublic(
        customer_id=customer_id,
        balances=balances,
        entries=[CreditEntryPublic.model_validate(e, from_attributes=True) for e in entries],
    )


@router.post("/customers/{customer_id}/credit/apply", response_model=DeliveryPublic)
async def use_credit(
    customer_id: int,
    body: UseCredit,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> DeliveryPublic:
    """Pay one of the customer's open invoices from their credit balance (e.g. an earlier
    overpayment). Send an ``Idempotency-Key`` so a retry does not use the credit twice."""
    payment, outcome = await apply_credit(
        session,
        client,
        settings,
        customer_id,
        body.invoice_id,
        body.amount_minor,
        who.actor,
        key or uuid4().hex,
    )
    assert payment.id is not None
    return DeliveryPublic(payment_id=payment.id, invoice_id=payment.invoice_id, outcome=outcome)
