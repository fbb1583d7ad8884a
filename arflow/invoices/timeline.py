"""An invoice's timeline: the events that say what happened, who did it and when.

Each event may carry a dedupe key, unique per invoice: a retried activity or a second
request finds its key taken and knows it already happened (``commit_once``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from models import Invoice, InvoiceEvent
from models.types import utcnow
from workflows.types import NextAction

WORKFLOW_ACTOR = "workflow"


def set_next_action(invoice: Invoice, nxt: NextAction | None) -> None:
    invoice.next_action = nxt.kind if nxt else None
    invoice.next_action_at = nxt.at if nxt else None
    invoice.next_action_step = nxt.step_key if nxt else None


def add_event(
    session: Session,
    invoice_id: int,
    kind: str,
    data: dict[str, Any],
    actor: str = WORKFLOW_ACTOR,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> None:
    session.add(
        InvoiceEvent(
            invoice_id=invoice_id,
            kind=kind,
            data=data,
            actor=actor,
            dedupe_key=dedupe_key,
            at=at or utcnow(),
        )
    )


def record_skipped(session: Session, invoice_id: int, steps: list[str], reason: str) -> None:
    """One ``reminder_skipped`` event per step that will never be sent."""
    for step in steps:
        add_event(
            session,
            invoice_id,
            "reminder_skipped",
            {"step": step, "reason": reason},
            dedupe_key=f"skip:{step}",
        )


def commit_once(session: Session, invoice_id: int, dedupe_key: str) -> None:
    """Commit; if an earlier attempt already recorded ``dedupe_key``, this one was a retry."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if not already_recorded(session, invoice_id, dedupe_key):
            raise


def already_recorded(session: Session, invoice_id: int, dedupe_key: str) -> bool:
    stmt = select(InvoiceEvent.id).where(
        InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.dedupe_key == dedupe_key
    )
    return session.exec(stmt).first() is not None
