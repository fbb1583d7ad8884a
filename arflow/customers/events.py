"""A customer's own timeline (``customer_events``): profile changes, segment moves, credit
holds. Invoices keep theirs in ``invoice_events``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from models import CustomerEvent
from models.types import utcnow


def record_customer_event(
    session: Session,
    customer_id: int,
    kind: str,
    data: dict[str, Any],
    actor: str,
    at: datetime | None = None,
) -> CustomerEvent:
    """Add one event to the session (the caller commits, with the change it describes)."""
    event = CustomerEvent(
        customer_id=customer_id, kind=kind, data=data, actor=actor, at=at or utcnow()
    )
    session.add(event)
    return event


def customer_events(
    session: Session,
    customer_id: int,
    kind: str | None = None,
    limit: int = 200,
    offset: int = 0,
    newest_first: bool = False,
) -> list[CustomerEvent]:
    """Oldest first (newest first with ``newest_first``: the latest ``limit`` events)."""
    stmt = select(CustomerEvent).where(CustomerEvent.customer_id == customer_id)
    if kind is not None:
        stmt = stmt.where(CustomerEvent.kind == kind)
    at, ident = col(CustomerEvent.at), col(CustomerEvent.id)
    order = (at.desc(), ident.desc()) if newest_first else (at, ident)
    stmt = stmt.order_by(*order).offset(offset).limit(limit)
    return list(session.exec(stmt).all())
