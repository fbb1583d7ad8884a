"""What every durable job shares, whichever domain runs it (account actions, policy switches,
simulations): its workflow's start, and the job marked failed when Temporal does not answer."""

from __future__ import annotations

from collections.abc import Awaitable

from sqlmodel import Session

from arflow.errors import Unavailable
from models import Job
from models.types import utcnow


async def started(session: Session, job: Job, start: Awaitable[None]) -> Job:
    """``job`` (stored) once ``start`` started its workflow; when Temporal does not answer the
    job is marked failed and ``Unavailable`` is raised (the request may be retried)."""
    try:
        await start
    except Unavailable:
        job.status, job.finished_at = "failed", utcnow()
        session.add(job)
        session.commit()
        raise
    return job
