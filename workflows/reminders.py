"""Reminder outcomes: what a send's outcome means and what the workflow records of it. Pure,
no I/O, safe inside the workflow.

A dunning step or a ladder notice goes out through the ``send_reminder`` activity, which
answers with an outcome. A contact cap defers the message to the time the cap frees; a message
no channel could take opens a task for a specialist.
"""

from __future__ import annotations

from datetime import datetime

from workflows.types import EventSpec, InvoiceWorkflowInput, ScheduledStep, TaskRecord

# Outcomes of a send that count as delivered (or handed to a person or a printer).
DELIVERED = frozenset({"sent", "uncertain", "task", "printed"})
# Notes the next reminder carries even when no step was missed: news the customer must hear.
NEWS_NOTES = frozenset({"payment_reversed"})


def move(inp: InvoiceWorkflowInput, step: ScheduledStep, at: datetime) -> None:
    """``step`` goes out at ``at`` instead (carried over runs in ``inp.deferred``)."""
    step.at = at
    inp.deferred[step.key] = at


def deferred(
    prefix: str, key: str, until: datetime, reason: str | None
) -> tuple[str, list[EventSpec]]:
    """The dedupe key and events of message ``key`` (a ``step`` or a ``stage``) deferred by a
    contact cap until ``until``."""
    events = [
        EventSpec("reminder_deferred", {"step": key, "until": until.isoformat(), "reason": reason})
    ]
    return f"{prefix}:{key}:deferred:{until.isoformat()}", events


def undeliverable(
    prefix: str, key: str, now: datetime, channels: list[str] | None = None
) -> tuple[str, list[EventSpec], TaskRecord]:
    """The dedupe key, events and task of message ``key`` (a ``step`` or a ``stage``) that no
    channel could take (``channels``: the ones a notice tried)."""
    data: dict[str, object] = {"step": key}
    if channels is not None:
        data["channels"] = channels
    task = TaskRecord(kind="contact_failed", due_at=now, data={"step": key})
    return f"{prefix}:{key}:undeliverable", [EventSpec("reminder_undeliverable", data)], task
