"""Idempotency keys: the first answer to a keyed request, kept so a retry gets it again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow

#: The longest Idempotency-Key accepted (Stripe's limit).
MAX_KEY_LENGTH = 255
MAX_RESOURCE_LENGTH = 300


class IdempotencyRecord(SQLModel, table=True):
    """One use of an ``Idempotency-Key``: who sent it, for which operation on which resource,
    a hash of the request, and (once answered) the first response. ``status`` is None while
    the first request still runs."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("principal", "operation", "resource", "key", name="uq_idempotency_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    principal: str = Field(max_length=64, description="sha256 of the caller's API key")
    operation: str = Field(max_length=100, description="the route's name, e.g. open_dispute")
    resource: str = Field(max_length=MAX_RESOURCE_LENGTH, description="the request's path")
    key: str = Field(max_length=MAX_KEY_LENGTH)
    body_hash: str = Field(max_length=64)
    status: int | None = Field(default=None, description="the first response's status")
    response_body: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
