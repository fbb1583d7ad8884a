"""One click: send the next reminder now, for one invoice or many, and pause or resume a
customer's whole account (durable bulk jobs)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import IdempotencyKey, SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from api.idempotency import IdempotentRoute
from arflow.invoices import actions, jobs
from arflow.invoices import service as services
from models.collection import OptionalReason, PauseBody
from models.invoice import InvoicePublic
from models.job import JobPublic, SendNowRequest

router = APIRouter(prefix="/v1", tags=["one click"], route_class=IdempotentRoute)


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
    job = await jobs.start_job(session, client, settings, body, who.actor)
    return jobs.public(session, job)


@router.post("/customers/{customer_id}/pause", status_code=202, response_model=JobPublic)
async def pause_account(
    customer_id: int,
    body: PauseBody,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
) -> JobPublic:
    """Pause every open invoice of the customer (until ``until``, 00:00 in their zone, or a
    resume): a job with one item per invoice, each ``applied`` or ``refused`` with the
    workflow's reason (already on hold, disputed). Follow it at ``GET /v1/jobs/{id}``."""
    job = await jobs.start_account_job(session, client, settings, customer_id, body, who.actor)
    return jobs.public(session, job)


@router.post("/customers/{customer_id}/resume", status_code=202, response_model=JobPublic)
async def resume_account(
    customer_id: int,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    body: OptionalReason | None = None,
) -> JobPublic:
    """Resume every paused invoice of the customer: a job like the account pause (invoices
    that are not paused are ``refused`` with the reason)."""
    job = await jobs.start_account_job(
        session, client, settings, customer_id, body or OptionalReason(), who.actor
    )
    return jobs.public(session, job)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: int, session: SessionDep, _: Viewer) -> JobPublic:
    return jobs.get_job(session, job_id)


@router.get("/jobs", response_model=list[JobPublic])
def list_jobs(session: SessionDep, _: Viewer) -> list[JobPublic]:
    return jobs.list_jobs(session)


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
    invoice = await actions.send_now(session, client, settings, invoice_id, who.actor, key)
    return services.public(invoice, settings)
