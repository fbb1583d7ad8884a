"""Temporal Schedules the product needs, created (or brought up to date) at worker start."""

from __future__ import annotations

import logging

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from arflow.config import Settings
from workflows.statements import MonthlyStatementWorkflow, StatementInboxWorkflow

log = logging.getLogger("arflow.schedules")


def statement_schedule_id(settings: Settings) -> str:
    return f"{settings.workflow_id_prefix}statement-inbox"


async def ensure_statement_schedule(client: Client, settings: Settings) -> str:
    """The daily inbox import (``statement_import_cron``, UTC)."""
    return await _ensure(
        client,
        settings,
        statement_schedule_id(settings),
        StatementInboxWorkflow.__name__,
        settings.statement_import_cron,
    )


def monthly_statement_schedule_id(settings: Settings) -> str:
    return f"{settings.workflow_id_prefix}monthly-statements"


async def ensure_monthly_statement_schedule(client: Client, settings: Settings) -> str:
    """Daily at ``statement_run_cron`` (UTC): statements for the customers whose day it is."""
    return await _ensure(
        client,
        settings,
        monthly_statement_schedule_id(settings),
        MonthlyStatementWorkflow.__name__,
        settings.statement_run_cron,
    )


def customer_review_schedule_id(settings: Settings) -> str:
    return f"{settings.workflow_id_prefix}customer-review"


async def ensure_customer_review_schedule(client: Client, settings: Settings) -> str:
    """Daily at ``customer_review_cron`` (UTC): every customer with open invoices re-evaluated."""
    return await _ensure(
        client,
        settings,
        customer_review_schedule_id(settings),
        "CustomerReviewWorkflow",
        settings.customer_review_cron,
    )


async def _ensure(
    client: Client, settings: Settings, schedule_id: str, workflow: str, cron: str
) -> str:
    """Create the schedule, or update it in place when it exists (a changed cron takes effect
    at the next worker start). The workflow is named, not passed as ``Workflow.run``:
    passing the method here trips mypy 2.4's overload inference for other workflows' handles
    (``get_workflow_handle_for``) elsewhere."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            workflow, id=f"{schedule_id}-run", task_queue=settings.task_queue
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
        log.info("created schedule %s (%s)", schedule_id, cron)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
    return schedule_id
