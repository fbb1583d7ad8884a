"""The workspace's side of what customers ask for in the portal: the files sent with their
disputes, and the plans they proposed outside the policy's bounds, which a specialist
accepts or declines (``arflow.portal.requests``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from api.pages import attachment_response
from arflow.invoices.service import get_invoice
from arflow.portal import requests
from models.portal_request import (
    DisputeAttachment,
    DisputeAttachmentPublic,
    PlanProposal,
    PlanProposalPublic,
    ProposalDecline,
)

router = APIRouter(prefix="/v1", tags=["customer requests"])


@router.get("/invoices/{invoice_id}/attachments", response_model=list[DisputeAttachmentPublic])
def list_attachments(invoice_id: int, session: SessionDep, _: Viewer) -> list[DisputeAttachment]:
    """The files customers sent with their disputes of the invoice."""
    get_invoice(session, invoice_id)
    return requests.list_attachments(session, invoice_id)


@router.get(
    "/invoices/{invoice_id}/attachments/{attachment_id}",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}, "image/png": {}, "image/jpeg": {}}}},
)
def download_attachment(
    invoice_id: int, attachment_id: int, session: SessionDep, settings: SettingsDep, _: Viewer
) -> Response:
    """One attachment's bytes, as a download (its type was decided from its bytes)."""
    row, content = requests.read_attachment(session, settings, invoice_id, attachment_id)
    return attachment_response(row, content)


@router.get("/invoices/{invoice_id}/plan-proposals", response_model=list[PlanProposalPublic])
def list_proposals(invoice_id: int, session: SessionDep, _: Viewer) -> list[PlanProposal]:
    """Plans the customer proposed outside the policy's bounds, with their decision."""
    get_invoice(session, invoice_id)
    return requests.list_proposals(session, invoice_id)


@router.post(
    "/invoices/{invoice_id}/plan-proposals/{proposal_id}/accept",
    response_model=PlanProposalPublic,
)
async def accept_proposal(
    invoice_id: int,
    proposal_id: int,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> PlanProposal:
    """Agree the customer's plan (the same update as a specialist's plan); the task closes and
    the customer gets a confirmation."""
    return await requests.accept_proposal(
        session, client, settings, invoice_id, proposal_id, who.actor
    )


@router.post(
    "/invoices/{invoice_id}/plan-proposals/{proposal_id}/decline",
    response_model=PlanProposalPublic,
)
async def decline_proposal(
    invoice_id: int,
    proposal_id: int,
    body: ProposalDecline,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> PlanProposal:
    """Decline the customer's plan with a reason the customer is told; the task closes."""
    return await requests.decline_proposal(
        session, client, settings, invoice_id, proposal_id, body.reason, who.actor
    )
