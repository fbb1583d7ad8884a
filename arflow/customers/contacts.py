"""Contact blocks: the channels a customer must not (or cannot) be reached on any more.

A block is per customer and channel (``email``, ``sms``, ``call``, ``letter``). Provider
webhooks add them (bounce, spam report, unsubscribe, STOP), a specialist records a customer's
own opt-out or cease-contact request (``request_block``) and removes them (the customer gave a
new address). These functions only add and flush: the caller commits, and
the caller (the workflow side) records timeline events when it falls back to another channel.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from arflow.customers.events import record_customer_event
from arflow.errors import Conflict
from models import ContactBlock, Customer
from models.contact import CHANNELS
from models.types import utcnow

CONTACT_BLOCKED = "contact_blocked"  # the customer timeline's event of a requested block


def find(session: Session, customer_id: int, channel: str) -> ContactBlock | None:
    return session.exec(
        select(ContactBlock).where(
            ContactBlock.customer_id == customer_id, ContactBlock.channel == channel
        )
    ).first()


def block(
    session: Session,
    customer_id: int,
    channel: str,
    reason: str,
    source: str,
    address: str | None = None,
    detail: str | None = None,
) -> ContactBlock:
    """Block ``channel`` for the customer; an existing block is kept as it is (idempotent).

    One ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL): a concurrent insert of
    the same block is no error, and the caller's other pending changes stay in its
    transaction (no savepoint, which pysqlite handles badly).
    """
    existing = find(session, customer_id, channel)
    if existing is not None:
        return existing
    row = ContactBlock(
        customer_id=customer_id,
        channel=channel,
        reason=reason,
        source=source,
        address=address[:320] if address else None,
        detail=detail[:500] if detail else None,
        created_at=utcnow(),
    )
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        stmt = insert(ContactBlock).values(**row.model_dump(exclude={"id"}))
        stmt = stmt.on_conflict_do_nothing(index_elements=["customer_id", "channel"])
        session.connection().execute(stmt)
    else:
        session.add(row)
        session.flush()
    found = find(session, customer_id, channel)
    assert found is not None
    return found


def unblock(session: Session, customer_id: int, channel: str) -> bool:
    """Remove the block; False when there was none."""
    existing = find(session, customer_id, channel)
    if existing is None:
        return False
    session.delete(existing)
    session.flush()
    return True


def is_blocked(session: Session, customer_id: int, channel: str) -> bool:
    return find(session, customer_id, channel) is not None


def blocked_channels(session: Session, customer_id: int) -> set[str]:
    rows = session.exec(
        select(ContactBlock.channel).where(ContactBlock.customer_id == customer_id)
    ).all()
    return set(rows)


def list_blocks(session: Session, customer_id: int) -> list[ContactBlock]:
    stmt = (
        select(ContactBlock)
        .where(ContactBlock.customer_id == customer_id)
        .order_by(col(ContactBlock.channel))
    )
    return list(session.exec(stmt).all())


def request_block(
    session: Session,
    customer: Customer,
    channel: str | None,
    reason: str,
    note: str | None,
    actor: str,
) -> list[ContactBlock]:
    """Record a customer's own request, as a specialist took it down; the caller commits.

    ``opt_out`` blocks ``channel``; a block already there (whatever its reason) is a
    ``Conflict``. ``cease_contact`` blocks every channel, and a block already there for
    another reason (a bounce, STOP) takes the reason ``cease_contact``: lifting it later (a
    new address, START) must not bring back contact the customer asked to end. A
    ``Conflict`` only when every channel already carries ``cease_contact``. One
    ``contact_blocked`` event on the customer's timeline, with the specialist as actor.
    Returns the blocks the request made or changed.
    """
    assert customer.id is not None
    channels = list(CHANNELS) if reason == "cease_contact" else [channel or ""]
    existing = {b.channel: b for b in list_blocks(session, customer.id)}
    changed: list[ContactBlock] = []
    replaced: dict[str, str] = {}
    for name in channels:
        found = existing.get(name)
        if found is not None and (reason != "cease_contact" or found.reason == reason):
            continue
        if found is not None:
            replaced[name] = found.reason
            found.reason, found.source = reason, "specialist"
            found.detail = note[:500] if note else found.detail
            session.add(found)
            changed.append(found)
            continue
        address = {"email": customer.email, "sms": customer.phone, "call": customer.phone}
        changed.append(
            block(session, customer.id, name, reason, "specialist", address.get(name), note)
        )
    if not changed:
        what = "every channel" if reason == "cease_contact" else f"{channel}"
        raise Conflict(
            f"{what} of customer {customer.id} is already blocked",
            details=[{"channel": b.channel, "reason": b.reason} for b in existing.values()],
        )
    session.flush()
    record_customer_event(
        session,
        customer.id,
        CONTACT_BLOCKED,
        {
            "reason": reason,
            "channels": [b.channel for b in changed],
            "replaced": replaced,
            "note": note,
        },
        actor=actor,
    )
    return changed
