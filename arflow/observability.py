"""Metrics, JSON logs and the worker interceptor that feeds them.

**Metrics** live in ``prometheus_client``'s default registry, one per process. The API serves
them at ``GET /metrics`` (with ``ARFLOW_METRICS_TOKEN`` as a bearer token when set; without
one only in development and test: production serves no API metrics then); the worker on
``ARFLOW_WORKER_METRICS_PORT`` (default 9464, 0 turns it off; no token, keep the port on the
internal network). The API's ``method`` label is the HTTP method, or ``OTHER`` for any
method outside the standard ones. API: ``arflow_http_requests_total{method,route,status}``
(route is the template, e.g. ``/v1/invoices/{invoice_id}``),
``arflow_http_request_duration_seconds{method,route}``,
``arflow_webhook_rejects_total{reason}`` (``bad_signature``, ``invalid_body``, ``refused``),
``arflow_inbound_replies_total{channel,outcome}`` (customer replies, ``arflow.messages.replies``)
and ``arflow_workflow_starts_total`` (calls of ``arflow.gateway.start_invoice``). Worker:
``arflow_reminders_total{channel,outcome}``, ``arflow_activity_attempts_total{activity_type,
kind,outcome}``, ``arflow_activity_failures_total{activity_type,error}``,
``arflow_activity_duration_seconds{activity_type}`` and
``arflow_workflow_completions_total{workflow_type,status}``.

**Logs**: with ``ARFLOW_LOG_FORMAT=json`` (the default outside development) every line is one
JSON object: ``time``, ``level``, ``logger``, ``message``, then ``invoice_id``,
``workflow_id``, ``run_id`` and ``activity`` when known (inside an activity from
``activity.info()``, inside a workflow from ``workflow.info()``, in the API from the request
path ``/v1/invoices/{id}...``), the record's own ``extra`` fields, and ``exception``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError, CancelledError, FailureError
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

log = logging.getLogger("arflow.observability")

# -- metrics ---------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "arflow_http_requests",
    "HTTP requests answered by the API, by route template and status code",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "arflow_http_request_duration_seconds",
    "Time the API took to answer, by route template",
    ["method", "route"],
)
WEBHOOK_REJECTS = Counter(
    "arflow_webhook_rejects",
    "Payment webhooks answered with a 4xx: bad_signature, invalid_body or refused",
    ["reason"],
)
INBOUND_REPLIES = Counter(
    "arflow_inbound_replies",
    "Customer replies received (SendGrid Inbound Parse, Twilio inbound SMS), by channel and "
    "outcome: invoice, customer (no invoice named), duplicate, unknown_sender, rejected",
    ["channel", "outcome"],
)
WORKFLOW_STARTS = Counter(
    "arflow_workflow_starts",
    "Invoice workflow starts requested by the API (a repeat for a running workflow included)",
)
REMINDERS = Counter(
    "arflow_reminders",
    "send_reminder activity attempts, by channel and outcome (sent or failed)",
    ["channel", "outcome"],
)
ACTIVITY_ATTEMPTS = Counter(
    "arflow_activity_attempts",
    "Activity attempts run by this worker, by type, kind (local/regular) and outcome",
    ["activity_type", "kind", "outcome"],
)
ACTIVITY_FAILURES = Counter(
    "arflow_activity_failures",
    "Failed activity attempts (each retry counts), by type and error",
    ["activity_type", "error"],
)
ACTIVITY_DURATION = Histogram(
    "arflow_activity_duration_seconds",
    "Time one activity attempt took on this worker",
    ["activity_type"],
)
WORKFLOW_COMPLETIONS = Counter(
    "arflow_workflow_completions",
    "Workflow runs that ended on this worker, by final status (an invoice's status, "
    "continued_as_new, failed or cancelled)",
    ["workflow_type", "status"],
)


def metrics_exposition() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, with its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> Any:
    """Serve the registry on ``port`` in a daemon thread (0: off). A port already taken is
    logged and skipped: collections go on without metrics rather than not at all."""
    if not port:
        return None
    try:
        server, _thread = _start_http_server(port, addr=addr)
    except OSError as exc:
        log.error("worker metrics not served on %s:%s: %s", addr, port, exc)
        return None
    log.info("worker metrics on http://%s:%s/metrics", addr, port)
    return server


# -- log context -----------------------------------------------------------------------------

_INVOICE_IN_WORKFLOW_ID = re.compile(r"invoice-(\d+)$")
_request_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "arflow_log_context", default=None
)


def invoice_id_of(workflow_id: str | None) -> int | None:
    """The invoice id in a workflow id ``{prefix}invoice-{id}``; None for other workflows."""
    found = _INVOICE_IN_WORKFLOW_ID.search(workflow_id or "")
    return int(found.group(1)) if found else None


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (invoice_id, workflow_id, ...) to every log line written inside."""
    token = _request_context.set({**(_request_context.get() or {}), **fields})
    try:
        yield
    finally:
        _request_context.reset(token)


def _temporal_context() -> dict[str, Any]:
    if activity.in_activity():
        a = activity.info()
        return {
            "workflow_id": a.workflow_id,
            "run_id": a.workflow_run_id,
            "activity": a.activity_type,
            "attempt": a.attempt,
        }
    if workflow.in_workflow():
        w = workflow.info()
        return {"workflow_id": w.workflow_id, "run_id": w.run_id}
    return {}


# -- JSON formatter --------------------------------------------------------------------------

_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}  # color_message: uvicorn's
    | {"temporal_activity", "temporal_workflow", "temporal_log"}
)
_CONTEXT_KEYS = ("invoice_id", "workflow_id", "run_id", "activity", "attempt")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context: dict[str, Any] = dict(_request_context.get() or {})
        for key in ("temporal_workflow", "temporal_activity"):  # workflow.logger, activity.logger
            extra = getattr(record, key, None)
            if isinstance(extra, dict):
                context.update(
                    workflow_id=extra.get("workflow_id"),
                    run_id=extra.get("run_id") or extra.get("workflow_run_id"),
                )
                if extra.get("activity_type"):
                    context["activity"] = extra["activity_type"]
        context.update(_temporal_context())
        for key, value in vars(record).items():  # the record's own extra=... wins
            if key not in _STANDARD and not key.startswith("_"):
                context[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if context.get("invoice_id") is None:
            context["invoice_id"] = invoice_id_of(context.get("workflow_id"))
        out.update((k, context.pop(k)) for k in _CONTEXT_KEYS if context.get(k) is not None)
        out.update((k, v) for k, v in context.items() if v is not None and k not in out)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(fmt: str, level: int = logging.INFO) -> logging.Handler:
    """Log to stderr as ``json`` or ``text``; calling it again replaces the handler it added.
    In JSON mode uvicorn's own handlers get the JSON formatter too."""
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_arflow", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler._arflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    if fmt == "json":
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            for h in logging.getLogger(name).handlers:
                h.setFormatter(formatter)
    return handler


def temporal_runtime() -> Runtime:
    """A Temporal runtime whose core (Rust) log lines go through Python logging
    (``temporalio.core``), so they come out in the same format as ours."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=LoggingConfig.default.filter,
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            )
        )
    )


# -- worker interceptor ----------------------------------------------------------------------

_COMPLETED = "arflow_workflow_completed"


def record_workflow_completion(workflow_type: str, status: str) -> None:
    WORKFLOW_COMPLETIONS.labels(workflow_type, status).inc()


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type
    return type(exc).__name__


def _reminder_channel(args: Any) -> str:
    step = getattr(args[0], "step", None) if args else None
    return str(getattr(step, "channel", None) or "unknown")


class _ActivityMetrics(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        kind = "local" if info.is_local else "regular"
        started = time.perf_counter()
        try:
            result = await self.next.execute_activity(input)
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError | CancelledError)
            outcome = "cancelled" if cancelled else "failed"
            ACTIVITY_ATTEMPTS.labels(info.activity_type, kind, outcome).inc()
            if not cancelled:
                ACTIVITY_FAILURES.labels(info.activity_type, _error_name(exc)).inc()
            if info.activity_type == "send_reminder":
                REMINDERS.labels(_reminder_channel(input.args), outcome).inc()
            raise
        finally:
            ACTIVITY_DURATION.labels(info.activity_type).observe(time.perf_counter() - started)
        ACTIVITY_ATTEMPTS.labels(info.activity_type, kind, "completed").inc()
        if info.activity_type == "send_reminder":
            REMINDERS.labels(_reminder_channel(input.args), "sent").inc()
        return result


class _WorkflowMetrics(WorkflowInboundInterceptor):
    """Counts a run's end once, outside replay, through an extern function (the metric
    objects live outside the workflow sandbox)."""

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        try:
            result = await self.next.execute_workflow(input)
        except workflow.ContinueAsNewError:
            self._ended("continued_as_new")
            raise
        except (asyncio.CancelledError, CancelledError):
            self._ended("cancelled")
            raise
        except FailureError:  # fails the run (other exceptions only fail the task)
            self._ended("failed")
            raise
        self._ended(str(getattr(result, "status", None) or "completed"))
        return result

    @staticmethod
    def _ended(status: str) -> None:
        if workflow.unsafe.is_replaying():
            return
        record = workflow.extern_functions().get(_COMPLETED)
        if record is not None:
            record(workflow.info().workflow_type, status)


class MetricsInterceptor(Interceptor):
    """Worker interceptor: activity attempts, failures, reminders and workflow ends."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityMetrics(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        input.unsafe_extern_functions[_COMPLETED] = record_workflow_completion
        return _WorkflowMetrics
