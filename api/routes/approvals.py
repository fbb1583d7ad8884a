"""Four eyes on dispute credits: the credits that wait for an admin or a second specialist,
and their approval or refusal (``arflow.invoices.approvals``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from api.deps import SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from arflow.invoices import approvals
from models import CreditApproval
from models.approval import ApprovalDecision, CreditApprovalPublic

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])


@router.get("", response_model=list[CreditApprovalPublic])
def list_approvals(
    session: SessionDep,
    _: Viewer,
    status: Literal["pending", "approved", "declined", "all"] = "pending",
    invoice_id: int | None = Query(None, ge=1),
) -> list[CreditApproval]:
    """Pending ones unless ``status`` says otherwise (``all``: every one), oldest first."""
    return approvals.list_approvals(session, status, invoice_id)


@router.get("/{approval_id}", response_model=CreditApprovalPublic)
def get_approval(approval_id: int, session: SessionDep, _: Viewer) -> CreditApproval:
    return approvals.get_approval(session, approval_id)


@router.post("/{approval_id}/approve", response_model=CreditApprovalPublic)
async def approve(
    approval_id: int,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> CreditApproval:
    """An admin or a specialist other than the requester (403 for the requester): the
    resolution goes to the invoice's workflow with both actors; 409/422 with the workflow's
    reason when it refuses (the approval stays pending)."""
    approval, _ = await approvals.approve(session, client, settings, approval_id, who)
    return approval


@router.post("/{approval_id}/decline", response_model=CreditApprovalPublic)
def decline(
    approval_id: int,
    session: SessionDep,
    who: Specialist,
    body: ApprovalDecision | None = None,
) -> CreditApproval:
    """Nothing is credited; the dispute stays open. The requester may withdraw their own."""
    return approvals.decline(session, approval_id, who, body.note if body else "")
