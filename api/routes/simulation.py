"""Policy simulation on past invoices, answered at once (a larger one runs as a job)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Admin, SessionDep
from arflow.policies import simulation
from models.simulation import SimulationRequest
from models.types import utcnow

router = APIRouter(prefix="/v1/policies", tags=["policies"])


@router.post("/simulate", response_model=simulation.SimulationResult)
def simulate_policy(
    body: SimulationRequest, session: SessionDep, _: Admin
) -> simulation.SimulationResult:
    """What a draft policy (or a stored one) would have done to the past invoices of a window,
    given what really happened to them, next to what was really sent: totals per channel and
    ISO week, charges, escalations (and whether they came before the payment), per invoice
    on request. At most 2,000 invoices (409 above: run it as a job)."""
    return simulation.run_request(session, body, utcnow())
