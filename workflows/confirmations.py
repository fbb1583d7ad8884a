"""A confirmation to a customer (plan agreed, promise noted, dispute received, ...): one small
workflow per confirmation, whose id is derived from its step key, so starting it twice sends
it once; its activity applies the reminders' delivery rules (``arflow.messages.confirmations``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

#: The step keys of confirmations start so: they are messages, not reminder steps.
CONFIRM_PREFIX = "confirm-"
CONFIRMATION_KINDS = (
    "plan",
    "plan-declined",
    "promise",
    "dispute",
    "dispute-outcome",
    "payment",
)


@dataclass
class ConfirmationInput:
    """Ids only: the activity loads names, addresses and amounts itself."""

    invoice_id: int
    kind: str  # one of CONFIRMATION_KINDS
    ref_id: int  # the plan, proposal, promise, dispute or payment confirmed

    @property
    def step_key(self) -> str:
        return f"{CONFIRM_PREFIX}{self.kind}-{self.ref_id}"


@workflow.defn(name="ConfirmationWorkflow")
class ConfirmationWorkflow:
    @workflow.run
    async def run(self, inp: ConfirmationInput) -> str:
        outcome: str = await workflow.execute_activity(
            "send_confirmation",
            inp,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5),
                maximum_interval=timedelta(minutes=10),
                maximum_attempts=20,
            ),
        )
        return outcome
