"""Bulk jobs (one click, many invoices) and their per-invoice progress; the send-now request
and the job as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StrictInt, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import MAX_ID, UTCDateTime, utcnow

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


# -- the API's view of a job ------------------------------------------------------------------

MAX_JOB_INVOICES = 10_000


class SendNowFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str = PydanticField(
        default="open", description="invoice status (only open ones can send)"
    )
    overdue_days_min: int | None = PydanticField(default=None, ge=0, le=3650)
    segment: str | None = PydanticField(default=None, max_length=50)
    customer_id: StrictInt | None = PydanticField(default=None, gt=0, le=MAX_ID)
    collector: str | None = PydanticField(default=None, max_length=100)
    currency: str | None = PydanticField(default=None, min_length=3, max_length=3)


class SendNowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_ids: list[Annotated[StrictInt, PydanticField(gt=0, le=MAX_ID)]] | None = PydanticField(
        default=None, max_length=MAX_JOB_INVOICES
    )
    filter: SendNowFilter | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> SendNowRequest:
        if (self.invoice_ids is None) == (self.filter is None):
            raise ValueError("give exactly one of invoice_ids or filter")
        if self.invoice_ids is not None and not self.invoice_ids:
            raise ValueError("invoice_ids must not be empty")
        return self


class JobItemPublic(BaseModel):
    invoice_id: int
    status: str = PydanticField(description="pending, sent, refused (with the reason) or failed")
    detail: str | None
    updated_at: datetime


class JobPublic(BaseModel):
    id: int
    kind: str
    status: str
    requested_by: str
    params: dict[str, Any]
    total: int
    counts: dict[str, int]
    created_at: datetime
    finished_at: datetime | None
    items: list[JobItemPublic]
