"""The daily bank statement import: a Temporal Schedule starts this workflow, which imports
every new file of the inbox folder in one activity (heartbeating per file, so a killed worker's
import is retried soon, and safely: lines already taken are recognised as duplicates)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.types import InboxResult, StatementPass, StatementRun


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
    """Started daily by a Schedule; sends the statements of customers whose day it is.

    The Schedule fires at one UTC hour for every customer, the middle of the night in some
    zones: a statement outside its customer's contact window is deferred by the activity,
    and the run sleeps until the earliest window opens and passes again (the customers whose
    day it is are still chosen by the run's instant ``at``). The counts are the first pass's,
    plus what became of the deferred statements in the later passes: a deferred statement
    counts as ``deferred`` once and as ``sent`` (``blocked``, ``failed``) when it went."""

    @workflow.run
    async def run(self, run: StatementRun | None = None) -> dict[str, int]:
        at = run.at if run and run.at else workflow.now()
        if not workflow.patched("statement-contact-window"):
            old: dict[str, int] = await workflow.execute_activity(
                "send_statements", StatementRun(at=at), result_type=dict[str, int], **SEND
            )
            return old
        started = workflow.now()
        clock = at  # the run's own clock: ``at`` plus the time the run has taken
        counts: dict[str, int] = {}
        for n in range(MAX_PASSES):
            done: StatementPass = await workflow.execute_activity(
                "send_statements",
                StatementRun(at=at, now=clock),
                result_type=StatementPass,
                **SEND,
            )
            for outcome, count in done.counts.items():
                if n == 0 or outcome not in ("skipped", "deferred"):
                    counts[outcome] = counts.get(outcome, 0) + count
            if done.next_at is None:
                break
            wait = done.next_at - (at + (workflow.now() - started))
            if wait > timedelta(0):
                await workflow.sleep(wait)
            clock = max(done.next_at, at + (workflow.now() - started))
        return counts


MAX_PASSES = 48  # one per distinct window opening: far more than the zones of a day
SEND: dict[str, Any] = {
    "start_to_close_timeout": timedelta(hours=1),
    "heartbeat_timeout": timedelta(minutes=5),
    "retry_policy": RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=10)),
}
