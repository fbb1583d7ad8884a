"""The Temporal worker: builds dependencies once, registers the workflows and their activities.

Run: ``python worker.py`` at the top of the tree (or ``arflow worker``); settings from
``ARFLOW_*``, and ``ARFLOW_TEMPORAL_ADDRESS`` must point at a running Temporal frontend, which
``arflow run`` starts for you on a laptop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.agency import AgencyActivities
from activities.confirmations import ConfirmationActivities
from activities.invoice import InvoiceActivities
from activities.jobs import JobActivities
from activities.legal import LegalActivities
from activities.monthly import MonthlyStatementActivities
from activities.portal import PortalActivities
from activities.segments import SegmentActivities
from activities.simulation import SimulationActivities
from activities.statements import StatementActivities
from arflow import observability
from arflow.codec import data_converter
from arflow.config import Settings, get_settings
from arflow.customers.unsubscribe import unsubscribe_url
from arflow.db import make_engine, session_factory
from arflow.messages.confirmations import ConfirmationSender
from arflow.messages.delivery import StepDelivery
from arflow.messages.documents import Seller
from arflow.messages.providers import channel_for
from arflow.portal.links import portal_url
from arflow.schedules import (
    ensure_customer_review_schedule,
    ensure_monthly_statement_schedule,
    ensure_statement_schedule,
)
from workflows.confirmations import ConfirmationWorkflow
from workflows.invoice import InvoiceWorkflow
from workflows.jobs import SendNowJobWorkflow
from workflows.portal import PortalLinkWorkflow
from workflows.segments import CustomerReviewWorkflow, SegmentSwitchWorkflow
from workflows.simulation_job import SimulationWorkflow
from workflows.statements import MonthlyStatementWorkflow, StatementInboxWorkflow

log = logging.getLogger("arflow.worker")
ACTIVITY_THREADS = 16


def workflow_runner(settings: Settings) -> SandboxedWorkflowRunner:
    """The workflow sandbox. With ``workflow_sandbox_passthrough`` (the default) our own
    ``workflows`` package is imported once, not again for every workflow run: measured by
    bench/lifecycle.py at about a third more lifecycles per second. The price is that the
    sandbox's checks for non-deterministic calls do not reach into that package; the test
    suite runs with the full sandbox (and replays saved histories) to catch them there."""
    restrictions = SandboxRestrictions.default
    if settings.workflow_sandbox_passthrough:
        restrictions = restrictions.with_passthrough_modules("workflows")
    return SandboxedWorkflowRunner(restrictions=restrictions)


def build_worker(
    client: Client,
    settings: Settings,
    engine: Engine,
    task_queue: str | None = None,
    executor: ThreadPoolExecutor | None = None,
    identity: str | None = None,
) -> Worker:
    """The worker for ``task_queue`` (default: the settings'), with real dependencies.
    ``identity`` (default: ``worker_identity``, else the SDK's ``pid@host``) names the worker
    in the histories of the tasks it runs."""
    sessions = session_factory(engine)
    channel = channel_for(settings)
    seller = Seller.from_settings(settings)
    delivery = StepDelivery(
        channel=channel,
        pay_url=settings.pay_url,
        print_folder=settings.print_folder,
        seller=seller,
        default_locale=settings.default_locale,
        unsubscribe_url=partial(unsubscribe_url, settings),
        portal_url=partial(portal_url, settings),
    )
    acts = InvoiceActivities(sessions, delivery)
    confirmations = ConfirmationSender(channel, settings.pay_url, settings.default_locale)
    confirmations.portal_url = partial(portal_url, settings)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[
            InvoiceWorkflow,
            StatementInboxWorkflow,
            SendNowJobWorkflow,
            MonthlyStatementWorkflow,
            SegmentSwitchWorkflow,
            CustomerReviewWorkflow,
            PortalLinkWorkflow,
            ConfirmationWorkflow,
            SimulationWorkflow,
        ],
        workflow_runner=workflow_runner(settings),
        # Memory is bounded by the sticky cache, not by the open invoices: with 100,000 open,
        # the runs past the cache are evicted and replayed from history on their next task.
        max_cached_workflows=settings.worker_max_cached_workflows,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        activities=acts.all()
        + AgencyActivities.from_settings(sessions, settings).all()
        + StatementActivities(sessions, settings).all()
        + JobActivities(sessions, settings).all()
        + LegalActivities(sessions, settings.legal_folder, seller).all()
        + MonthlyStatementActivities(sessions, channel, seller, partial(portal_url, settings)).all()
        + SegmentActivities(sessions, settings).all()
        + PortalActivities(sessions, settings, channel).all()
        + ConfirmationActivities(sessions, confirmations).all()
        + SimulationActivities(sessions).all(),
        activity_executor=executor or ThreadPoolExecutor(ACTIVITY_THREADS),
        max_concurrent_activities=ACTIVITY_THREADS,
        # Provider sends are activities on this queue: the providers' rate limits hold.
        max_task_queue_activities_per_second=settings.provider_max_per_second or None,
        interceptors=[observability.MetricsInterceptor()],
        identity=identity or settings.worker_identity or None,
    )


async def serve(settings: Settings) -> None:
    client = await Client.connect(
        settings.temporal_address or "127.0.0.1:7233",
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        runtime=observability.temporal_runtime(),
    )
    engine = make_engine(settings.database_url)
    worker = build_worker(client, settings, engine)
    await ensure_statement_schedule(client, settings)
    await ensure_monthly_statement_schedule(client, settings)
    await ensure_customer_review_schedule(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker %s polling task queue %s on %s",
        worker.config().get("identity") or client.identity,
        settings.task_queue,
        settings.temporal_address,
    )
    async with worker:
        await stop.wait()
    log.info("worker stopped")


def main() -> None:
    settings = get_settings()
    observability.configure_logging(settings.effective_log_format)
    observability.start_metrics_server(settings.worker_metrics_port)
    asyncio.run(serve(settings))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # temporalio can abort the interpreter at exit (sdk-python #300)
