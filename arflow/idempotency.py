"""Idempotency keys, kept in our database: the same key again gets the first answer.

A request with an ``Idempotency-Key`` first *claims* the key for its caller (principal),
operation and resource: a row inserted and committed at once, so of two requests racing with
one key exactly one wins (the unique constraint decides) and the other is told the first is
still running. The winner *completes* the row with its response, or *releases* it when it
failed, so a retry runs again (a failed request changed nothing). Later requests with the key
get the stored response back, or a refusal when their request differs from the first.

The rows live in our database, not in a workflow's history, so a key outlives the workflow's
continue-as-new; the Temporal update id built from the key (``gateway.idempotent_update_id``)
stays as a second guard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from models.idempotency import IdempotencyRecord
from models.types import utcnow

#: A claim older than this without an answer belongs to a request that died (a killed
#: process): the next request with the key may take it over.
STALE_AFTER = timedelta(minutes=10)


class Outcome(StrEnum):
    claimed = "claimed"  # the caller runs the request, then completes or releases
    replay = "replay"  # the first response is in ``status`` and ``body``
    in_progress = "in_progress"  # the first request with the key has not answered yet
    mismatch = "mismatch"  # the key was used with a different request


@dataclass(frozen=True)
class Claim:
    outcome: Outcome
    record_id: int | None = None
    status: int | None = None
    body: str | None = None


def request_hash(query: str, body: bytes) -> str:
    """A hash of what the request asks: its query string and its body (JSON compared by
    value, so a client that re-serialises the same body in another key order still matches)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    digest.update(query.encode())
    digest.update(b"\0")
    digest.update(canonical)
    return digest.hexdigest()


def _find(
    session: Session, principal: str, operation: str, resource: str, key: str
) -> IdempotencyRecord | None:
    return session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.principal == principal,
            IdempotencyRecord.operation == operation,
            IdempotencyRecord.resource == resource,
            IdempotencyRecord.key == key,
        )
    ).first()


def claim(
    session: Session, principal: str, operation: str, resource: str, key: str, body_hash: str
) -> Claim:
    """Claim ``key`` for one request, or say what became of its first use."""
    record = IdempotencyRecord(
        principal=principal, operation=operation, resource=resource, key=key, body_hash=body_hash
    )
    session.add(record)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
    else:
        return Claim(Outcome.claimed, record_id=record.id)
    found = _find(session, principal, operation, resource, key)
    if found is None:  # the first request failed and released it just now: retry later
        return Claim(Outcome.in_progress)
    if found.body_hash != body_hash:
        return Claim(Outcome.mismatch)
    if found.status is not None:
        return Claim(Outcome.replay, found.id, found.status, found.response_body)
    if found.created_at < utcnow() - STALE_AFTER:
        # Take the dead request's claim over; of two takers the conditional update lets one.
        taken = session.exec(
            update(IdempotencyRecord)
            .where(
                col(IdempotencyRecord.id) == found.id,
                col(IdempotencyRecord.status).is_(None),
                col(IdempotencyRecord.created_at) == found.created_at,
            )
            .values(created_at=utcnow())
        )
        session.commit()
        if taken.rowcount == 1:
            return Claim(Outcome.claimed, record_id=found.id)
    return Claim(Outcome.in_progress)


def complete(session: Session, record_id: int, status: int, body: str) -> None:
    """Keep the first response: later requests with the key get it back."""
    session.exec(
        update(IdempotencyRecord)
        .where(col(IdempotencyRecord.id) == record_id)
        .values(status=status, response_body=body, completed_at=utcnow())
    )
    session.commit()


def release(session: Session, record_id: int) -> None:
    """Forget a claim whose request failed: the same key may run again."""
    record = session.get(IdempotencyRecord, record_id)
    if record is not None and record.status is None:
        session.delete(record)
        session.commit()


def scoped_key(principal: str, key: str) -> str:
    """The key as the domain stores it (note dedupe keys, Temporal update ids, credit event
    ids): one caller's key never meets another's, and its length fits those columns."""
    return hashlib.sha256(f"{principal}\0{key}".encode()).hexdigest()[:40]
