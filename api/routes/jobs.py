"""One click: send the next reminder now, for one invoice or many (a durable bulk job)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError

from api.deps import SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from api.errors import ApiError, not_found, unprocessable
from api.routes.actions import IdempotencyKey, _act
from arflow.config import Settings
from models import Customer, Invoice, Job, JobItem
from models.invoice import InvoicePublic
from models.types import utcnow
from workflows.jobs import SendNowJobWorkflow
from workflows.types import ActorRequest

router = APIRouter(prefix="/v1", tags=["one click"])
MAX_JOB_INVOICES = 10_000


class SendNowFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str = Field(default="open", description="invoice status (only open ones can send)")
    overdue_days_min: int | None = Field(default=None, ge=0, le=3650)
    segment: str | None = Field(default=None, max_length=50)
    customer_id: StrictInt | None = Field(default=None, gt=0)
    collector: str | None = Field(default=None, max_length=100)
    currency: str | None = Field(default=None, min_length=3, max_length=3)


class SendNowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_ids: list[StrictInt] | None = Field(default=None, max_length=MAX_JOB_INVOICES)
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
    status: str = Field(description="pending, sent, refused (with the reason) or failed")
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


def _selected(session: Session, body: SendNowRequest) -> list[int]:
    if body.invoice_ids is not None:
        ids = list(dict.fromkeys(body.invoice_ids))
        found = set(session.exec(select(Invoice.id).where(col(Invoice.id).in_(ids))).all())
        missing = [i for i in ids if i not in found]
        if missing:
            raise unprocessable(f"unknown invoices {missing[:20]}")
        return ids
    flt = body.filter
    assert flt is not None
    stmt = select(Invoice.id).where(Invoice.status == flt.status)
    if flt.overdue_days_min is not None:
        cutoff = datetime.now(UTC) - timedelta(days=flt.overdue_days_min)
        stmt = stmt.where(Invoice.due_at < cutoff)
    if flt.segment is not None:
        stmt = stmt.join(Customer, col(Customer.id) == col(Invoice.customer_id)).where(
            Customer.segment == flt.segment
        )
    if flt.customer_id is not None:
        stmt = stmt.where(Invoice.customer_id == flt.customer_id)
    if flt.collector is not None:
        stmt = stmt.where(Invoice.collector == flt.collector)
    if flt.currency is not None:
        stmt = stmt.where(Invoice.currency == flt.currency.upper())
    ids = [i for i in session.exec(stmt.order_by(col(Invoice.id))).all() if i is not None]
    if not ids:
        raise unprocessable("the filter selects no invoice")
    if len(ids) > MAX_JOB_INVOICES:
        raise unprocessable(f"the filter selects {len(ids)} invoices; at most {MAX_JOB_INVOICES}")
    return ids


def _public(session: Session, job: Job) -> JobPublic:
    items = session.exec(
        select(JobItem).where(JobItem.job_id == job.id).order_by(col(JobItem.invoice_id))
    ).all()
    counts = {"pending": 0, "sent": 0, "refused": 0, "failed": 0}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    assert job.id is not None
    return JobPublic(
        id=job.id,
        kind=job.kind,
        status=job.status,
        requested_by=job.requested_by,
        params=job.params,
        total=job.total,
        counts=counts,
        created_at=job.created_at,
        finished_at=job.finished_at,
        items=[JobItemPublic.model_validate(i, from_attributes=True) for i in items],
    )


async def start_job(
    session: Session, client: Client, settings: Settings, body: SendNowRequest, actor: str
) -> Job:
    ids = _selected(session, body)
    job = Job(
        kind="send_now",
        requested_by=actor,
        params=body.model_dump(mode="json", exclude_none=True),
        total=len(ids),
    )
    session.add(job)
    session.flush()
    assert job.id is not None
    session.add_all(JobItem(job_id=job.id, invoice_id=i) for i in ids)
    session.commit()
    try:
        await client.start_workflow(
            SendNowJobWorkflow.run,
            job.id,
            id=f"{settings.workflow_id_prefix}job-{job.id}",
            task_queue=settings.task_queue,
        )
    except RPCError as exc:
        job.status, job.finished_at = "failed", utcnow()
        session.add(job)
        session.commit()
        raise ApiError(503, "workflow_unavailable", "Temporal did not answer; retry") from exc
    return job


@router.post("/reminders/send-now", status_code=202, response_model=JobPublic)
async def send_now_bulk(
    body: SendNowRequest,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> JobPublic:
    """Each selected invoice sends its next reminder step now (never a step twice; on hold,
    disputed or closed invoices are refused with the reason). Returns the job at once: follow
    it at ``GET /v1/jobs/{id}``."""
    job = await start_job(session, client, settings, body, who.actor)
    return _public(session, job)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: int, session: SessionDep, _: Viewer) -> JobPublic:
    job = session.get(Job, job_id)
    if job is None:
        raise not_found("job", job_id)
    return _public(session, job)


@router.get("/jobs", response_model=list[JobPublic])
def list_jobs(session: SessionDep, _: Viewer) -> list[JobPublic]:
    jobs = session.exec(select(Job).order_by(col(Job.id).desc()).limit(50)).all()
    return [_public(session, j) for j in jobs]


@router.post("/invoices/{invoice_id}/send-now", response_model=InvoicePublic)
async def send_now_one(
    invoice_id: int,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoicePublic:
    """Send this invoice's next reminder step now (409 with the reason when it cannot)."""
    request = ActorRequest(reason="send now", actor=who.actor)
    return await _act(session, settings, client, invoice_id, "send_now", request, key)
