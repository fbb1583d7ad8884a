"""The managed list of collectors.

A collector assigned to a customer (``assigned_collector``) or to an invoice is a free-text
field in the API, kept for compatibility: on a customer it is accepted only when it names an
active collector of the list (by email, or by a name no other active collector has). A
reminder sent in a collector's name (the key-account segment) gives that collector's listed
address as Reply-To; a collector the list does not know, or no longer has active, is never
a Reply-To: the team's own (``email_reply_to``) is used, and the fallback recorded."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.errors import conflict, not_found, unprocessable
from models.collector import Collector, CollectorCreate, CollectorUpdate


def create_collector(session: Session, body: CollectorCreate) -> Collector:
    """Add a collector; 409 when the address is already listed."""
    collector = Collector(name=body.name, email=str(body.email).lower())
    session.add(collector)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(f"a collector with the address {collector.email!r} exists") from None
    session.refresh(collector)
    return collector


def list_collectors(session: Session) -> list[Collector]:
    return list(session.exec(select(Collector).order_by(col(Collector.id))).all())


def update_collector(session: Session, collector_id: int, body: CollectorUpdate) -> Collector:
    """Rename, deactivate or reactivate; a deactivated collector stays on the customers and
    invoices it was assigned to, but reminders stop carrying its address."""
    collector = session.get(Collector, collector_id)
    if collector is None:
        raise not_found("collector", collector_id)
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None:
            raise unprocessable(f"{name} must not be null")
        setattr(collector, name, value)
    session.add(collector)
    session.commit()
    session.refresh(collector)
    return collector


def find_collector(session: Session, value: str) -> Collector | None:
    """The listed collector ``value`` names (active or not): its address (any case), else a
    name only one active (or only one listed) collector has. None when the list does not
    know it, or the name is ambiguous."""
    value = value.strip()
    if "@" in value:
        return session.exec(
            select(Collector).where(func.lower(Collector.email) == value.lower())
        ).first()
    named = session.exec(select(Collector).where(Collector.name == value).limit(10)).all()
    active = [c for c in named if c.active]
    if len(active) == 1:
        return active[0]
    return named[0] if len(named) == 1 else None


def known_collector(session: Session, value: str, field: str = "assigned_collector") -> str:
    """``value`` when it names an active listed collector; 422 (naming ``field``) otherwise."""
    collector = find_collector(session, value)
    if collector is None or not collector.active:
        state = "not an active collector" if collector is not None else "not a known collector"
        raise unprocessable(
            f"{value!r} is {state}: add it with POST /v1/collectors first",
            [{"field": field, "message": state}],
        )
    return value


def has_collectors(session: Session) -> bool:
    """Whether the managed list has any entry (before it has, assignments are free text)."""
    return session.exec(select(Collector.id).limit(1)).first() is not None


def reply_to_of(session: Session, value: str) -> tuple[Collector | None, str | None]:
    """(the active listed collector ``value`` names, else None; why its address is not used
    as Reply-To, else None)."""
    collector = find_collector(session, value)
    if collector is None:
        return None, "unknown collector"
    if not collector.active:
        return None, "inactive collector"
    if collector.email is None:
        return collector, "collector has no address"
    return collector, None
