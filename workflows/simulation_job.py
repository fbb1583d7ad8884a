"""A long policy simulation as a durable job: one workflow per job (``job-{id}``), whose
activity simulates the job's invoices in batches, heartbeating and writing each batch's rows
and progress to the database (``arflow.policies.simulation_jobs``). A retried attempt goes on
from the invoices not yet written; when every attempt failed, the job is marked failed with
the reason, so no job stays "running" for ever."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

SIMULATE = "run_simulation_job"
FAIL = "fail_simulation_job"


@workflow.defn(name="SimulationWorkflow")
class SimulationWorkflow:
    @workflow.run
    async def run(self, job_id: int) -> str:
        try:
            await workflow.execute_activity(
                SIMULATE,
                job_id,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
        except ActivityError as exc:
            cause = exc.cause
            reason = str(getattr(cause, "message", None) or cause or exc)
            await workflow.execute_activity(
                FAIL,
                args=[job_id, reason[:500]],
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(maximum_attempts=20),
            )
            return "failed"
        return "done"
