"""Preview of a reminder: what a policy step would send to an invoice's customer now."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import SessionDep, SettingsDep, Viewer
from arflow.messages import preview
from arflow.messages.preview import MessagePreview, PreviewChannel

router = APIRouter(prefix="/v1/invoices", tags=["invoices"])


@router.get("/{invoice_id}/preview", response_model=MessagePreview)
def preview_message(
    invoice_id: int,
    session: SessionDep,
    settings: SettingsDep,
    _: Viewer,
    step: str = Query(min_length=1, max_length=50, description="a step key of the policy"),
    channel: PreviewChannel | None = Query(
        None, description="whose address to show; default: the step's channel"
    ),
) -> MessagePreview:
    """The step's message in the customer's language (subject, text, HTML and SMS), for the
    invoice's current balance, as the workflow would send it; nothing is sent or recorded."""
    return preview.preview(session, settings, invoice_id, step, channel)
