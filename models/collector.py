"""The collectors a customer or an invoice may be assigned to: the managed list whose
addresses reminders may carry as Reply-To."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, field_validator
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class Collector(SQLModel, table=True):
    """A collector of the team. ``email`` (stored lower case) is the only address a reminder
    sent in the collector's name may give as Reply-To; ``None`` for a collector known by name
    only (created from the free-text assignments made before the list existed)."""

    __tablename__ = "collectors"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, index=True)
    email: str | None = Field(default=None, max_length=320, unique=True)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("name must not be blank")
    return value.strip()


class CollectorCreate(BaseModel):
    """``POST /v1/collectors``."""

    model_config = ConfigDict(extra="forbid")

    name: str = PydanticField(min_length=1, max_length=100)
    email: EmailStr = PydanticField(max_length=320, description="replies to reminders go here")

    _strip = field_validator("name")(_name)


class CollectorUpdate(BaseModel):
    """``PATCH /v1/collectors/{id}``: rename, deactivate (``active: false``) or reactivate."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = PydanticField(default=None, min_length=1, max_length=100)
    active: bool | None = None

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return None if value is None else _name(value)


class CollectorPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str | None
    active: bool
    created_at: datetime
