"""The daily bank statement import: a Temporal Schedule starts this workflow, which imports
every new file of the inbox folder in one activity (heartbeating per file, so a killed worker's
import is retried soon, and safely: lines already taken are recognised as duplicates)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.types import InboxResult, StatementRun


@workflow.defn(name="StatementInboxWorkflow")
class StatementInboxWorkflow:
    @workflow.run
    async def run(self) -> InboxResult:
        return await workflow.execute_activity(
            "import_inbox",
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=10)),
            result_type=InboxResult,
        )


@workflow.defn(name="MonthlyStatementWorkflow")
class MonthlyStatementWorkflow:
    """Started daily by a Schedule; sends the statements of customers whose day it is."""

    @workflow.run
    async def run(self, run: StatementRun | None = None) -> dict[str, int]:
        at = run.at if run and run.at else workflow.now()
        result: dict[str, int] = await workflow.execute_activity(
            "send_statements",
            StatementRun(at=at),
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=10)),
            result_type=dict[str, int],
        )
        return result
