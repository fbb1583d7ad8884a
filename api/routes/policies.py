from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Admin, OptionalTemporalDep, SessionDep, SettingsDep, TemporalDep, Viewer
from api.errors import not_found
from arflow.errors import Unavailable
from arflow.invoices import jobs, policy_switch
from arflow.policies import service as policies
from arflow.policies import versions
from models import DunningPolicy
from models.job import JobPublic
from models.policy import (
    DunningPolicyCreate,
    DunningPolicyPublic,
    PolicyDiff,
    PolicyPublish,
    PolicyPublished,
    PolicyVersionPublic,
)

router = APIRouter(prefix="/v1/policies", tags=["policies"])
VersionNumber = Annotated[int, Query(ge=1, le=2**31 - 1)]


@router.post("", status_code=201, response_model=DunningPolicyPublic)
def create_policy(body: DunningPolicyCreate, session: SessionDep, who: Admin) -> DunningPolicy:
    return policies.create_policy(session, body, who.actor)


@router.get("", response_model=list[DunningPolicyPublic])
def list_policies(session: SessionDep, _: Viewer) -> list[DunningPolicy]:
    return policies.list_policies(session)


@router.get("/{policy_id}", response_model=DunningPolicyPublic)
def get_policy(policy_id: int, session: SessionDep, _: Viewer) -> DunningPolicy:
    policy = session.get(DunningPolicy, policy_id)
    if policy is None:
        raise not_found("policy", policy_id)
    return policy


@router.put("/{policy_id}", response_model=PolicyPublished)
async def publish_version(
    policy_id: int,
    body: PolicyPublish,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    who: Admin,
) -> PolicyPublished:
    """Publish a new version of the policy: the whole content (as for a create; the name stays).
    New invoices get it at once. ``running``: ``stay`` leaves running invoices on the version
    they run; ``switch`` moves each open invoice on an older version to this one from its next
    step on, as a job (passed steps recorded as skipped, nothing sent again)."""
    if body.running == "switch" and client is None:
        raise Unavailable("Temporal is not connected: nothing published; try again")
    row = await asyncio.to_thread(
        versions.publish, session, policy_id, body.content(), who.actor, body.note
    )
    policy = await asyncio.to_thread(versions.get_policy, session, policy_id)
    published = versions.public(row, policy)
    if body.running == "stay":
        waiting = await asyncio.to_thread(policy_switch.running_on_older, session, policy)
        return PolicyPublished(version=published, running_invoices=len(waiting))
    assert client is not None
    try:
        job, count = await policy_switch.switch_running(
            session, client, settings, policy_id, who.actor
        )
    except Unavailable as exc:
        raise Unavailable(
            f"version {row.version} is published; moving the running invoices did not start "
            f"(Temporal did not answer): POST /v1/policies/{policy_id}/switch-running",
            {"version": row.version},
        ) from exc
    return PolicyPublished(
        version=published, switch_job_id=job.id if job else None, running_invoices=count
    )


@router.post("/{policy_id}/switch-running", status_code=202, response_model=JobPublic | None)
async def switch_running(
    policy_id: int,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Admin,
) -> JobPublic | None:
    """Move every open invoice on an older version of the policy to its current version from
    the next step on (a job; null when every open invoice runs the current version)."""
    job, _ = await policy_switch.switch_running(session, client, settings, policy_id, who.actor)
    return jobs.public(session, job) if job else None


@router.get("/{policy_id}/versions", response_model=list[PolicyVersionPublic])
def list_versions(policy_id: int, session: SessionDep, _: Viewer) -> list[PolicyVersionPublic]:
    """Every version of the policy, newest first, with who published it, when and why."""
    return versions.list_versions(session, policy_id)


@router.get("/{policy_id}/versions/{version}", response_model=PolicyVersionPublic)
def get_version(
    policy_id: int, version: int, session: SessionDep, _: Viewer
) -> PolicyVersionPublic:
    row = versions.get_version(session, policy_id, version)
    return versions.public(row, versions.get_policy(session, policy_id))


@router.get("/{policy_id}/diff", response_model=PolicyDiff)
def diff_versions(
    policy_id: int,
    session: SessionDep,
    _: Viewer,
    from_: Annotated[int, Query(alias="from", ge=1, le=2**31 - 1)],
    to: VersionNumber,
) -> PolicyDiff:
    """What changed between two versions: each field, and each step and ladder stage by its
    key (added, removed, or which of its fields changed)."""
    return versions.diff(session, policy_id, from_, to)
