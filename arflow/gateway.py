"""The one way into Temporal for code outside workflows: every start, signal,
signal-with-start, update, query and visibility call the API, the CLI and the activities make.

Here, and only here: the workflow ids and their prefix (``Settings.workflow_id``), the
reuse and conflict policies, the Idempotency-Key that becomes an update's id, and what a
Temporal failure means to the caller: ``Unavailable`` (``workflow_unavailable``, safe to
retry) when the server did not answer, ``Conflict`` or ``Invalid`` (``refused``) when the
workflow refused, ``NoWorkflow`` when there is no running workflow to talk to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.api.filter.v1 import WorkflowExecutionFilter
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import (
    ListClosedWorkflowExecutionsRequest,
    ListOpenWorkflowExecutionsRequest,
)
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from arflow.codec import decode_in_place
from arflow.config import Settings
from arflow.errors import Conflict, Invalid, Unavailable
from arflow.observability import WORKFLOW_STARTS
from workflows.confirmations import ConfirmationInput, ConfirmationWorkflow
from workflows.invoice import InvoiceWorkflow
from workflows.jobs import SendNowJobWorkflow
from workflows.portal import PortalLinkWorkflow
from workflows.search import ALL as SEARCH_KEYS
from workflows.simulation_job import SimulationWorkflow
from workflows.types import InvoiceState, InvoiceWorkflowInput, PaymentSignal, SegmentMove

log = logging.getLogger("arflow.gateway")

RETRY = "Temporal did not answer; retry"


class NoWorkflow(Conflict):
    """The invoice (or job) has no running workflow: it completed, or was never started."""


def _unavailable(message: str = RETRY) -> Unavailable:
    return Unavailable(message, code="workflow_unavailable")


# -- invoices ---------------------------------------------------------------------------


async def start_invoice(client: Client, settings: Settings, inp: InvoiceWorkflowInput) -> bool:
    """Start the invoice's workflow; True when this call started it, False when it already
    runs (a second start for the same invoice is a no-op)."""
    WORKFLOW_STARTS.inc()
    try:
        await client.start_workflow(
            InvoiceWorkflow.run,
            inp,
            id=settings.workflow_id(inp.invoice_id),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        return False
    except RPCError as exc:
        log.error("workflow start failed for invoice %s: %s", inp.invoice_id, exc)
        raise _unavailable(
            "the invoice is stored but its workflow could not be started; "
            "send the same request again to retry",
        ) from exc
    return True


async def _found(call: Awaitable[object]) -> bool:
    """Await a call on one workflow: False when there is no such workflow, ``Unavailable``
    when Temporal did not answer."""
    try:
        await call
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise _unavailable() from exc
    return True


async def invoice_workflow_exists(client: Client, settings: Settings, invoice_id: int) -> bool:
    """Whether the invoice has a workflow (running or closed) under its id."""
    return await _found(client.get_workflow_handle(settings.workflow_id(invoice_id)).describe())


async def signal_payment(
    client: Client, settings: Settings, invoice_id: int, payment: PaymentSignal
) -> bool:
    """Signal a stored payment to the invoice's running workflow; False when it has none."""
    handle = client.get_workflow_handle(settings.workflow_id(invoice_id))
    return await _found(handle.signal(InvoiceWorkflow.payment_received, payment))


async def reopen_with_payment(
    client: Client, settings: Settings, inp: InvoiceWorkflowInput, payment: PaymentSignal
) -> None:
    """Signal-with-start: a new run of a closed invoice's workflow with ``payment`` queued
    (a run that is already back just gets the signal)."""
    try:
        await client.start_workflow(
            InvoiceWorkflow.run,
            inp,
            id=settings.workflow_id(inp.invoice_id),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="payment_received",
            start_signal_args=[payment],
        )
    except RPCError as exc:
        raise _unavailable() from exc


def idempotent_update_id(update: str, idempotency_key: str | None) -> str | None:
    """The update's id for a request's Idempotency-Key: the same key is applied once."""
    return f"{update}:{idempotency_key}" if idempotency_key else None


async def update_invoice(
    client: Client,
    settings: Settings,
    invoice_id: int,
    update: str,
    request: object,
    update_id: str | None = None,
) -> InvoiceState:
    """Send an update to the invoice's workflow and wait for its answer (the new state).

    The workflow's validator or handler refuses with a reason: ``Invalid`` for a bad request
    (``InvalidInput``), else ``Conflict``, both with code ``refused``. The same ``update_id``
    again is applied once and answered with the first outcome (``idempotent_update_id`` makes
    one from a request's Idempotency-Key; a send-now job names each invoice's)."""
    handle = client.get_workflow_handle(settings.workflow_id(invoice_id))
    try:
        state: InvoiceState = await asyncio.wait_for(
            handle.execute_update(update, request, id=update_id, result_type=InvoiceState),
            timeout=settings.update_wait_seconds,
        )
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
        # The worker is busy or stopped. Temporal keeps an update it has accepted, so the
        # change may still be applied: the same update id (the same Idempotency-Key) learns
        # its outcome instead of applying it again.
        raise Unavailable(
            f"invoice {invoice_id}'s workflow did not answer within "
            f"{settings.update_wait_seconds:g} s; the change may still be applied: send the "
            "same request with the same Idempotency-Key to learn its outcome",
            code="workflow_busy",
        ) from exc
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(exc)
        kind = cause.type if isinstance(cause, ApplicationError) else None
        refused = Invalid if kind == "InvalidInput" else Conflict
        raise refused(message, code="refused") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NoWorkflow(f"invoice {invoice_id} has no running workflow") from exc
        raise _unavailable() from exc
    return state


# -- visibility -------------------------------------------------------------------------


async def search_attributes_ready(client: Client, settings: Settings) -> bool:
    """Whether new workflows should set ArflowStatus/Stage/Segment: ``on``/``off`` as
    configured; ``auto`` asks the namespace once whether they are registered."""
    if settings.search_attributes == "auto":
        try:
            resp = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=client.namespace)
            )
            names = set(resp.custom_attributes)
            ready = all(key.name in names for key in SEARCH_KEYS)
        except RPCError as exc:
            log.warning("cannot list search attributes (%s): workflows will not set them", exc)
            ready = False
        settings.search_attributes = "on" if ready else "off"
    return settings.search_attributes == "on"


async def list_workflow_ids(client: Client, query: str, limit: int) -> AsyncIterator[str]:
    """The ids of the workflows a visibility query finds."""
    try:
        async for wf in client.list_workflows(query, limit=limit):
            yield wf.id
    except RPCError as exc:
        # The server's text may quote the query or name internals: logged, never answered.
        log.warning("visibility query failed (%s): %s", exc.status, exc.message)
        raise Unavailable(
            "Temporal visibility is unavailable; retry, or list with source=database",
            code="visibility_unavailable",
        ) from exc


# -- history ------------------------------------------------------------------------

RPC_TIMEOUT = timedelta(seconds=10)


async def _listed_run_ids(client: Client, workflow_id: str) -> set[str]:
    """Run ids the server's visibility knows for ``workflow_id``. Servers without the
    query-based list (the time-skipping test server) answer the older open/closed lists."""
    escaped = workflow_id.replace("\\", "\\\\").replace('"', '\\"')
    try:
        return {
            w.run_id
            async for w in client.list_workflows(
                f'WorkflowId = "{escaped}"', rpc_timeout=RPC_TIMEOUT
            )
        }
    except RPCError as exc:
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
    filt = WorkflowExecutionFilter(workflow_id=workflow_id)
    service = client.workflow_service
    try:
        return await _pages(
            service.list_open_workflow_executions,
            ListOpenWorkflowExecutionsRequest(namespace=client.namespace, execution_filter=filt),
        ) | await _pages(
            service.list_closed_workflow_executions,
            ListClosedWorkflowExecutionsRequest(namespace=client.namespace, execution_filter=filt),
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
    return set()


async def _pages(call: Callable[..., Awaitable[Any]], request: Any) -> set[str]:
    """Run ids from every page of an open/closed executions list."""
    found: set[str] = set()
    while True:
        page = await call(request, timeout=RPC_TIMEOUT)
        found |= {e.execution.run_id for e in page.executions}
        if not page.next_page_token:
            return found
        request.next_page_token = page.next_page_token


async def workflow_runs(client: Client, workflow_id: str) -> dict[str, Sequence[HistoryEvent]]:
    """Every run of ``workflow_id`` with its events (the admin's history view); {} when
    there is none; ``Unavailable`` when Temporal did not answer."""
    try:
        return await _workflow_runs(client, workflow_id)
    except RPCError as exc:
        log.warning("history of %s: %s", workflow_id, exc)
        raise _unavailable() from exc


async def _workflow_runs(client: Client, workflow_id: str) -> dict[str, Sequence[HistoryEvent]]:
    """Runs come from visibility (which may lag a moment) and from the chain of the latest run
    back through ``continued_execution_run_id`` / ``first_execution_run_id``."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        latest = (await handle.describe(rpc_timeout=RPC_TIMEOUT)).run_id
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        latest = None
    todo = await _listed_run_ids(client, workflow_id)
    if latest:
        todo.add(latest)
    runs: dict[str, Sequence[HistoryEvent]] = {}
    while todo:
        run_id = todo.pop()
        try:
            history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history(
                rpc_timeout=RPC_TIMEOUT
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # gone past the namespace's retention
                raise
            continue
        events = history.events
        if client.data_converter.payload_codec is not None:
            await decode_in_place(client.data_converter.payload_codec, events)
        runs[run_id] = events
        if events and events[0].HasField("workflow_execution_started_event_attributes"):
            started = events[0].workflow_execution_started_event_attributes
            for linked in (started.continued_execution_run_id, started.first_execution_run_id):
                if linked and linked not in runs:
                    todo.add(linked)
    return runs


# -- other workflows --------------------------------------------------------------------


def job_workflow_id(settings: Settings, job_id: int) -> str:
    return f"{settings.workflow_id_prefix}job-{job_id}"


async def start_send_now_job(client: Client, settings: Settings, job_id: int) -> None:
    """Start a bulk job's workflow (send-now, an account's pause or resume, a policy switch)."""
    await _start_job(client, settings, SendNowJobWorkflow.run, job_id)


async def start_simulation_job(client: Client, settings: Settings, job_id: int) -> None:
    """Start a policy simulation job's workflow (its id is the job's, like a send-now job's)."""
    await _start_job(client, settings, SimulationWorkflow.run, job_id)


async def _start_job(
    client: Client, settings: Settings, run: Callable[[Any, int], Awaitable[Any]], job_id: int
) -> None:
    try:
        await client.start_workflow(
            run, job_id, id=job_workflow_id(settings, job_id), task_queue=settings.task_queue
        )
    except RPCError as exc:
        raise _unavailable() from exc


async def start_segment_switch(client: Client, move: SegmentMove, task_queue: str) -> None:
    """Start the workflow that switches a moved customer's invoices (a retry finds it)."""
    try:
        await client.start_workflow(
            "SegmentSwitchWorkflow", move, id=move.workflow_id, task_queue=task_queue
        )
    except WorkflowAlreadyStartedError:
        pass


# -- schedules -------------------------------------------------------------------------


async def ensure_schedule(
    client: Client, settings: Settings, schedule_id: str, workflow: str, cron: str
) -> str:
    """Create the schedule, or update it in place when it exists (a changed cron takes effect
    at the next worker start). The workflow is named, not passed as ``Workflow.run``:
    passing the method here trips mypy 2.4's overload inference for other workflows' handles
    (``get_workflow_handle_for``) elsewhere."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            workflow, id=f"{schedule_id}-run", task_queue=settings.task_queue
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
        log.info("created schedule %s (%s)", schedule_id, cron)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
    return schedule_id


def portal_link_workflow_id(settings: Settings, request_id: int) -> str:
    return f"{settings.workflow_id_prefix}portal-link-{request_id}"


async def start_portal_link(client: Client, settings: Settings, request_id: int) -> None:
    """Start the workflow that emails a fresh portal link (one per request: it sends once)."""
    try:
        await client.start_workflow(
            PortalLinkWorkflow.run,
            request_id,
            id=portal_link_workflow_id(settings, request_id),
            task_queue=settings.task_queue,
        )
    except RPCError as exc:
        raise _unavailable() from exc


# -- confirmations to customers ------------------------------------------------------------


def confirmation_id(settings: Settings, inp: ConfirmationInput) -> str:
    """The id of a confirmation's workflow: from its step key, so it runs once."""
    return f"{settings.workflow_id_prefix}invoice-{inp.invoice_id}-{inp.step_key}"


async def start_confirmation(client: Client, settings: Settings, inp: ConfirmationInput) -> bool:
    """Start the confirmation's workflow; False when it was started before (it sends once)."""
    try:
        await client.start_workflow(
            ConfirmationWorkflow.run,
            inp,
            id=confirmation_id(settings, inp),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        return False
    except RPCError as exc:
        raise _unavailable() from exc
    return True
