"""Bulk jobs: a workflow per job, so a job started by one click survives API and worker
restarts; its activity does the fan-out (bounded concurrency, heartbeating progress)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy


@workflow.defn(name="SendNowJobWorkflow")
class SendNowJobWorkflow:
    @workflow.run
    async def run(self, job_id: int) -> None:
        await workflow.execute_activity(
            "run_send_now_job",
            job_id,
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=10),
        )
