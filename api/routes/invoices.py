from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Response

from api.deps import SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from arflow.invoices import actions, amendments
from arflow.invoices import service as services
from models import OutboxMessage
from models.invoice import (
    INVOICE_STATUSES,
    CancelBody,
    CreditNoteCreate,
    CreditNotePublic,
    InvoiceAmend,
    InvoiceCreate,
    InvoiceEventPublic,
    InvoicePage,
    InvoicePublic,
    OutboxMessagePublic,
)

router = APIRouter(prefix="/v1/invoices", tags=["invoices"])
Status = Literal[INVOICE_STATUSES]  # type: ignore[valid-type]


@router.post(
    "",
    status_code=201,
    response_model=InvoicePublic,
    responses={200: {"description": "the same request again: the existing invoice"}},
)
async def create_invoice(
    body: InvoiceCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> InvoicePublic:
    invoice, created = await services.create_invoice(session, client, settings, body, who.actor)
    if not created:
        response.status_code = 200
    return services.public(invoice, settings)


@router.get("", response_model=InvoicePage)
async def list_invoices(
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    _: Viewer,
    status: Status | None = None,
    customer_id: int | None = Query(None, gt=0),
    overdue: bool | None = None,
    collector: str | None = Query(None, max_length=100),
    hold: str | None = Query(None, max_length=20),
    stage: str | None = Query(None, max_length=50, description="last reminder step sent"),
    segment: str | None = Query(None, max_length=50),
    source: Literal["database", "temporal"] = Query(
        "database",
        description="temporal: status, stage and segment are matched by the workflows' search "
        "attributes (Temporal visibility); the other filters still apply in the database",
    ),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> InvoicePage:
    ids = None
    if source == "temporal":
        found = await services.indexed_invoice_ids(
            session, client, settings, status, stage, segment, limit=5000
        )
        ids, status, stage, segment = found, None, None, None
    rows, total = services.list_invoices(
        session,
        status,
        customer_id,
        overdue,
        limit,
        offset,
        collector=collector,
        hold=hold,
        stage=stage,
        segment=segment,
        ids=ids,
    )
    return InvoicePage(
        items=[services.public(r, settings) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{invoice_id}", response_model=InvoicePublic)
def get_invoice(
    invoice_id: int, session: SessionDep, settings: SettingsDep, _: Viewer
) -> InvoicePublic:
    invoice = services.get_invoice(session, invoice_id)
    return services.public(invoice, settings)


@router.get("/{invoice_id}/timeline", response_model=list[InvoiceEventPublic])
def get_timeline(invoice_id: int, session: SessionDep, _: Viewer) -> list[InvoiceEventPublic]:
    return [InvoiceEventPublic.model_validate(e) for e in services.timeline(session, invoice_id)]


@router.get("/{invoice_id}/messages", response_model=list[OutboxMessagePublic])
def get_messages(invoice_id: int, session: SessionDep, _: Viewer) -> list[OutboxMessage]:
    return actions.messages(session, invoice_id)


@router.post("/{invoice_id}/cancel", response_model=InvoicePublic)
async def cancel_invoice(
    invoice_id: int,
    body: CancelBody,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> InvoicePublic:
    """Close as ``cancelled`` (the debt leaves the reports). A specialist may cancel only
    before any reminder was sent for the invoice; after that it needs an admin (403)."""
    invoice = await services.cancel_invoice(session, client, settings, invoice_id, body.reason, who)
    return services.public(invoice, settings)


@router.patch("/{invoice_id}", response_model=InvoicePublic)
async def amend_invoice(
    invoice_id: int,
    body: InvoiceAmend,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> InvoicePublic:
    """Correct the due date or change the dunning policy. The workflow recomputes its
    schedule: nothing sent is sent again, steps whose time passed are recorded as skipped.
    The amount is lowered by a credit note."""
    invoice = await amendments.amend_invoice(session, client, settings, invoice_id, body, who.actor)
    return services.public(invoice, settings)


@router.post("/{invoice_id}/credit-notes", status_code=201, response_model=CreditNotePublic)
async def issue_credit_note(
    invoice_id: int,
    body: CreditNoteCreate,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> CreditNotePublic:
    """Lower the open balance by a credit note (the invoice is ``credited`` when nothing is
    left). At most the open balance; not on a disputed invoice (resolve the dispute with a
    credit). The same ``external_id`` and body again answers with the first outcome."""
    note = await amendments.issue_credit_note(
        session, client, settings, invoice_id, body, who.actor
    )
    return CreditNotePublic.model_validate(note, from_attributes=True)


@router.get("/{invoice_id}/credit-notes", response_model=list[CreditNotePublic])
def list_credit_notes(invoice_id: int, session: SessionDep, _: Viewer) -> list[CreditNotePublic]:
    return [
        CreditNotePublic.model_validate(n, from_attributes=True)
        for n in amendments.credit_notes(session, invoice_id)
    ]
