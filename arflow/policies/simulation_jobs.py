"""A long policy simulation as a durable job (``jobs`` row of kind ``simulation``).

Asked for with the synchronous route's body (``POST /v1/policies/simulations``): the policy is
resolved (a draft, or a stored policy's version) and the invoices of the window chosen at once,
so a bad request is a 4xx before anything runs; both are stored with the job
(``simulation_runs``: the policy spec, the invoice ids, the cut-off instant). The job's
workflow (``workflows.simulation``) runs the ``run_simulation_job`` activity, which simulates
the invoices not yet written in batches of ``BATCH`` with the same engine as the synchronous
route (``arflow.policies.simulation``) and writes each batch's rows and the progress in one
transaction; a retried attempt goes on where the last one stopped, and the unique key (job,
invoice) refuses a second row. At the end the totals are computed from the stored rows and
kept on the run, and the job is ``done``. The per-invoice CSV is streamed from the stored rows,
in invoice order, a chunk at a time.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select
from temporalio.client import Client

from arflow import gateway
from arflow.config import Settings
from arflow.db import SessionFactory
from arflow.errors import conflict, not_found, unprocessable
from arflow.jobs import started
from arflow.policies import simulation as engine
from models import Invoice, Job
from models.simulation import SimulationRequest
from models.simulation_job import SimulationJobPublic, SimulationResult, SimulationRun
from models.types import utcnow
from workflows.types import PolicySpec

KIND = "simulation"
BATCH = 500
#: A job simulates at most this many invoices (the synchronous route stops at 2,000).
MAX_SIMULATION_INVOICES = 50_000
CSV_CHUNK = 1_000

_SPEC: TypeAdapter[PolicySpec] = TypeAdapter(PolicySpec)
_RESULT: TypeAdapter[engine.InvoiceSimulation] = TypeAdapter(engine.InvoiceSimulation)
_TOTALS: TypeAdapter[engine.SimulationTotals] = TypeAdapter(engine.SimulationTotals)


# -- asking for a job -------------------------------------------------------------------------


def selection(session: Session, body: SimulationRequest) -> tuple[PolicySpec, list[int]]:
    """The policy the request simulates and the invoices of its window (the synchronous route's
    checks: 404 for an unknown policy or version, 422 for a bad draft or window); 422 when the
    window selects nothing or more than a job takes."""
    window = engine.SimulationWindow(
        body.issued_from, body.issued_to, body.segment, body.customer_id
    )
    engine.check_window(window)
    spec = engine.requested_spec(session, body)
    ids = engine.select_invoices(session, window)
    if not ids:
        raise unprocessable("the window selects no invoice")
    if len(ids) > MAX_SIMULATION_INVOICES:
        raise unprocessable(
            f"the window selects {len(ids)} invoices; a simulation job takes at most "
            f"{MAX_SIMULATION_INVOICES}: narrow the dates or add a segment"
        )
    return spec, ids


async def start_job(
    session: Session, client: Client, settings: Settings, body: SimulationRequest, actor: str
) -> Job:
    """Store the job with its policy and invoices, and start its workflow. When Temporal does
    not answer, the job is marked failed and ``Unavailable`` is raised (safe to retry)."""
    spec, ids = await asyncio.to_thread(selection, session, body)
    return await store_and_start(session, client, settings, body, spec, ids, actor)


def store(
    session: Session, body: SimulationRequest, spec: PolicySpec, ids: list[int], actor: str
) -> Job:
    """The job and its run, stored (commits); ``selection`` chose the policy and invoices."""
    job = Job(
        kind=KIND,
        requested_by=actor,
        params=body.model_dump(mode="json", exclude_none=True),
        total=len(ids),
    )
    session.add(job)
    session.flush()
    assert job.id is not None
    session.add(
        SimulationRun(
            job_id=job.id,
            policy=_SPEC.dump_python(spec, mode="json"),
            invoice_ids=ids,
            as_of=utcnow(),
        )
    )
    session.commit()
    return job


async def store_and_start(
    session: Session,
    client: Client,
    settings: Settings,
    body: SimulationRequest,
    spec: PolicySpec,
    ids: list[int],
    actor: str,
) -> Job:
    """``start_job`` once the policy and the invoices are chosen (``selection``)."""
    job = store(session, body, spec, ids, actor)
    assert job.id is not None
    return await started(session, job, gateway.start_simulation_job(client, settings, job.id))


# -- running it (the run_simulation_job activity) ------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a (re)started run still has to do."""

    job_id: int
    policy: PolicySpec
    as_of: datetime
    pending: list[int]
    total: int


def _run(session: Session, job_id: int) -> tuple[Job, SimulationRun]:
    job = session.get(Job, job_id)
    run = session.get(SimulationRun, job_id)
    if job is None or run is None or job.kind != KIND:
        raise not_found("simulation job", job_id)
    return job, run


def _stored_ids(session: Session, job_id: int) -> set[int]:
    return set(
        session.exec(select(SimulationResult.invoice_id).where(SimulationResult.job_id == job_id))
    )


def begin(session: Session, job_id: int) -> Plan:
    """Mark the job running (commits) and say which of its invoices have no row yet."""
    job, run = _run(session, job_id)
    job.status = "running"
    session.add(job)
    session.commit()
    stored = _stored_ids(session, job_id)
    pending = [i for i in run.invoice_ids if i not in stored]
    return Plan(job_id, _SPEC.validate_python(run.policy), run.as_of, pending, len(run.invoice_ids))


def batches(session: Session, invoice_ids: Sequence[int], size: int = BATCH) -> list[list[int]]:
    """``invoice_ids`` in batches of about ``size``, a customer's invoices always in one batch
    (the engine counts the daily contact cap across a customer's invoices: a batch boundary
    between two of them would change the result)."""
    by_customer: dict[int, list[int]] = {}
    for i in range(0, len(invoice_ids), engine.CHUNK):
        chunk = list(invoice_ids[i : i + engine.CHUNK])
        rows = session.exec(
            select(Invoice.id, Invoice.customer_id).where(col(Invoice.id).in_(chunk))
        ).all()
        for invoice_id, customer_id in rows:
            if invoice_id is not None:
                by_customer.setdefault(customer_id, []).append(invoice_id)
    out: list[list[int]] = []
    current: list[int] = []
    for customer_id in sorted(by_customer):
        current += sorted(by_customer[customer_id])
        if len(current) >= size:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def run_batch(session: Session, plan: Plan, invoice_ids: Sequence[int]) -> int:
    """Simulate ``invoice_ids`` and store their rows with the progress, in one transaction
    (commits); rows already stored by an attempt running alongside are left as they are.
    Returns how many of the job's invoices are done."""
    results = engine.simulate(session, plan.policy, list(invoice_ids), plan.as_of)
    rows = {r.invoice_id: _RESULT.dump_python(r, mode="json") for r in results}
    _insert(session, plan.job_id, rows)
    try:
        session.commit()
    except IntegrityError:  # another attempt wrote some of them meanwhile
        session.rollback()
        stored = _stored_ids(session, plan.job_id)
        _insert(session, plan.job_id, {k: v for k, v in rows.items() if k not in stored})
        session.commit()
    return _progress(session, plan.job_id)


def _insert(session: Session, job_id: int, rows: dict[int, dict[str, Any]]) -> None:
    session.add_all(
        SimulationResult(job_id=job_id, invoice_id=invoice_id, row=row)
        for invoice_id, row in rows.items()
    )


def _progress(session: Session, job_id: int) -> int:
    """Count the stored rows onto the run (commits): the done of done/total."""
    done = session.exec(
        select(func.count()).select_from(SimulationResult).where(SimulationResult.job_id == job_id)
    ).one()
    run = session.get(SimulationRun, job_id)
    assert run is not None
    run.done, run.updated_at = int(done), utcnow()
    session.add(run)
    session.commit()
    return int(done)


def finish(session: Session, job_id: int) -> None:
    """Totals from the stored rows onto the run; the job done (commits)."""
    job, run = _run(session, job_id)
    results = [r for chunk in _result_chunks(session, job_id) for r in chunk]
    run.totals = _TOTALS.dump_python(engine.totals(results), mode="json")
    run.done, run.updated_at = len(results), utcnow()
    job.status, job.finished_at = "done", utcnow()
    session.add_all([run, job])
    session.commit()


def fail(session: Session, job_id: int, reason: str) -> None:
    """Every attempt failed: the job is ``failed``, with the reason on its run (commits). A job
    whose run is missing (it cannot have started) is marked failed all the same."""
    job = session.get(Job, job_id)
    if job is None or job.kind != KIND:
        raise not_found("simulation job", job_id)
    job.status, job.finished_at = "failed", utcnow()
    session.add(job)
    run = session.get(SimulationRun, job_id)
    if run is not None:
        run.error, run.updated_at = reason[:500], utcnow()
        session.add(run)
    session.commit()


# -- reading it -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationJobView:
    job: Job
    run: SimulationRun


def get(session: Session, job_id: int) -> SimulationJobView:
    """The job and its run; 404 when there is no simulation job of that id."""
    job, run = _run(session, job_id)
    return SimulationJobView(job, run)


def _result_chunks(session: Session, job_id: int) -> Iterator[list[engine.InvoiceSimulation]]:
    """The stored results in invoice order, ``CSV_CHUNK`` at a time (keyset paging)."""
    after = 0
    while True:
        rows = session.exec(
            select(SimulationResult.invoice_id, SimulationResult.row)
            .where(SimulationResult.job_id == job_id, col(SimulationResult.invoice_id) > after)
            .order_by(col(SimulationResult.invoice_id))
            .limit(CSV_CHUNK)
        ).all()
        if not rows:
            return
        yield [_RESULT.validate_python(row) for _, row in rows]
        after = rows[-1][0]


def csv_ready(session: Session, job_id: int) -> None:
    """404 for an unknown simulation job, 409 while it is not done."""
    job, _ = _run(session, job_id)
    if job.status != "done":
        raise conflict(
            f"simulation job {job_id} is {job.status}; its CSV is ready when it is done",
            {"status": job.status},
        )


def csv_text(sessions: SessionFactory, job_id: int) -> Iterator[str]:
    """The per-invoice CSV of a finished job (the engine's ``csv_rows``, as the synchronous
    route writes it), a chunk of rows at a time, read in a session of its own (a streamed
    answer outlives the request's session)."""
    with sessions() as session:
        first = True
        for chunk in _result_chunks(session, job_id):
            rows = engine.csv_rows(chunk)
            yield lines(rows if first else rows[1:])
            first = False
        if first:  # no rows at all: the header alone
            yield lines(engine.csv_rows([])[:1])


def lines(rows: Sequence[Sequence[object]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def public(session: Session, job_id: int) -> SimulationJobPublic:
    """The job as ``GET /v1/policies/simulations/{id}`` shows it (404 for an unknown one)."""
    job, run = _run(session, job_id)
    assert job.id is not None
    done = job.status == "done"
    return SimulationJobPublic(
        id=job.id,
        status=job.status,
        requested_by=job.requested_by,
        params=job.params,
        policy=str(run.policy.get("name", "")),
        total=job.total,
        done=run.done,
        created_at=job.created_at,
        finished_at=job.finished_at,
        error=run.error,
        totals=run.totals if done else None,
        csv_url=f"/v1/policies/simulations/{job.id}/result.csv" if done else None,
    )
