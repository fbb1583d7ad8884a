"""Running a job: each selected invoice's workflow gets the job's update (``send_now``, or an
account's ``pause`` / ``resume``).

The update id is ``job-{job}-{invoice}``, so when the activity is retried (a worker died
mid-job) an invoice already done answers with its first result instead of a second send; and
the workflow sends a step at most once anyway. Only items still pending are run again.
Whatever the workflow refuses (paused, disputed, nothing left to send, not on hold) is
recorded per invoice with the reason.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity
from temporalio.client import Client

from activities.failures import not_found_is_final
from arflow import gateway
from arflow.config import Settings
from arflow.db import SessionFactory
from arflow.errors import Conflict, Invalid, Unavailable
from arflow.gateway import NoWorkflow
from arflow.invoices import jobs, policy_switch
from arflow.invoices.service import run_update
from workflows.types import ActorRequest, PauseRequest

log = logging.getLogger("arflow.jobs")


class JobActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    def _start(self, job_id: int) -> jobs.RunningJob:
        with self.sessions() as session, not_found_is_final():
            return jobs.start_running(session, job_id)

    def _record(self, job_id: int, invoice_id: int, status: str, detail: str | None) -> None:
        with self.sessions() as session:
            jobs.record_item(session, job_id, invoice_id, status, detail)

    def _finish(self, job_id: int) -> None:
        with self.sessions() as session:
            jobs.finish(session, job_id)

    @activity.defn(name="run_send_now_job")
    async def run_send_now_job(self, job_id: int) -> None:
        """Every kind of job (the name is the first kind's: job workflows already running
        call it)."""
        job = await asyncio.to_thread(self._start, job_id)
        client = activity.client()
        gate = asyncio.Semaphore(self.settings.bulk_concurrency)
        done = 0

        async def one(invoice_id: int) -> None:
            nonlocal done
            async with gate:
                status, detail = await self._item(client, job_id, invoice_id, job)
                await asyncio.to_thread(self._record, job_id, invoice_id, status, detail)
                done += 1
                activity.heartbeat(done)

        await asyncio.gather(*(one(i) for i in job.pending))
        await asyncio.to_thread(self._finish, job_id)

    async def _item(
        self, client: Client, job_id: int, invoice_id: int, job: jobs.RunningJob
    ) -> tuple[str, str | None]:
        """The job's update for one invoice: its status and detail for the job's item."""
        update_id = f"job-{job_id}-{invoice_id}"
        try:
            if job.kind == jobs.SEND_NOW:
                request = ActorRequest(reason=f"send-now job {job_id}", actor=job.requested_by)
                state = await gateway.update_invoice(
                    client, self.settings, invoice_id, "send_now", request, update_id=update_id
                )
                return "sent", state.sent_steps[-1] if state.sent_steps else None
            if job.kind == jobs.POLICY_SWITCH:
                with self.sessions() as session:
                    return await policy_switch.switch_invoice(
                        session,
                        client,
                        self.settings,
                        invoice_id,
                        job.params,
                        job.requested_by,
                        update_id,
                    )
            # An account's pause or resume: the same update, recorded first, that a
            # specialist sends for one invoice.
            with self.sessions() as session:
                _, state = await run_update(
                    session,
                    client,
                    self.settings,
                    invoice_id,
                    job.kind,
                    _account_request(job, job_id),
                    update_id=update_id,
                )
            return "applied", state.hold
        except NoWorkflow:
            return "refused", "the invoice has no running workflow (closed)"
        except (Conflict, Invalid) as exc:
            return "refused", exc.message
        except Unavailable as exc:
            log.warning("%s for invoice %s failed: %s", job.kind, invoice_id, exc.__cause__)
            return "failed", f"Temporal: {getattr(exc.__cause__, 'message', exc.message)}"

    def all(self) -> list[object]:
        return [self.run_send_now_job]


def _account_request(job: jobs.RunningJob, job_id: int) -> PauseRequest | ActorRequest:
    reason = str(job.params.get("reason") or f"account {job.kind} (job {job_id})")
    if job.kind == jobs.PAUSE:
        return PauseRequest(reason=reason, actor=job.requested_by, until=job.params.get("until"))
    return ActorRequest(reason=reason, actor=job.requested_by)
