"""Bulk jobs (one click, many invoices) and their per-invoice progress."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow

JOB_STATUSES = ("queued", "running", "done")
ITEM_STATUSES = ("pending", "sent", "refused", "failed")


class Job(SQLModel, table=True):
    __tablename__ = "jobs"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=30, description="send_now")
    status: str = Field(default="queued", max_length=20)
    requested_by: str = Field(max_length=100)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    total: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class JobItem(SQLModel, table=True):
    __tablename__ = "job_items"
    __table_args__ = (UniqueConstraint("job_id", "invoice_id", name="uq_job_item"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True)
    invoice_id: int = Field(foreign_key="invoices.id")
    status: str = Field(default="pending", max_length=20)
    detail: str | None = Field(default=None, max_length=500)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
