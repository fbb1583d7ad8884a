"""Switch a customer's open invoices to their new segment's policy (SegmentSwitchWorkflow)."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.profiles import switch_policies
from arflow.config import Settings
from arflow.db import SessionFactory
from workflows.types import SegmentMove


class SegmentActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    @activity.defn(name="start_segment_switch")
    async def start_segment_switch(self, move: SegmentMove) -> None:
        """Start the switch workflow (a retry finds it started)."""
        try:
            await activity.client().start_workflow(
                "SegmentSwitchWorkflow",
                move,
                id=move.workflow_id,
                task_queue=activity.info().task_queue,
            )
        except WorkflowAlreadyStartedError:
            pass

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
        return [self.start_segment_switch, self.switch_segment_policies]
