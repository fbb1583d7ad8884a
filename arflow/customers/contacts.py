"""Contact blocks: the channels a customer must not (or cannot) be reached on any more.

A block is per customer and channel (``email``, ``sms``, ``call``, ``letter``). Provider
webhooks add them (bounce, spam report, unsubscribe, STOP), a specialist removes them (the
customer gave a new address). These functions only add and flush: the caller commits, and
the caller (the workflow side) records timeline events when it falls back to another channel.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from models import ContactBlock
from models.types import utcnow


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
