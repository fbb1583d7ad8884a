"""What a customer asks for in the self-service portal: the files sent with a dispute, and a
payment plan proposed outside the policy's bounds (which the invoice's owner decides)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class DisputeAttachment(SQLModel, table=True):
    """A file a customer sent with a dispute. The bytes live outside the database, under
    ``data_dir/attachments/<invoice id>/<stored name>``; ``status`` is ``stored`` once the
    dispute it belongs to was opened, ``orphaned`` when opening the dispute failed (the file
    is deleted then, the row kept as the record of what happened)."""

    __tablename__ = "dispute_attachments"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    dispute_id: int | None = Field(default=None, foreign_key="disputes.id", index=True)
    filename: str = Field(max_length=200, description="the customer's name, sanitised")
    content_type: str = Field(max_length=50, description="decided from the bytes")
    size: int = Field(sa_type=BigInteger)
    sha256: str = Field(max_length=64)
    stored_name: str = Field(max_length=100, description="relative to data_dir/attachments")
    status: str = Field(default="pending", max_length=20, description="pending, stored, orphaned")
    detail: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DisputeAttachmentPublic(SQLModel):
    id: int
    invoice_id: int
    dispute_id: int | None
    filename: str
    content_type: str
    size: int
    sha256: str
    status: str
    created_at: datetime


class PlanProposal(SQLModel, table=True):
    """A payment plan a customer proposed outside the policy's bounds, for the invoice's owner
    to accept or decline (a ``plan_proposal`` task)."""

    __tablename__ = "plan_proposals"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    status: str = Field(default="pending", max_length=20, description="pending, accepted, declined")
    installments: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    note: str = Field(default="", max_length=2000)
    out_of_bounds: list[str] = Field(sa_column=Column(JSON, nullable=False))
    task_id: int | None = Field(default=None, foreign_key="tasks.id")
    decided_by: str | None = Field(default=None, max_length=100)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_note: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PlanProposalPublic(SQLModel):
    id: int
    invoice_id: int
    status: str
    installments: list[dict[str, Any]]
    note: str
    out_of_bounds: list[str]
    task_id: int | None
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    created_at: datetime


class ProposalDecline(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    reason: str = Field(min_length=1, max_length=2000)
