"""Long policy simulations as jobs (``POST /v1/policies/simulations``): the job's workflow and
activity run for real on the time-skipping server with a worker; its totals and CSV are the
synchronous engine's for the same window and instant; a retried batch writes no duplicate; the
results survive an API restart; refusals are 4xx. Both databases."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.simulation import SimulationActivities
from api.app import create_app
from arflow import gateway
from arflow.db import session_factory
from arflow.policies import simulation as engine_mod
from arflow.policies import simulation_jobs
from bench.simulate_10k import Seeded, draft_body, seed
from models import Invoice, Job
from models.simulation import SimulationRequest
from models.simulation_job import SimulationResult, SimulationRun
from tests.conftest import Harness, harness
from tests.test_api import error_of

TOTALS: TypeAdapter[engine_mod.SimulationTotals] = TypeAdapter(engine_mod.SimulationTotals)


@pytest.fixture
async def hh(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> Any:  # AsyncIterator[Harness], both databases
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


def seeded(h: Harness, n: int = 60, customers: int = 7) -> Seeded:
    return seed(h.engine, n, customers, today=date(2026, 11, 30), rng=random.Random(7))


def request_json(data: Seeded, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = draft_body(data).model_dump(mode="json", exclude_none=True)
    return body | overrides


async def finished(h: Harness, job_id: int) -> dict[str, Any]:
    for _ in range(400):
        job = (await h.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in ("done", "failed"):
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def expected(h: Harness, body: dict[str, Any], job_id: int) -> tuple[dict[str, Any], str]:
    """The synchronous engine's totals and CSV for the same request, at the job's instant."""
    with Session(h.engine) as s:
        run = s.get(SimulationRun, job_id)
        assert run is not None
        req = SimulationRequest.model_validate(body | {"per_invoice": True})
        answer = engine_mod.run_request(s, req, run.as_of, limit=10_000)
    assert answer.invoices is not None
    rows = engine_mod.csv_rows(answer.invoices)
    return TOTALS.dump_python(answer.totals, mode="json"), simulation_jobs.lines(rows)


async def test_a_simulation_job_runs_and_matches_the_synchronous_answer(hh: Harness) -> None:
    h = hh
    data = seeded(h)
    body = request_json(data)
    resp = await h.post("/v1/policies/simulations", body, role="admin")
    assert resp.status_code == 202, resp.text
    started = resp.json()
    assert started["kind"] == "simulation" and started["total"] == 60
    job = await finished(h, started["id"])
    assert job["status"] == "done", job
    assert job["counts"] == {"pending": 0, "simulated": 60}
    shown = (await h.get(f"/v1/policies/simulations/{job['id']}", role="admin")).json()
    assert shown["status"] == "done" and shown["done"] == 60 and shown["policy"] == "bench draft"
    totals, text = expected(h, body, job["id"])
    assert shown["totals"] == totals
    assert totals["invoices"] == 60 and totals["sends"] > 0 and totals["real_sends"] > 0
    # The synchronous route answers the same (its own instant: seconds later, same result).
    sync = await h.post("/v1/policies/simulate", body, role="admin")
    assert sync.status_code == 200, sync.text
    assert sync.json()["totals"] == totals
    assert shown["csv_url"] == f"/v1/policies/simulations/{job['id']}/result.csv"
    download = await h.get(shown["csv_url"], role="admin")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    assert download.text == text
    table = list(csv.DictReader(io.StringIO(download.text)))
    assert len(table) == 60 and table[0]["invoice_id"]
    assert [int(r["invoice_id"]) for r in table] == sorted(int(r["invoice_id"]) for r in table)
    # Restart the API (a new app on the same database): nothing is lost.
    app = create_app(h.settings, engine=h.engine, temporal=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as fresh:
        again = await fresh.get(f"/v1/policies/simulations/{job['id']}", headers=h.as_role("admin"))
        assert again.json()["totals"] == totals
        csv_again = await fresh.get(shown["csv_url"], headers=h.as_role("admin"))
        assert csv_again.text == text


async def test_refusals_are_4xx(hh: Harness) -> None:
    h = hh
    data = seeded(h, n=12, customers=3)
    body = request_json(data)
    assert (await h.post("/v1/policies/simulations", body)).status_code == 403  # specialist
    assert (await h.get("/v1/policies/simulations/1")).status_code == 403  # viewer
    unknown = await h.post(
        "/v1/policies/simulations",
        {k: v for k, v in body.items() if k != "policy"} | {"policy_id": 99_999},
        role="admin",
    )
    assert unknown.status_code == 422 and "99999" in error_of(unknown)
    empty = await h.post(
        "/v1/policies/simulations",
        body | {"issued_from": "2001-01-01", "issued_to": "2001-02-01"},
        role="admin",
    )
    assert empty.status_code == 422 and "selects no invoice" in error_of(empty)
    backwards = await h.post(
        "/v1/policies/simulations",
        body | {"issued_from": "2026-02-01", "issued_to": "2026-01-01"},
        role="admin",
    )
    assert backwards.status_code == 422
    bad = await h.post("/v1/policies/simulations", body | {"policy": {"name": "x"}}, role="admin")
    assert bad.status_code == 422
    for path in ("/v1/policies/simulations/424242", "/v1/policies/simulations/424242/result.csv"):
        missing = await h.get(path, role="admin")
        assert missing.status_code == 404, path
        assert "simulation job 424242 not found" in error_of(missing)
    # A job of another kind is not a simulation job.
    with Session(h.engine) as s:
        other = Job(kind="send_now", requested_by="admin:x", params={}, total=0)
        s.add(other)
        s.commit()
        other_id = other.id
        # A simulation job not finished yet: its totals are null, its CSV a 409.
        req = SimulationRequest.model_validate(body)
        spec, ids = simulation_jobs.selection(s, req)
        queued = simulation_jobs.store(s, req, spec, ids, "admin:test").id
    assert (await h.get(f"/v1/policies/simulations/{other_id}", role="admin")).status_code == 404
    shown = (await h.get(f"/v1/policies/simulations/{queued}", role="admin")).json()
    assert (shown["status"], shown["totals"], shown["csv_url"]) == ("queued", None, None)
    early = await h.get(f"/v1/policies/simulations/{queued}/result.csv", role="admin")
    assert early.status_code == 409 and "is queued" in error_of(early)
    job = (await h.get(f"/v1/jobs/{queued}")).json()
    assert job["counts"] == {"pending": 12, "simulated": 0}


def test_a_retried_run_writes_no_duplicate_and_batches_keep_customers_whole(
    engine: Engine,
) -> None:
    data = seed(engine, 45, 6, today=date(2026, 11, 30), rng=random.Random(3))
    req = draft_body(data)
    sessions = session_factory(engine)
    with Session(engine) as s:
        spec, ids = simulation_jobs.selection(s, req)
        job_id = simulation_jobs.store(s, req, spec, ids, "admin:test").id
        assert job_id is not None
        batches = simulation_jobs.batches(s, ids, 8)
        owners = dict(
            s.exec(select(Invoice.id, Invoice.customer_id).where(col(Invoice.id).in_(ids))).all()
        )
    assert sorted(i for b in batches for i in b) == sorted(ids)
    customers = [{owners[i] for i in b} for b in batches]
    for a, b in zip(customers, customers[1:], strict=False):
        assert not a & b  # a customer's invoices never straddle two batches
    # A first attempt died after two batches; the retry goes on from there.
    with Session(engine) as s:
        plan = simulation_jobs.begin(s, job_id)
        for batch in batches[:2]:
            simulation_jobs.run_batch(s, plan, batch)
        # ... and an attempt running alongside wrote a batch the retry also runs.
        simulation_jobs.run_batch(s, plan, batches[2])
        simulation_jobs.run_batch(s, plan, batches[2])
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    env.run(SimulationActivities(sessions, 8).run_simulation_job, job_id)
    with Session(engine) as s:
        stored = s.exec(
            select(func.count())
            .select_from(SimulationResult)
            .where(SimulationResult.job_id == job_id)
        ).one()
        shown = simulation_jobs.public(s, job_id)
        run = s.get(SimulationRun, job_id)
        assert run is not None
        whole = engine_mod.run_request(s, req, run.as_of, limit=10_000)
    assert stored == len(ids) == shown.done
    # Heartbeats: the invoices done so far, at the retry's start and after each batch.
    assert beats[-1] == len(ids) and beats == sorted(beats) and len(beats) >= 3
    assert shown.status == "done"
    assert shown.totals == TOTALS.dump_python(whole.totals, mode="json")


def test_a_failed_job_says_why(engine: Engine) -> None:
    data = seed(engine, 5, 2, today=date(2026, 11, 30), rng=random.Random(5))
    req: SimulationRequest = draft_body(data)
    with Session(engine) as s:
        spec, ids = simulation_jobs.selection(s, req)
        job_id = simulation_jobs.store(s, req, spec, ids, "admin:test").id
        assert job_id is not None
    ActivityEnvironment().run(
        SimulationActivities(session_factory(engine)).fail_simulation_job, job_id, "boom"
    )
    with Session(engine) as s:
        shown = simulation_jobs.public(s, job_id)
    assert (shown.status, shown.error, shown.totals) == ("failed", "boom", None)


async def test_the_workflow_marks_a_job_failed_when_its_activity_gives_up(h: Harness) -> None:
    """A simulation job whose run is missing: the activity fails for good (not found), the
    workflow records the failure instead of leaving the job running."""
    with Session(h.engine) as s:
        job = Job(kind="simulation", requested_by="admin:test", params={}, total=3)
        s.add(job)
        s.commit()
        job_id = job.id
    assert job_id is not None
    await gateway.start_simulation_job(h.client, h.settings, job_id)
    handle = h.client.get_workflow_handle(gateway.job_workflow_id(h.settings, job_id))
    assert await handle.result() == "failed"
    shown = (await h.get(f"/v1/jobs/{job_id}")).json()
    assert shown["status"] == "failed" and shown["finished_at"] is not None
