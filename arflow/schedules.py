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
    """The daily inbox import (``statement_import_cron``, UTC): created, or updated in place
    when it exists (so a changed cron takes effect at the next worker start)."""
    schedule_id = statement_schedule_id(settings)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            # By name: passing StatementInboxWorkflow.run here trips mypy 2.4's overload
            # inference for other workflows' handles (get_workflow_handle_for) elsewhere.
            StatementInboxWorkflow.__name__,
            id=f"{schedule_id}-run",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[settings.statement_import_cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
        log.info("created schedule %s (%s)", schedule_id, settings.statement_import_cron)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
    return schedule_id


def monthly_statement_schedule_id(settings: Settings) -> str:
    return f"{settings.workflow_id_prefix}monthly-statements"


async def ensure_monthly_statement_schedule(client: Client, settings: Settings) -> str:
    """Daily at ``statement_run_cron`` (UTC): statements for the customers whose day it is."""
    schedule_id = monthly_statement_schedule_id(settings)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            MonthlyStatementWorkflow.__name__,
            id=f"{schedule_id}-run",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[settings.statement_run_cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
    return schedule_id
