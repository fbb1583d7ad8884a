"""Reminder outcomes: what a send's outcome means and what the workflow records of it. Pure,
no I/O, safe inside the workflow.

A dunning step or a ladder notice goes out through the ``send_reminder`` activity, which
answers with an outcome. A contact cap defers the message to the time the cap frees; a message
no channel could take opens a task for a specialist.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from workflows.ladder import window
from workflows.types import (
    EventSpec,
    InvoiceWorkflowInput,
    LadderStage,
    NextAction,
    PolicySpec,
    ScheduledStep,
    SendOutcome,
    SendReminderInput,
    TaskRecord,
)

# Outcomes of a send that count as delivered (or handed to a person or a printer).
DELIVERED = frozenset({"sent", "uncertain", "task", "printed"})
# Notes the next reminder carries even when no step was missed: news the customer must hear.
NEWS_NOTES = frozenset({"payment_reversed"})


def move(inp: InvoiceWorkflowInput, step: ScheduledStep, at: datetime) -> None:
    """``step`` goes out at ``at`` instead (carried over runs in ``inp.deferred``)."""
    step.at = at
    inp.deferred[step.key] = at


def defer_step(inp: InvoiceWorkflowInput, step: ScheduledStep, retry_at: datetime) -> datetime:
    """A contact cap held dunning ``step`` back until ``retry_at``: it goes out then (no
    earlier than its own instant), within the contact rules. Returns the new instant."""
    at = window(inp, max(step.at, retry_at))
    move(inp, step, at)
    return at


def day_cap(sent_today: int, per_day: int, now: datetime, timezone: str) -> SendOutcome | None:
    """The daily message cap: with ``sent_today`` messages to the customer on their local day
    of ``now``, another is ``capped`` until their next local midnight when ``per_day`` (not 0)
    are reached; None when it may go out. The send activity and the simulation both ask."""
    if not per_day or sent_today < per_day:
        return None
    zone = ZoneInfo(timezone)
    day = now.astimezone(zone).date()
    tomorrow = datetime.combine(day + timedelta(days=1), time(0), zone)
    return SendOutcome(
        "capped",
        f"{sent_today} messages to this customer today (cap {per_day})",
        tomorrow.astimezone(UTC),
    )


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


def step_input(
    inp: InvoiceWorkflowInput,
    attempt: ScheduledStep,
    skipped: list[str],
    next_action: NextAction | None,
    escalate_at: datetime,
    requested_by: str | None,
    first_try: bool,
) -> SendReminderInput:
    """The send of dunning step ``attempt`` on one channel (``first_try``: its own channel)."""
    return SendReminderInput(
        invoice_id=inp.invoice_id,
        step=attempt,
        balance_minor=inp.balance_minor,
        skipped=skipped,
        next_action=next_action,
        escalate_at=escalate_at,
        note=inp.catch_up_note,
        requested_by=requested_by,
        first_try=first_try,
    )


def notice_input(
    inp: InvoiceWorkflowInput,
    stage: LadderStage,
    channel: str,
    at: datetime,
    skipped: list[str],
    next_action: NextAction | None,
) -> SendReminderInput:
    """The send of ladder notice ``stage`` due at ``at`` on ``channel``."""
    return SendReminderInput(
        invoice_id=inp.invoice_id,
        step=ScheduledStep(stage.key, channel, stage.template, at),
        balance_minor=inp.balance_minor,
        skipped=skipped,
        next_action=next_action,
        note=inp.catch_up_note,
        kind="ladder",
    )


def with_caps(send: SendReminderInput, policy: PolicySpec, now: datetime) -> SendReminderInput:
    """``send`` with the policy's contact caps and the workflow's clock filled in."""
    send.now = now
    send.max_messages_per_day = policy.max_messages_per_day
    send.max_calls_per_week = policy.max_calls_per_week
    send.call_cooldown = policy.call_cooldown
    send.consolidate = policy.consolidate
    return send
