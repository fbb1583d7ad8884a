"""A send attempt that outlives its workflow task (issue 16, found by the PostgreSQL outage
run of the fault suite).

``send_reminder`` runs as a local activity on the outbox channel. When PostgreSQL goes away,
the workflow task that started an attempt can time out while the attempt still waits for the
database; Temporal retries the task at a later time, the workflow decides afresh, sends the
later step and records the earlier one as skipped, while the old attempt of the earlier step
still runs and, once PostgreSQL is back, sends it. The fault suite saw steps both sent and
skipped (``{(12, 's20'): 2, (18, 's20'): 2, ...}``). Whichever of the two commits second now
sees the other: a step is sent or skipped, never both.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from activities.invoice import InvoiceActivities
from arflow.db import session_factory
from arflow.messages.channels import OutboxOnlyChannel
from arflow.messages.delivery import StepDelivery
from models import InvoiceEvent, OutboxMessage
from tests.test_step_races import AT, siblings_due_at_once
from workflows.types import SUPERSEDED, NextAction, ScheduledStep, SendReminderInput


def attempt(invoice_id: int, key: str, skipped: list[str]) -> SendReminderInput:
    offset = timedelta(seconds=int(key[1:]))
    return SendReminderInput(
        invoice_id=invoice_id,
        step=ScheduledStep(key=key, channel="email", template="reminder", at=AT + offset),
        balance_minor=10_000,
        skipped=skipped,
        next_action=NextAction(kind="escalation", at=AT + timedelta(days=29)),
        now=AT + offset,
    )


def outcomes(engine: Engine, invoice_id: int) -> tuple[list[tuple[str, str]], list[str]]:
    """The step events (kind, step) of the invoice, and its outbox rows' steps."""
    with Session(engine) as session:
        events = session.exec(
            select(InvoiceEvent).where(
                InvoiceEvent.invoice_id == invoice_id,
                InvoiceEvent.kind.in_(("reminder_sent", "reminder_skipped")),  # type: ignore[attr-defined]
            )
        ).all()
        rows = session.exec(
            select(OutboxMessage.step_key).where(OutboxMessage.invoice_id == invoice_id)
        ).all()
    return sorted((e.kind, e.data["step"]) for e in events), sorted(rows)


def activities(engine: Engine) -> InvoiceActivities:
    delivery = StepDelivery(OutboxOnlyChannel(), lambda i, n, e: f"https://pay.example.com/{i}")
    return InvoiceActivities(session_factory(engine), delivery)


def test_a_later_step_does_not_skip_a_step_a_late_attempt_sent(engine: Engine) -> None:
    """The old attempt of s20 commits first; the retried task's s40 says s20 was skipped."""
    [invoice_id, *_] = siblings_due_at_once(engine)
    acts = activities(engine)

    assert acts.send_reminder(attempt(invoice_id, "s20", [])).status == "sent"
    assert acts.send_reminder(attempt(invoice_id, "s40", ["s20"])).status == "sent"

    events, rows = outcomes(engine, invoice_id)
    assert events == [("reminder_sent", "s20"), ("reminder_sent", "s40")]
    assert rows == ["s20", "s40"]


def test_a_late_attempt_stands_down_for_a_step_recorded_as_skipped(engine: Engine) -> None:
    """The retried task's s40 (skipping s20) commits first; the old attempt of s20 comes
    back: nothing is sent for s20, and its timeline keeps the one skip."""
    [invoice_id, *_] = siblings_due_at_once(engine)
    acts = activities(engine)

    assert acts.send_reminder(attempt(invoice_id, "s40", ["s20"])).status == "sent"
    late = acts.send_reminder(attempt(invoice_id, "s20", []))

    assert late.status == SUPERSEDED, late
    events, rows = outcomes(engine, invoice_id)
    assert events == [("reminder_sent", "s40"), ("reminder_skipped", "s20")]
    assert rows == ["s40"]
    # Temporal may retry the late attempt too: the same answer, still nothing sent.
    assert acts.send_reminder(attempt(invoice_id, "s20", [])).status == SUPERSEDED
    assert outcomes(engine, invoice_id) == (events, rows)
