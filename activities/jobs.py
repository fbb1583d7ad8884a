"""Running a send-now job: each selected invoice's workflow gets a ``send_now`` update.

The update id is ``job-{job}-{invoice}``, so when the activity is retried (a worker died
mid-job) an invoice already done answers with its first result instead of a second send; and
the workflow sends a step at most once anyway. Whatever the workflow refuses (paused,
disputed, nothing left to send) is recorded per invoice with the reason.
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
from arflow.invoices import jobs
from workflows.types import ActorRequest

log = logging.getLogger("arflow.jobs")


class JobActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    def _start(self, job_id: int) -> tuple[str, list[int]]:
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
        actor, pending = await asyncio.to_thread(self._start, job_id)
        client = activity.client()
        gate = asyncio.Semaphore(self.settings.bulk_concurrency)
        done = 0

        async def one(invoice_id: int) -> None:
            nonlocal done
            async with gate:
                status, detail = await self._send_now(client, job_id, invoice_id, actor)
                await asyncio.to_thread(self._record, job_id, invoice_id, status, detail)
                done += 1
                activity.heartbeat(done)

        await asyncio.gather(*(one(i) for i in pending))
        await asyncio.to_thread(self._finish, job_id)

    async def _send_now(
        self, client: Client, job_id: int, invoice_id: int, actor: str
    ) -> tuple[str, str | None]:
        try:
            state = await gateway.update_invoice(
                client,
                self.settings,
                invoice_id,
                "send_now",
                ActorRequest(reason=f"send-now job {job_id}", actor=actor),
                update_id=f"job-{job_id}-{invoice_id}",
            )
        except NoWorkflow:
            return "refused", "the invoice has no running workflow (closed)"
        except (Conflict, Invalid) as exc:
            return "refused", exc.message
        except Unavailable as exc:
            log.warning("send-now for invoice %s failed: %s", invoice_id, exc.__cause__)
            return "failed", f"Temporal: {getattr(exc.__cause__, 'message', exc.message)}"
        return "sent", state.sent_steps[-1] if state.sent_steps else None

    def all(self) -> list[object]:
        return [self.run_send_now_job]
