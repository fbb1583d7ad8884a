"""Switch a customer's open invoices to their new segment's policy (SegmentSwitchWorkflow)."""

from __future__ import annotations

from temporalio import activity

from arflow import gateway
from arflow.config import Settings
from arflow.db import SessionFactory
from arflow.invoices import recording
from arflow.invoices.service import switch_policies
from models.types import utcnow
from workflows.types import SegmentMove, StatementRun


class SegmentActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    @activity.defn(name="start_segment_switch")
    async def start_segment_switch(self, move: SegmentMove) -> None:
        """Start the switch workflow (a retry finds it started)."""
        await self._start(move)

    @activity.defn(name="review_customers")
    async def review_customers(self, run: StatementRun) -> dict[str, int]:
        """Re-evaluate every customer with open invoices (segment and credit hold), one
        transaction each; each move starts its switch workflow."""
        at = run.at or utcnow()
        counts = {"customers": 0, "moved": 0, "holds_changed": 0}
        with self.sessions() as session:
            for customer_id in recording.customers_to_review(session):
                hold_changed, move = recording.review_customer(session, customer_id, at)
                counts["customers"] += 1
                counts["holds_changed"] += hold_changed
                if move is not None:
                    counts["moved"] += 1
                    await self._start(move)
                activity.heartbeat(customer_id)
        return counts

    async def _start(self, move: SegmentMove) -> None:
        await gateway.start_segment_switch(activity.client(), move, activity.info().task_queue)

    @activity.defn(name="switch_segment_policies")
    async def switch_segment_policies(self, move: SegmentMove) -> dict[str, str]:
        """The ``change_policy`` update on each invoice; an invoice closed meanwhile (or
        already on the policy) is reported, not retried."""
        with self.sessions() as session:
            failed = await switch_policies(
                session,
                activity.client(),
                self.settings,
                move.invoice_ids,
                move.policy_name,
                "workflow",
                f"segment {move.previous} -> {move.segment}",
                move.segment,
            )
        return {str(k): v for k, v in failed.items()}

    def all(self) -> list[object]:
        return [self.start_segment_switch, self.switch_segment_policies, self.review_customers]
