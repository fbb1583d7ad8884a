"""Long policy simulations as jobs: ask with the synchronous route's body, follow the job at
``GET /v1/jobs/{id}`` (or here), read the totals and download the per-invoice CSV once done."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from api.deps import Admin, SessionDep, SettingsDep, TemporalDep
from arflow.invoices import jobs
from arflow.policies import simulation_jobs
from models.job import JobPublic
from models.simulation import SimulationRequest
from models.simulation_job import SimulationJobPublic

router = APIRouter(prefix="/v1/policies/simulations", tags=["policies"])


@router.post("", status_code=202, response_model=JobPublic)
async def start_simulation(
    body: SimulationRequest,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Admin,
) -> JobPublic:
    """The synchronous simulation's body (``POST /v1/policies/simulate``) as a job, for windows
    of any size up to 50,000 invoices: the policy and the invoices are chosen now (404 / 422
    as there), the job runs in the background in batches. Follow it at ``GET /v1/jobs/{id}``
    (``counts``: ``simulated`` and ``pending``) or ``GET /v1/policies/simulations/{id}``."""
    job = await simulation_jobs.start_job(session, client, settings, body, who.actor)
    return jobs.public(session, job)


@router.get("/{job_id}", response_model=SimulationJobPublic)
def get_simulation(job_id: int, session: SessionDep, _: Admin) -> SimulationJobPublic:
    """The job's status and progress; when done, its totals (per channel, per ISO week, fees
    and interest, escalations, and what was really sent) and the CSV's address. 404 for an
    id that is not a simulation job."""
    return simulation_jobs.public(session, job_id)


@router.get(
    "/{job_id}/result.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per invoice"}},
)
def simulation_csv(
    job_id: int, request: Request, session: SessionDep, _: Admin
) -> StreamingResponse:
    """The per-invoice result as CSV (the synchronous route's columns), streamed. 404 for an
    id that is not a simulation job, 409 while the job is not done."""
    simulation_jobs.csv_ready(session, job_id)
    sessions = partial(Session, request.app.state.engine, expire_on_commit=False)
    return StreamingResponse(
        simulation_jobs.csv_text(sessions, job_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="simulation-{job_id}.csv"'},
    )
