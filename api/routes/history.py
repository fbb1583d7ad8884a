"""Insight for admins: the Temporal history of an invoice's workflow, every run of it."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Admin, SessionDep, SettingsDep, TemporalDep
from arflow.invoices import service as services
from arflow.reports import history
from arflow.reports.history import InvoiceHistory

router = APIRouter(prefix="/v1/invoices", tags=["insight"])


@router.get("/{invoice_id}/history", response_model=InvoiceHistory)
async def workflow_history(
    invoice_id: int,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    _: Admin,
) -> InvoiceHistory:
    """Timers, activities (local ones too) with their attempts, payment signals, specialist
    updates with who sent them, and each run's start and end, across continue-as-new and
    reopening. No payload beyond those fields is shown. ``temporal_ui_url`` opens the
    workflow in the Temporal Web UI."""
    services.get_invoice(session, invoice_id)
    return await history.invoice_history(client, settings, invoice_id)
