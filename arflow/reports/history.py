"""An invoice's Temporal history as events a person can read, across all of its runs.

``render`` is a pure function from one run's history events to readable entries; ``load``
finds the runs of a workflow id (continue-as-new, and reopening a paid invoice, start new runs
under the same id) and fetches their histories. Payloads are decoded only as far as the
readable view needs: activity types and attempts, a payment's id and amount, an update's name
and the ``actor`` who sent it, a closed invoice's status. Nothing else leaves a payload, so no
personal data (and no free-text reason) reaches the response.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import RetryState, WorkflowTaskFailedCause
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from arflow import gateway
from arflow.config import Settings

LOCAL_ACTIVITY_MARKER = "core_local_activity"
# Fields of a signal's argument that may be shown, per signal name (never the whole payload).
SIGNAL_FIELDS = {"payment_received": ("payment_id", "kind", "amount_minor", "currency", "paid_at")}
# Fields of a closed run's result that may be shown.
RESULT_FIELDS = ("status", "balance_minor", "currency")
# Routine workflow-task bookkeeping, left out of the readable view.
ROUTINE = frozenset(
    {
        "workflow_task_scheduled_event_attributes",
        "workflow_task_started_event_attributes",
        "workflow_task_completed_event_attributes",
    }
)


class HistoryEntry(BaseModel):
    run_id: str
    event_id: int
    time: datetime
    kind: str = Field(description="e.g. timer_started, local_activity_completed, update_accepted")
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)


class RunPublic(BaseModel):
    run_id: str
    started_at: datetime | None
    status: str = Field(description="running, completed, continued_as_new, failed, terminated…")


class InvoiceHistory(BaseModel):
    invoice_id: int
    workflow_id: str
    temporal_ui_url: str
    runs: list[RunPublic] = Field(description="oldest first")
    events: list[HistoryEntry] = Field(description="runs oldest first, events in order")


# -- decoding --------------------------------------------------------------------------------


def _decode(payload: Payload) -> Any:
    """A JSON payload's value; None for anything else (null, binary, encrypted)."""
    if payload.metadata.get("encoding") != b"json/plain":
        return None
    try:
        return json.loads(payload.data)
    except ValueError:
        return None


def _first(payloads: Payloads) -> Any:
    return _decode(payloads.payloads[0]) if payloads.payloads else None


def _pick(value: Any, names: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {n: value[n] for n in names if n in value}


def _failure(failure: Failure) -> dict[str, Any]:
    out: dict[str, Any] = {"message": failure.message}
    if failure.HasField("application_failure_info") and failure.application_failure_info.type:
        out["error_type"] = failure.application_failure_info.type
    return out


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _event_time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


def _short(run_id: str) -> str:
    return run_id[:8]


# -- rendering -------------------------------------------------------------------------------


@dataclass
class _Seen:
    """What later events of a run refer back to by event id or update id."""

    activity_types: dict[int, str]
    attempts: dict[int, int]
    updates: dict[str, tuple[str, str | None, int]]  # update id -> name, actor, accepted at
    timers: dict[int, datetime]  # timer started event id -> fire time


def render(run_id: str, events: Iterable[HistoryEvent]) -> list[HistoryEntry]:
    """One run's history as readable entries (routine workflow-task events left out)."""
    seen = _Seen({}, {}, {}, {})
    out: list[HistoryEntry] = []
    for event in events:
        which = event.WhichOneof("attributes")
        if which is None or which in ROUTINE:
            continue
        kind, summary, details = _describe(event, which, seen)
        out.append(
            HistoryEntry(
                run_id=run_id,
                event_id=event.event_id,
                time=_event_time(event),
                kind=kind,
                summary=summary,
                details=details,
            )
        )
    return out


def _describe(event: HistoryEvent, which: str, seen: _Seen) -> tuple[str, str, dict[str, Any]]:
    if which in _RUN_EVENTS:
        return _run_event(event, which)
    if which in _TIMER_EVENTS:
        return _timer(event, which, seen)
    if which.startswith("activity_task_"):
        return _activity(event, which, seen)
    if which == "marker_recorded_event_attributes":
        return _marker(event)
    if which == "workflow_execution_signaled_event_attributes":
        return _signal(event)
    if which.startswith("workflow_execution_update_"):
        return _update(event, which, seen)
    if which == "workflow_task_failed_event_attributes":
        wf = event.workflow_task_failed_event_attributes
        details = _failure(wf.failure) | {"cause": WorkflowTaskFailedCause.Name(wf.cause)}
        return "workflow_task_failed", f"Workflow task failed: {wf.failure.message}", details
    if which == "workflow_task_timed_out_event_attributes":
        return "workflow_task_timed_out", "Workflow task timed out", {}
    kind = which.removesuffix("_event_attributes")
    return kind, kind.replace("_", " ").capitalize(), {}


_RUN_EVENTS = frozenset(
    {
        "workflow_execution_started_event_attributes",
        "workflow_execution_completed_event_attributes",
        "workflow_execution_continued_as_new_event_attributes",
        "workflow_execution_failed_event_attributes",
        "workflow_execution_terminated_event_attributes",
        "workflow_execution_timed_out_event_attributes",
        "workflow_execution_canceled_event_attributes",
    }
)
_TIMER_EVENTS = frozenset(
    {
        "timer_started_event_attributes",
        "timer_fired_event_attributes",
        "timer_canceled_event_attributes",
    }
)


def _run_event(event: HistoryEvent, which: str) -> tuple[str, str, dict[str, Any]]:
    """The run's own life: started, completed, continued as new, failed, ended otherwise."""
    if which == "workflow_execution_started_event_attributes":
        a = event.workflow_execution_started_event_attributes
        details: dict[str, Any] = {
            "workflow_type": a.workflow_type.name,
            "task_queue": a.task_queue.name,
            "attempt": a.attempt,
            "first_execution_run_id": a.first_execution_run_id,
        }
        summary = f"Workflow {a.workflow_type.name} started"
        if a.continued_execution_run_id:
            details["continued_from_run_id"] = a.continued_execution_run_id
            summary += f" (continued from run {_short(a.continued_execution_run_id)})"
        return "workflow_started", summary, details
    if which == "workflow_execution_completed_event_attributes":
        c = event.workflow_execution_completed_event_attributes
        result = _pick(_first(c.result), RESULT_FIELDS)
        status = f": {result['status']}" if "status" in result else ""
        return "workflow_completed", f"Workflow completed{status}", result
    if which == "workflow_execution_continued_as_new_event_attributes":
        n = event.workflow_execution_continued_as_new_event_attributes
        return (
            "workflow_continued_as_new",
            f"Workflow continued as new in run {_short(n.new_execution_run_id)}",
            {"new_run_id": n.new_execution_run_id},
        )
    if which == "workflow_execution_failed_event_attributes":
        f = event.workflow_execution_failed_event_attributes
        return "workflow_failed", f"Workflow failed: {f.failure.message}", _failure(f.failure)
    if which == "workflow_execution_terminated_event_attributes":
        t = event.workflow_execution_terminated_event_attributes
        return "workflow_terminated", f"Workflow terminated: {t.reason}", {"reason": t.reason}
    if which == "workflow_execution_timed_out_event_attributes":
        return "workflow_timed_out", "Workflow timed out", {}
    return "workflow_cancelled", "Workflow cancelled", {}


def _timer(event: HistoryEvent, which: str, seen: _Seen) -> tuple[str, str, dict[str, Any]]:
    if which == "timer_started_event_attributes":
        ts = event.timer_started_event_attributes
        timeout = ts.start_to_fire_timeout.ToTimedelta()
        fire_at = _event_time(event) + timeout
        seen.timers[event.event_id] = fire_at
        return (
            "timer_started",
            f"Timer {ts.timer_id} started, fires at {_iso(fire_at)}",
            {
                "timer_id": ts.timer_id,
                "fire_at": _iso(fire_at),
                "timeout_seconds": timeout.total_seconds(),
            },
        )
    if which == "timer_fired_event_attributes":
        tf = event.timer_fired_event_attributes
        return (
            "timer_fired",
            f"Timer {tf.timer_id} fired",
            {"timer_id": tf.timer_id, "started_event_id": tf.started_event_id},
        )
    tc = event.timer_canceled_event_attributes
    due = seen.timers.get(tc.started_event_id)
    return (
        "timer_cancelled",
        f"Timer {tc.timer_id} cancelled" + (f" (was due {_iso(due)})" if due else ""),
        {"timer_id": tc.timer_id, "started_event_id": tc.started_event_id},
    )


def _signal(event: HistoryEvent) -> tuple[str, str, dict[str, Any]]:
    s = event.workflow_execution_signaled_event_attributes
    fields = _pick(_first(s.input), SIGNAL_FIELDS.get(s.signal_name, ()))
    details = {"signal_name": s.signal_name, "identity": s.identity} | fields
    summary = f"Signal {s.signal_name}"
    if "payment_id" in fields:
        summary += f": {fields.get('kind', 'payment')} {fields['payment_id']}"
        if "amount_minor" in fields:
            summary += f" of {fields['amount_minor']} {fields.get('currency', '')} minor units"
    return "signal_received", summary.rstrip(), details


def _activity(event: HistoryEvent, which: str, seen: _Seen) -> tuple[str, str, dict[str, Any]]:
    kind = "activity_" + which.removeprefix("activity_task_").removesuffix("_event_attributes")
    if which == "activity_task_scheduled_event_attributes":
        s = event.activity_task_scheduled_event_attributes
        seen.activity_types[event.event_id] = s.activity_type.name
        return (
            kind,
            f"Activity {s.activity_type.name} scheduled",
            {"activity_type": s.activity_type.name, "activity_id": s.activity_id},
        )
    attrs = getattr(event, which)
    scheduled = attrs.scheduled_event_id
    name = seen.activity_types.get(scheduled, "?")
    details: dict[str, Any] = {"activity_type": name, "scheduled_event_id": scheduled}
    if which == "activity_task_started_event_attributes":
        seen.attempts[event.event_id] = attrs.attempt
        details["attempt"] = attrs.attempt
        return kind, f"Activity {name} started (attempt {attrs.attempt})", details
    attempt = seen.attempts.get(attrs.started_event_id)
    if attempt is not None:
        details["attempt"] = attempt
    on_attempt = f" (attempt {attempt})" if attempt is not None else ""
    if which == "activity_task_completed_event_attributes":
        return kind, f"Activity {name} completed{on_attempt}", details
    if which == "activity_task_failed_event_attributes":
        details |= _failure(attrs.failure)
        details["retry_state"] = RetryState.Name(attrs.retry_state)
        return kind, f"Activity {name} failed{on_attempt}: {attrs.failure.message}", details
    if which == "activity_task_timed_out_event_attributes":
        details["retry_state"] = RetryState.Name(attrs.retry_state)
        return kind, f"Activity {name} timed out{on_attempt}", details
    return kind, f"Activity {name} {kind.removeprefix('activity_').replace('_', ' ')}", details


def _marker(event: HistoryEvent) -> tuple[str, str, dict[str, Any]]:
    m = event.marker_recorded_event_attributes
    if m.marker_name != LOCAL_ACTIVITY_MARKER:
        return "marker_recorded", f"Marker {m.marker_name}", {"marker_name": m.marker_name}
    data = _first(m.details["data"]) if "data" in m.details else None
    info = _pick(data, ("activity_type", "activity_id", "attempt"))
    name = info.get("activity_type", "?")
    attempt = f" (attempt {info['attempt']})" if "attempt" in info else ""
    if m.HasField("failure"):
        info |= _failure(m.failure)
        if isinstance(data, dict) and data.get("backoff"):
            info["retrying"] = True  # a long backoff: the workflow sets a timer and retries
        return (
            "local_activity_failed",
            f"Local activity {name} failed{attempt}: {m.failure.message}",
            info,
        )
    return "local_activity_completed", f"Local activity {name} completed{attempt}", info


def _update(event: HistoryEvent, which: str, seen: _Seen) -> tuple[str, str, dict[str, Any]]:
    if which == "workflow_execution_update_accepted_event_attributes":
        a = event.workflow_execution_update_accepted_event_attributes
        req = a.accepted_request
        actor = _pick(_first(req.input.args), ("actor",)).get("actor")
        seen.updates[req.meta.update_id] = (req.input.name, actor, event.event_id)
        details = _update_details(req.input.name, req.meta.update_id, actor, req.meta.identity)
        by = f" from {actor}" if actor else ""
        return "update_accepted", f"Update {req.input.name} accepted{by}", details
    if which == "workflow_execution_update_completed_event_attributes":
        c = event.workflow_execution_update_completed_event_attributes
        name, actor, accepted_at = seen.updates.get(c.meta.update_id, ("?", None, 0))
        details = _update_details(name, c.meta.update_id, actor, c.meta.identity)
        # (the time-skipping test server leaves accepted_event_id unset)
        details["accepted_event_id"] = c.accepted_event_id or accepted_at
        by = f" from {actor}" if actor else ""
        if c.outcome.HasField("failure"):
            details |= _failure(c.outcome.failure)
            return (
                "update_rejected",
                f"Update {name}{by} refused: {c.outcome.failure.message}",
                details,
            )
        return "update_completed", f"Update {name}{by} completed", details
    if which == "workflow_execution_update_rejected_event_attributes":
        r = event.workflow_execution_update_rejected_event_attributes
        req = r.rejected_request
        actor = _pick(_first(req.input.args), ("actor",)).get("actor")
        details = _update_details(req.input.name, req.meta.update_id, actor, req.meta.identity)
        details |= _failure(r.failure)
        return "update_rejected", f"Update {req.input.name} rejected: {r.failure.message}", details
    if which == "workflow_execution_update_admitted_event_attributes":
        ad = event.workflow_execution_update_admitted_event_attributes
        req = ad.request
        actor = _pick(_first(req.input.args), ("actor",)).get("actor")
        seen.updates[req.meta.update_id] = (req.input.name, actor, 0)
        details = _update_details(req.input.name, req.meta.update_id, actor, req.meta.identity)
        return "update_admitted", f"Update {req.input.name} admitted", details
    kind = which.removesuffix("_event_attributes")
    return kind, kind.replace("_", " ").capitalize(), {}


def _update_details(name: str, update_id: str, actor: str | None, identity: str) -> dict[str, Any]:
    details: dict[str, Any] = {"update_name": name, "update_id": update_id, "identity": identity}
    if actor:
        details["actor"] = actor
    return details


def run_status(events: Sequence[HistoryEvent]) -> str:
    """How a run ended, from its last event: running while it has not."""
    if not events:
        return "unknown"
    last = events[-1].WhichOneof("attributes") or ""
    return {
        "workflow_execution_completed_event_attributes": "completed",
        "workflow_execution_continued_as_new_event_attributes": "continued_as_new",
        "workflow_execution_failed_event_attributes": "failed",
        "workflow_execution_terminated_event_attributes": "terminated",
        "workflow_execution_timed_out_event_attributes": "timed_out",
        "workflow_execution_canceled_event_attributes": "cancelled",
    }.get(last, "running")


# -- loading ---------------------------------------------------------------------------------


def ui_url(settings: Settings, workflow_id: str) -> str:
    """The workflow in the Temporal Web UI (all of its runs)."""
    base = settings.temporal_ui_url.rstrip("/")
    ns = quote(settings.temporal_namespace, safe="")
    return f"{base}/namespaces/{ns}/workflows/{quote(workflow_id, safe='')}"


async def load(client: Client, workflow_id: str) -> list[tuple[str, Sequence[HistoryEvent]]]:
    """Every run of ``workflow_id`` with its events, oldest first; [] when there is none."""
    runs = await gateway.workflow_runs(client, workflow_id)
    never = datetime.max.replace(tzinfo=UTC)
    return sorted(runs.items(), key=lambda r: _event_time(r[1][0]) if r[1] else never)


def assemble(
    invoice_id: int,
    workflow_id: str,
    url: str,
    runs: Sequence[tuple[str, Sequence[HistoryEvent]]],
) -> InvoiceHistory:
    """The response for loaded runs (pure)."""
    return InvoiceHistory(
        invoice_id=invoice_id,
        workflow_id=workflow_id,
        temporal_ui_url=url,
        runs=[
            RunPublic(
                run_id=run_id,
                started_at=_event_time(events[0]) if events else None,
                status=run_status(events),
            )
            for run_id, events in runs
        ],
        events=[entry for run_id, events in runs for entry in render(run_id, events)],
    )


async def invoice_history(client: Client, settings: Settings, invoice_id: int) -> InvoiceHistory:
    """The readable history of every run of the invoice's workflow (``Unavailable``: Temporal
    did not answer)."""
    workflow_id = settings.workflow_id(invoice_id)
    runs = await load(client, workflow_id)
    return assemble(invoice_id, workflow_id, ui_url(settings, workflow_id), runs)


__all__ = [
    "HistoryEntry",
    "InvoiceHistory",
    "RunPublic",
    "assemble",
    "invoice_history",
    "load",
    "render",
    "run_status",
    "ui_url",
]
