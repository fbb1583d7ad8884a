"""The deployment: one row naming this database, so the Temporal store it belongs to can be
told apart from a store that belongs to another (or an earlier) database."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class Deployment(SQLModel, table=True):
    """Created by the first migration of a database (one row)."""

    __tablename__ = "deployment"

    id: str = Field(primary_key=True, max_length=32, description="uuid4 hex")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
