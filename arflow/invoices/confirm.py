"""Starting a confirmation to the customer (``workflows.confirmations``): once per fact,
whoever asks again; a Temporal that does not answer leaves the fact standing and the miss on
the invoice's timeline."""

from __future__ import annotations

import logging

from sqlmodel import Session
from temporalio.client import Client

from arflow import gateway
from arflow.config import Settings
from arflow.errors import DomainError
from arflow.invoices.timeline import add_event
from workflows.confirmations import ConfirmationInput

log = logging.getLogger("arflow.confirm")


async def confirm(
    session: Session, client: Client, settings: Settings, invoice_id: int, kind: str, ref_id: int
) -> bool:
    """Start the confirmation of ``kind`` for ``ref_id``; True when this call started it."""
    try:
        return await gateway.start_confirmation(
            client, settings, ConfirmationInput(invoice_id, kind, ref_id)
        )
    except DomainError as exc:
        log.warning(
            "confirmation %s-%s of invoice %s not started: %s", kind, ref_id, invoice_id, exc
        )
        add_event(
            session,
            invoice_id,
            "confirmation_not_started",
            {"confirmation": kind, "ref_id": ref_id, "reason": exc.message[:300]},
        )
        session.commit()
        return False
