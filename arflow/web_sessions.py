"""Server-side revocation of dashboard sessions (see ``models.web_session``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlmodel import Session

from models.types import utcnow
from models.web_session import RevokedSession


def revoke(session: Session, session_id: str, expires_at: datetime) -> None:
    """Refuse ``session_id`` from now on (idempotent); forget ids already expired."""
    now = utcnow()
    session.execute(delete(RevokedSession).where(RevokedSession.expires_at < now))  # type: ignore[arg-type]
    if session.get(RevokedSession, session_id) is None:
        session.add(RevokedSession(session_id=session_id, revoked_at=now, expires_at=expires_at))
    session.commit()


def is_revoked(session: Session, session_id: str) -> bool:
    return session.get(RevokedSession, session_id) is not None
