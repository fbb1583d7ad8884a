"""One click, many invoices: a durable job. The invoices are chosen (by id or by a filter for
a send-now; every open invoice of one customer for an account pause or resume), the job and
one item per invoice are stored, and its workflow is started; the job shows its per-invoice
progress.

Kinds: ``send_now`` (each invoice sends its next step; items end ``sent``), ``pause`` and
``resume`` (the customer's whole account: each invoice gets the same update a specialist
sends for one invoice; items end ``applied``). Whatever a workflow refuses is ``refused`` with
its reason; a Temporal that does not answer is ``failed``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow import gateway
from arflow.config import Settings
from arflow.customers.events import record_customer_event
from arflow.errors import not_found, unprocessable
from arflow.jobs import started
from models import Customer, Invoice, Job, JobItem, SimulationRun
from models.collection import OptionalReason, PauseBody
from models.job import MAX_JOB_INVOICES, JobItemPublic, JobPublic, SendNowRequest
from models.types import utcnow
from workflows.types import CLOSED_STATUSES

SEND_NOW, PAUSE, RESUME, POLICY_SWITCH = "send_now", "pause", "resume", "policy_switch"
SIMULATION = "simulation"  # a policy simulation (arflow.policies.simulation_jobs)
ACCOUNT_KINDS = (PAUSE, RESUME)
# What an item that went through ends as, by kind.
DONE_STATUS = {SEND_NOW: "sent", PAUSE: "applied", RESUME: "applied", POLICY_SWITCH: "switched"}


def selected(session: Session, body: SendNowRequest) -> list[int]:
    """The ids of the invoices ``body`` names or its filter selects (422 when none, or when an
    id is unknown, or when the filter selects more than a job takes)."""
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


def public(session: Session, job: Job) -> JobPublic:
    """A job as the API shows it: its items and how many are in each status."""
    items = session.exec(
        select(JobItem).where(JobItem.job_id == job.id).order_by(col(JobItem.invoice_id))
    ).all()
    counts = {"pending": 0, DONE_STATUS.get(job.kind, "sent"): 0, "refused": 0, "failed": 0}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    if job.kind == SIMULATION:  # no items: its run counts the invoices simulated so far
        run = session.get(SimulationRun, job.id)
        done = run.done if run is not None else 0
        counts = {"pending": max(job.total - done, 0), "simulated": done}
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
    """Store a send-now job for the selected invoices and start its workflow. When Temporal
    does not answer, the job is marked failed and ``Unavailable`` is raised (retry)."""
    ids = selected(session, body)
    params = body.model_dump(mode="json", exclude_none=True)
    return await _store_and_start(session, client, settings, SEND_NOW, params, ids, actor)


async def start_account_job(
    session: Session,
    client: Client,
    settings: Settings,
    customer_id: int,
    body: PauseBody | OptionalReason,
    actor: str,
) -> Job:
    """Pause (a ``PauseBody``) or resume (an ``OptionalReason``) every open invoice of one
    customer: a job whose items are the customer's invoices that are not closed. 404 for an
    unknown customer, 422 when nothing of theirs is open. The request is on the customer's
    timeline (``account_paused`` / ``account_resumed`` with the job's id); each invoice's own
    pause or resume is on its timeline, as when a specialist sends it for that invoice."""
    kind = PAUSE if isinstance(body, PauseBody) else RESUME
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    ids = [
        i
        for i in session.exec(
            select(Invoice.id)
            .where(Invoice.customer_id == customer_id, col(Invoice.status).not_in(CLOSED_STATUSES))
            .order_by(col(Invoice.id))
        ).all()
        if i is not None
    ]
    if not ids:
        raise unprocessable(f"customer {customer_id} has no open invoice to {kind}")
    params: dict[str, Any] = {"customer_id": customer_id, **body.model_dump(mode="json")}
    return await _store_and_start(session, client, settings, kind, params, ids, actor)


async def start_policy_switch(
    session: Session,
    client: Client,
    settings: Settings,
    params: dict[str, Any],
    ids: list[int],
    actor: str,
) -> Job:
    """Move invoices ``ids`` to version ``params["version"]`` of policy
    ``params["policy_id"]`` from their next step on (``arflow.policies.versions``)."""
    return await _store_and_start(session, client, settings, POLICY_SWITCH, params, ids, actor)


async def _store_and_start(
    session: Session,
    client: Client,
    settings: Settings,
    kind: str,
    params: dict[str, Any],
    ids: list[int],
    actor: str,
) -> Job:
    job = Job(kind=kind, requested_by=actor, params=params, total=len(ids))
    session.add(job)
    session.flush()
    assert job.id is not None
    session.add_all(JobItem(job_id=job.id, invoice_id=i) for i in ids)
    if kind in ACCOUNT_KINDS:
        record_customer_event(
            session,
            params["customer_id"],
            f"account_{kind}d",
            {"job_id": job.id, "invoices": len(ids), **params},
            actor=actor,
        )
    session.commit()
    return await started(session, job, gateway.start_send_now_job(client, settings, job.id))


def get_job(session: Session, job_id: int) -> JobPublic:
    job = session.get(Job, job_id)
    if job is None:
        raise not_found("job", job_id)
    return public(session, job)


def list_jobs(session: Session, limit: int = 50) -> list[JobPublic]:
    """The latest jobs, newest first."""
    jobs = session.exec(select(Job).order_by(col(Job.id).desc()).limit(limit)).all()
    return [public(session, j) for j in jobs]


# -- running a job (the run_send_now_job activity) ------------------------------------------


@dataclass(frozen=True)
class RunningJob:
    kind: str
    requested_by: str
    params: dict[str, Any]
    pending: list[int]


def start_running(session: Session, job_id: int) -> RunningJob:
    """Mark the job running (commits); what it does, who requested it and its invoices still
    pending. ``NotFound`` when the job does not exist."""
    job = session.get(Job, job_id)
    if job is None:
        raise not_found("job", job_id)
    job.status = "running"
    session.add(job)
    session.commit()
    pending = session.exec(
        select(JobItem.invoice_id).where(JobItem.job_id == job_id, JobItem.status == "pending")
    ).all()
    return RunningJob(job.kind, job.requested_by, dict(job.params), list(pending))


def record_item(
    session: Session, job_id: int, invoice_id: int, status: str, detail: str | None
) -> None:
    """Record how the job's invoice went (commits)."""
    item = session.exec(
        select(JobItem).where(JobItem.job_id == job_id, JobItem.invoice_id == invoice_id)
    ).one()
    item.status, item.detail, item.updated_at = status, detail, utcnow()
    session.add(item)
    session.commit()


def finish(session: Session, job_id: int) -> None:
    """Mark the job done (commits)."""
    job = session.get(Job, job_id)
    assert job is not None
    job.status, job.finished_at = "done", utcnow()
    session.add(job)
    session.commit()
