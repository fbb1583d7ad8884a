"""Dashboard sessions ended on the server: a signed cookie cannot be taken back, so logging
out records the session's id here and a replayed cookie is refused."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class RevokedSession(SQLModel, table=True):
    """A logged-out session id; kept until the session would have expired anyway."""

    __tablename__ = "revoked_sessions"

    session_id: str = Field(primary_key=True, max_length=64)
    revoked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
