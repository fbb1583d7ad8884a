"""Moving running invoices to the current version of their policy (``running="switch"`` on
publishing, or ``POST /v1/policies/{id}/switch-running``): a job (``arflow.invoices.jobs``,
kind ``policy_switch``) whose items each get the recorded ``change_policy`` update, so each
invoice follows the new version from its next step on (passed steps recorded as skipped,
nothing sent again) and records the version it now runs."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import Session, col, func, or_, select
from temporalio.client import Client

from arflow.config import Settings
from arflow.invoices import jobs
from arflow.invoices.service import run_update
from arflow.policies.versions import get_policy, load_spec
from models import DunningPolicy, Invoice, Job
from models.experiment import CHALLENGER, Experiment
from workflows.types import CLOSED_STATUSES, PolicyChangeRequest, PolicySpec


def running_on_older(session: Session, policy: DunningPolicy) -> list[int]:
    """The open invoices of ``policy`` that run an older version than its current one, but
    not those on the challenger arm of an experiment still running (they run the version the
    experiment tests, even when it is an older one of this policy)."""
    running_challengers = select(Experiment.id).where(col(Experiment.ended_at).is_(None))
    ids = session.exec(
        select(Invoice.id)
        .where(
            Invoice.policy_id == policy.id,
            col(Invoice.status).not_in(CLOSED_STATUSES),
            func.coalesce(Invoice.policy_version, 0) < policy.version,
            # (spelled out for NULLs: NOT (NULL AND x) would drop every invoice not in one)
            or_(
                col(Invoice.experiment_arm).is_(None),
                col(Invoice.experiment_arm) != CHALLENGER,
                col(Invoice.experiment_id).is_(None),
                col(Invoice.experiment_id).not_in(running_challengers),
            ),
        )
        .order_by(col(Invoice.id))
    ).all()
    return [i for i in ids if i is not None]


async def switch_running(
    session: Session, client: Client, settings: Settings, policy_id: int, actor: str
) -> tuple[Job | None, int]:
    """Start a job moving each open invoice on an older version of the policy to its current
    version from the next step on; (the job, how many invoices). No job when there are none."""
    policy = get_policy(session, policy_id)
    ids = running_on_older(session, policy)
    if not ids:
        return None, 0
    params = {"policy_id": policy_id, "version": policy.version}
    job = await jobs.start_policy_switch(session, client, settings, params, ids, actor)
    return job, len(ids)


def _switch_target(
    session: Session, invoice_id: int, policy_id: int, version: int
) -> PolicySpec | str:
    """The spec invoice ``invoice_id`` switches to, or why it does not."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        return "the invoice no longer exists"
    if invoice.policy_id != policy_id:
        return f"the invoice now runs another policy ({invoice.policy_id})"
    if (invoice.policy_version or 0) >= version:
        return f"the invoice already runs version {invoice.policy_version}"
    return load_spec(session, policy_id, version)


def _stamp(session: Session, invoice_id: int, version: int) -> None:
    invoice = session.get(Invoice, invoice_id)
    assert invoice is not None
    invoice.policy_version = version
    session.add(invoice)
    session.commit()


async def switch_invoice(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    params: dict[str, Any],
    actor: str,
    update_id: str,
) -> tuple[str, str | None]:
    """One item of a policy-switch job: the invoice's workflow follows version
    ``params["version"]`` from its next step on (the recorded ``change_policy`` update), and
    the invoice records that version. ``("refused", why)`` when it is on another policy or
    already on that version or a later one; a workflow's refusal raises."""
    policy_id, version = int(params["policy_id"]), int(params["version"])
    target = await asyncio.to_thread(_switch_target, session, invoice_id, policy_id, version)
    if isinstance(target, str):
        return "refused", target
    request = PolicyChangeRequest(
        policy=target, actor=actor, reason=f"policy {target.name!r} version {version} published"
    )
    await run_update(
        session, client, settings, invoice_id, "change_policy", request, update_id=update_id
    )
    await asyncio.to_thread(_stamp, session, invoice_id, version)
    return "switched", f"version {version}"
