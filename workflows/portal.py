"""A fresh portal link by email: one run per request (the workflow id names the request), the
activity sends it at most once (``arflow.portal.fresh_links``)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy


@workflow.defn(name="PortalLinkWorkflow")
class PortalLinkWorkflow:
    @workflow.run
    async def run(self, request_id: int) -> str:
        status: str = await workflow.execute_activity(
            "send_portal_link",
            request_id,
            start_to_close_timeout=timedelta(minutes=2),
            # a provider's transient refusal (the row stays queued) is retried
            retry_policy=RetryPolicy(maximum_attempts=8, initial_interval=timedelta(seconds=10)),
        )
        return status
