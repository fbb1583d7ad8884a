"""Champion / challenger: a segment's experiment (start, stop, promote, history) and its
report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import Admin, SessionDep, SettingsDep, TemporalDep, TodayDep, Viewer
from arflow.experiments import report, service
from models.experiment import ExperimentPublic, ExperimentSet, PromoteResult
from models.types import MAX_ID

router = APIRouter(tags=["experiments"])

SegmentName = Annotated[str, Path(min_length=1, max_length=50)]


@router.get("/v1/segments/{name}/experiments", response_model=list[ExperimentPublic])
def list_experiments(name: SegmentName, session: SessionDep, _: Viewer) -> list[ExperimentPublic]:
    """The segment's experiments, newest first (``running``: the one new invoices join)."""
    seg = service.segment_or_404(session, name)
    return [service.public(e, seg) for e in service.history(session, seg.name)]


@router.put("/v1/segments/{name}/experiment", response_model=ExperimentPublic)
def put_experiment(
    name: SegmentName, body: ExperimentSet, session: SessionDep, who: Admin
) -> ExperimentPublic:
    """Start a champion / challenger experiment: from now on the segment's new invoices of
    customers whose stable hash falls below ``share_pct`` (1..99) run ``challenger_policy`` at
    ``challenger_version``; the others run the segment's policy (the champion). A customer's
    invoices stay on one arm. A running experiment ends (``replaced``) and a new one starts.
    Unknown policy or version: 422."""
    exp = service.start(session, name, body, who.actor)
    return service.public(exp, service.segment_or_404(session, name))


@router.delete("/v1/segments/{name}/experiment", response_model=ExperimentPublic)
def delete_experiment(name: SegmentName, session: SessionDep, who: Admin) -> ExperimentPublic:
    """Stop the experiment without promoting: new invoices all run the champion again (the
    challenger's running invoices keep their version). No experiment running: 409."""
    exp = service.stop(session, name, who.actor)
    return service.public(exp, service.segment_or_404(session, name))


@router.post(
    "/v1/segments/{name}/experiment/promote", status_code=202, response_model=PromoteResult
)
async def promote_experiment(
    name: SegmentName,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Admin,
) -> PromoteResult:
    """Make the challenger the champion: its version's content is published as a new version
    of the segment's policy, the experiment ends (``promoted``, with who and when), and the
    champion's running invoices switch to the new version at their next step (a job: follow
    it at ``GET /v1/jobs/{id}``). No experiment running: 409."""
    return await service.promote(session, client, settings, name, who.actor)


@router.get(
    "/v1/reports/experiments/{segment}",
    response_model=report.ExperimentReport,
    tags=["reports"],
)
def experiment_report(
    segment: SegmentName,
    session: SessionDep,
    _: Viewer,
    today: TodayDep,
    experiment_id: Annotated[
        int | None, Query(gt=0, le=MAX_ID, description="an earlier experiment; default: latest")
    ] = None,
) -> report.ExperimentReport:
    """Per arm (champion, challenger) of the segment's latest experiment: invoices and
    amounts per currency, invoices collected within 30/60/90 days of due (of those whose
    window is over), average days to pay and late, reminders sent (and per 1,000 units
    received, per currency), disputes opened and opt-outs; and the difference in the share
    collected within 60 days (challenger - champion, points) with its 95% confidence interval
    (statsmodels, Newcomb). A segment that never ran one: empty arms and a message."""
    return report.experiment_report(session, segment, today, experiment_id)
