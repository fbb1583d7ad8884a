"""A segment's champion / challenger experiment: start (or replace), stop, promote.

The segment row names the running experiment and its challenger (what new invoices need at
creation, ``arms.run_for``); the ``experiments`` table keeps every experiment with who started
and ended it, when, and how (``promoted``, ``stopped``, ``replaced``).
"""

from __future__ import annotations

from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.config import Settings
from arflow.customers.segments import ensure_default_segments, get_segment
from arflow.errors import NotFound, Unavailable, conflict, not_found, unprocessable
from arflow.invoices import policy_switch
from arflow.policies import versions
from models import DunningPolicy, Experiment, Segment
from models.experiment import ExperimentPublic, ExperimentSet, PromoteResult
from models.policy import DunningPolicyCreate
from models.types import utcnow


def segment_or_404(session: Session, name: str) -> Segment:
    ensure_default_segments(session)
    seg = get_segment(session, name)
    if seg is None:
        raise not_found("segment", repr(name))
    return seg


def public(exp: Experiment, seg: Segment | None) -> ExperimentPublic:
    running = seg is not None and seg.experiment_id == exp.id
    return ExperimentPublic.model_validate(exp, update={"running": running})


def history(session: Session, segment: str) -> list[Experiment]:
    """The segment's experiments, newest first."""
    stmt = (
        select(Experiment)
        .where(Experiment.segment == segment)
        .order_by(col(Experiment.started_at).desc(), col(Experiment.id).desc())
    )
    return list(session.exec(stmt).all())


def _policy(session: Session, name: str) -> DunningPolicy | None:
    return session.exec(select(DunningPolicy).where(DunningPolicy.name == name)).first()


def _end(seg: Segment, exp: Experiment, actor: str, outcome: str) -> None:
    exp.ended_at = utcnow()
    exp.ended_by = actor
    exp.outcome = outcome
    seg.experiment_id = None
    seg.challenger_policy = None
    seg.challenger_version = None
    seg.challenger_share_pct = 0
    seg.updated_at = utcnow()


def running(session: Session, seg: Segment) -> Experiment | None:
    return None if seg.experiment_id is None else session.get(Experiment, seg.experiment_id)


def start(session: Session, name: str, body: ExperimentSet, actor: str) -> Experiment:
    """Start an experiment on segment ``name``: from now on its new invoices of customers
    hashed below ``share_pct`` run ``challenger_policy`` at ``challenger_version``. A running
    experiment ends (``replaced``): a new share or challenger is a new experiment, so invoices
    assigned under different rules never mix in a report."""
    seg = segment_or_404(session, name)
    challenger = _policy(session, body.challenger_policy)
    if challenger is None or challenger.id is None:
        raise unprocessable(f"unknown policy {body.challenger_policy!r}")
    try:
        versions.load_spec(session, challenger.id, body.challenger_version)
    except NotFound:
        raise unprocessable(
            f"policy {body.challenger_policy!r} has no version {body.challenger_version}"
        ) from None
    champion = _policy(session, seg.policy_name)
    champion_version = champion.version if champion is not None else None
    if challenger.name == seg.policy_name and body.challenger_version == champion_version:
        raise unprocessable(
            f"the challenger is the champion: segment {name!r} runs {seg.policy_name!r} "
            f"version {champion_version} already"
        )
    previous = running(session, seg)
    if previous is not None:
        _end(seg, previous, actor, "replaced")
        session.add(previous)
    exp = Experiment(
        segment=seg.name,
        champion_policy=seg.policy_name,
        champion_version=champion_version,
        challenger_policy=challenger.name,
        challenger_version=body.challenger_version,
        share_pct=body.share_pct,
        started_at=utcnow(),
        started_by=actor,
    )
    session.add(exp)
    session.flush()
    seg.experiment_id = exp.id
    seg.challenger_policy = challenger.name
    seg.challenger_version = body.challenger_version
    seg.challenger_share_pct = body.share_pct
    seg.updated_at = utcnow()
    session.add(seg)
    session.commit()
    session.refresh(exp)
    return exp


def _running_or_409(session: Session, seg: Segment) -> Experiment:
    exp = running(session, seg)
    if exp is None:
        raise conflict(f"segment {seg.name!r} runs no experiment")
    return exp


def stop(session: Session, name: str, actor: str) -> Experiment:
    """End the segment's experiment without promoting: new invoices all get the champion
    again; those already on the challenger keep running it."""
    seg = segment_or_404(session, name)
    exp = _running_or_409(session, seg)
    _end(seg, exp, actor, "stopped")
    session.add_all([seg, exp])
    session.commit()
    session.refresh(exp)
    return exp


async def promote(
    session: Session, client: Client, settings: Settings, name: str, actor: str
) -> PromoteResult:
    """Make the challenger the champion: its version's content becomes a new version of the
    segment's policy (``versions.publish``), the experiment ends (``promoted``), and the
    champion's running invoices switch to that version at their next step
    (``versions.switch_running``, a job). Invoices on the challenger arm keep running the
    challenger version they started with (the same content)."""
    seg = segment_or_404(session, name)
    exp = _running_or_409(session, seg)
    champion = _policy(session, seg.policy_name)
    challenger = _policy(session, exp.challenger_policy)
    if champion is None or champion.id is None or challenger is None or challenger.id is None:
        raise conflict(
            f"the experiment's policies are gone: {seg.policy_name!r} / {exp.challenger_policy!r}"
        )
    try:
        found = versions.get_version(session, challenger.id, exp.challenger_version)
    except NotFound:
        raise conflict(
            f"policy {exp.challenger_policy!r} has no version {exp.challenger_version}"
        ) from None
    body = DunningPolicyCreate.model_validate({**found.body, "name": champion.name})
    note = (
        f"promoted from {exp.challenger_policy} version {exp.challenger_version} "
        f"(experiment {exp.id} of segment {seg.name})"
    )
    published = versions.publish(session, champion.id, body, actor, note)
    _end(seg, exp, actor, "promoted")
    exp.promoted_version = published.version
    session.add_all([seg, exp])
    session.commit()
    try:
        job, _ = await policy_switch.switch_running(session, client, settings, champion.id, actor)
    except Unavailable as exc:
        raise Unavailable(
            f"the challenger is promoted (version {published.version} of {champion.name!r}); "
            "moving the running invoices did not start (Temporal did not answer): "
            f"POST /v1/policies/{champion.id}/switch-running",
            {"version": published.version, "experiment_id": exp.id},
        ) from exc
    if job is not None:
        exp.switch_job_id = job.id
        session.add(exp)
        session.commit()
    session.refresh(exp)
    session.refresh(seg)
    return PromoteResult(
        experiment=public(exp, seg),
        policy=champion.name,
        version=published.version,
        switch_job_id=exp.switch_job_id,
    )
