"""Temporal Schedules the product needs, created (or brought up to date) at worker start
through ``arflow.gateway.ensure_schedule``."""

from __future__ import annotations

from temporalio.client import Client

from arflow import gateway
from arflow.config import Settings
from workflows.statements import MonthlyStatementWorkflow, StatementInboxWorkflow


def statement_schedule_id(settings: Settings) -> str:
    return f"{settings.workflow_id_prefix}statement-inbox"


async def ensure_statement_schedule(client: Client, settings: Settings) -> str:
    """The daily inbox import (``statement_import_cron``, UTC)."""
    return await gateway.ensure_schedule(
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
    return await gateway.ensure_schedule(
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
    return await gateway.ensure_schedule(
        client,
        settings,
        customer_review_schedule_id(settings),
        "CustomerReviewWorkflow",
        settings.customer_review_cron,
    )
