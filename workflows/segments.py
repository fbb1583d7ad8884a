"""A customer moved segment after a payment: their open invoices' workflows follow the new
segment's policy from their next step on. Started by the paying invoice's workflow (which must
not wait for its own update), one per move; the activity does the updates."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.types import SegmentMove, StatementRun


@workflow.defn(name="SegmentSwitchWorkflow")
class SegmentSwitchWorkflow:
    @workflow.run
    async def run(self, move: SegmentMove) -> dict[str, str]:
        """The invoices whose workflow did not switch, with the reason."""
        failed: dict[str, str] = await workflow.execute_activity(
            "switch_segment_policies",
            move,
            start_to_close_timeout=timedelta(minutes=10),
            # Attempts 10, 20, 40, 80 and 160 s apart: a database restart (a minute or so) is
            # waited out; five attempts one second apart gave up after 15 s.
            retry_policy=RetryPolicy(maximum_attempts=6, initial_interval=timedelta(seconds=10)),
        )
        return failed


@workflow.defn(name="CustomerReviewWorkflow")
class CustomerReviewWorkflow:
    """Started daily by a Schedule: figures change with time alone (an invoice growing
    overdue raises the risk score, passes the credit-hold limit), so every customer with open
    invoices is re-evaluated; the moves switch their invoices like any other."""

    @workflow.run
    async def run(self, run: StatementRun | None = None) -> dict[str, int]:
        at = run.at if run and run.at else workflow.now()
        result: dict[str, int] = await workflow.execute_activity(
            "review_customers",
            StatementRun(at=at),
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=10)),
            result_type=dict[str, int],
        )
        return result
