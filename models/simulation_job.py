"""A policy simulation run as a job (``jobs`` row of kind ``simulation``): what it simulates
(the resolved policy, the invoices chosen when it was asked for, the cut-off instant), its
progress and totals, and one stored result row per invoice (unique per job, so a retried
batch writes no duplicate)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class SimulationRun(SQLModel, table=True):
    __tablename__ = "simulation_runs"

    job_id: int = Field(foreign_key="jobs.id", primary_key=True)
    policy: dict[str, Any] = Field(
        sa_column=Column(JSON, nullable=False), description="the simulated PolicySpec"
    )
    invoice_ids: list[int] = Field(sa_column=Column(JSON, nullable=False))
    as_of: datetime = Field(sa_type=UTCDateTime, description="what happened up to this instant")
    done: int = 0
    totals: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: str | None = Field(default=None, max_length=500)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SimulationResult(SQLModel, table=True):
    __tablename__ = "simulation_results"
    __table_args__ = (UniqueConstraint("job_id", "invoice_id", name="uq_simulation_result"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True)
    invoice_id: int = Field(foreign_key="invoices.id")
    row: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class SimulationJobPublic(BaseModel):
    """A simulation job as ``GET /v1/policies/simulations/{id}`` shows it: its progress while
    it runs; when done, the totals (the synchronous route's ``totals``) and the CSV's address."""

    id: int
    status: str = PydanticField(description="queued, running, done or failed")
    requested_by: str
    params: dict[str, Any] = PydanticField(description="the request, as sent")
    policy: str = PydanticField(description="the simulated policy's name")
    total: int = PydanticField(description="invoices in the window")
    done: int = PydanticField(description="invoices simulated so far")
    created_at: datetime
    finished_at: datetime | None
    error: str | None = PydanticField(description="why it failed, when it did")
    totals: dict[str, Any] | None = PydanticField(description="null until done")
    csv_url: str | None = PydanticField(description="the per-invoice CSV, once done")
