"""The managed list of collectors (admin): the only addresses reminders may give as
Reply-To."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Admin, SessionDep, Viewer
from arflow.customers import collectors
from models.collector import CollectorCreate, CollectorPublic, CollectorUpdate

router = APIRouter(prefix="/v1", tags=["collectors"])


@router.post("/collectors", response_model=CollectorPublic, status_code=201)
def create_collector(body: CollectorCreate, session: SessionDep, _: Admin) -> CollectorPublic:
    """A collector and the address replies to its reminders go to; 409 when listed."""
    return CollectorPublic.model_validate(collectors.create_collector(session, body))


@router.get("/collectors", response_model=list[CollectorPublic])
def list_collectors(session: SessionDep, _: Viewer) -> list[CollectorPublic]:
    return [CollectorPublic.model_validate(c) for c in collectors.list_collectors(session)]


@router.patch("/collectors/{collector_id}", response_model=CollectorPublic)
def update_collector(
    collector_id: int, body: CollectorUpdate, session: SessionDep, _: Admin
) -> CollectorPublic:
    """Rename, or deactivate (``"active": false``): reminders then stop giving its address
    as Reply-To, and it can no longer be assigned."""
    return CollectorPublic.model_validate(collectors.update_collector(session, collector_id, body))
