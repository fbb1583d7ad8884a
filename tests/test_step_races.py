"""Many of one customer's steps falling due at the same instant (after a restart, every
morning at ``send_at``): their send activities run concurrently, consolidation covers some
steps from a sibling's message, and every step still ends on its own invoice's timeline
exactly once, in agreement with its outbox row, also when an activity is retried."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from activities.invoice import InvoiceActivities
from arflow.db import session_factory
from arflow.messages.channels import DeliveryResult, OutboundMessage, OutboxOnlyChannel
from arflow.messages.delivery import StepDelivery
from models import Customer, DunningPolicy, Invoice, InvoiceEvent, OutboxMessage
from workflows.types import NextAction, ScheduledStep, SendOutcome, SendReminderInput

SIBLINGS = 12
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class ProviderChannel:
    """An external channel that accepts every message (the provider path: the row is
    committed ``sending`` before the call)."""

    external = True

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.lock = threading.Lock()

    def deliver(self, message: OutboundMessage) -> DeliveryResult:
        with self.lock:
            self.sent.append(message.invoice_id)
        return DeliveryResult(provider_id=f"p-{message.outbox_id}")


def siblings_due_at_once(engine: Engine) -> list[int]:
    """One customer, ``SIBLINGS`` open invoices whose step ``due`` falls due at ``AT``."""
    with Session(engine) as session:
        policy = DunningPolicy(
            name=f"consolidating-{uuid.uuid4().hex[:6]}",
            escalate_after="P30D",
            consolidate=True,
            steps=[{"key": "due", "offset": "PT0S", "channel": "email"}],
        )
        customer = Customer(
            external_id=f"C-{uuid.uuid4().hex[:8]}",
            name="Acme GmbH",
            email="ap@acme.example.com",
            timezone="UTC",
        )
        session.add(policy)
        session.add(customer)
        session.flush()
        assert policy.id is not None and customer.id is not None
        invoices = [
            Invoice(
                external_id=f"I-{uuid.uuid4().hex[:8]}",
                number=f"INV-{n}",
                currency="EUR",
                issued_on=date(2026, 2, 1),
                due_date=date(2026, 3, 1),
                customer_id=customer.id,
                policy_id=policy.id,
                amount_minor=10_000 + n,
                balance_minor=10_000 + n,
                due_at=AT - timedelta(days=1, minutes=n),
                next_action="reminder",
                next_action_at=AT,
                next_action_step="due",
                request_hash="x" * 64,
            )
            for n in range(SIBLINGS)
        ]
        session.add_all(invoices)
        session.commit()
        return [i.id for i in invoices if i.id is not None]


def step_input(invoice_id: int) -> SendReminderInput:
    return SendReminderInput(
        invoice_id=invoice_id,
        step=ScheduledStep(key="due", channel="email", template="reminder", at=AT),
        balance_minor=10_000,
        skipped=[],
        next_action=NextAction(kind="escalation", at=AT + timedelta(days=29)),
        now=AT,
        consolidate=True,
    )


@pytest.fixture
def collide(sqlite_engine: Engine) -> Iterator[threading.Barrier]:
    """Hold every attempt just before it takes the customer's lock until all of them have
    looked for their outbox row: the inserts then collide on every run, not by luck."""
    barrier = threading.Barrier(SIBLINGS, timeout=20)

    def wait(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE CUSTOMERS") and not barrier.broken:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

    event.listen(sqlite_engine, "before_cursor_execute", wait)
    yield barrier
    event.remove(sqlite_engine, "before_cursor_execute", wait)


def run_all(acts: InvoiceActivities, ids: list[int]) -> list[SendOutcome]:
    with ThreadPoolExecutor(max_workers=SIBLINGS) as pool:
        return list(pool.map(lambda i: acts.send_reminder(step_input(i)), ids))


def timeline_and_outbox(engine: Engine, ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """Per invoice: its ``due`` step's events (delivery, outbox id) and its outbox row."""
    with Session(engine) as session:
        found = {}
        for invoice_id in ids:
            events = session.exec(
                select(InvoiceEvent).where(
                    InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.kind == "reminder_sent"
                )
            ).all()
            [row] = session.exec(
                select(OutboxMessage).where(OutboxMessage.invoice_id == invoice_id)
            ).all()
            found[invoice_id] = (
                [(e.data.get("delivery", "sent"), e.data["outbox_id"]) for e in events],
                (row.status, row.id),
            )
        return found


@pytest.mark.parametrize("external", [False, True], ids=["outbox", "provider"])
def test_sibling_steps_due_at_once_each_leave_one_event(
    sqlite_engine: Engine, collide: threading.Barrier, external: bool
) -> None:
    ids = siblings_due_at_once(sqlite_engine)
    provider = ProviderChannel()
    channel = provider if external else OutboxOnlyChannel()
    delivery = StepDelivery(channel, lambda i, n, e: f"https://pay.example.com/{i}")
    acts = InvoiceActivities(session_factory(sqlite_engine), delivery)

    outcomes = run_all(acts, ids)
    assert {o.status for o in outcomes} == {"sent"}
    first = timeline_and_outbox(sqlite_engine, ids)
    statuses = sorted(row[0] for _, row in first.values())
    # One message went out and covered every sibling (the barrier makes them collide).
    assert statuses == ["consolidated"] * (SIBLINGS - 1) + ["sent"], statuses
    for invoice_id, (events, (status, row_id)) in first.items():
        assert events == [(status, row_id)], (invoice_id, events, status)
    if external:
        assert len(provider.sent) == 1

    # The same activities again (Temporal retries them): the same answers, nothing doubled.
    collide.abort()
    assert {o.status for o in run_all(acts, ids)} == {"sent"}
    assert timeline_and_outbox(sqlite_engine, ids) == first
    with Session(sqlite_engine) as session:
        invoices = session.exec(select(Invoice).where(Invoice.id.in_(ids))).all()  # type: ignore[union-attr]
        assert {(i.stage, i.next_action) for i in invoices} == {("due", "escalation")}
    if external:
        assert len(provider.sent) == 1


def test_a_sibling_already_sending_its_own_message_is_not_covered(
    sqlite_engine: Engine,
) -> None:
    """A sibling whose own message is with the provider (its row committed ``sending``, its
    next action not yet moved on) is not covered again: this step still goes out and is
    recorded (it used to hit the sibling's row and answer "sent" having sent nothing)."""
    first, *others = siblings_due_at_once(sqlite_engine)
    busy = others[0]
    with Session(sqlite_engine) as session:
        session.add(
            OutboxMessage(
                invoice_id=busy,
                step_key="due",
                channel="email",
                subject="s",
                body="b",
                status="sending",
            )
        )
        session.commit()
    provider = ProviderChannel()
    delivery = StepDelivery(provider, lambda i, n, e: f"https://pay.example.com/{i}")
    acts = InvoiceActivities(session_factory(sqlite_engine), delivery)

    assert acts.send_reminder(step_input(first)).status == "sent"
    assert provider.sent == [first]
    found = timeline_and_outbox(sqlite_engine, [first, busy, *others[1:]])
    assert found[first][1][0] == "sent" and found[first][0] == [("sent", found[first][1][1])]
    assert found[busy] == ([], ("sending", found[busy][1][1]))  # left to its own activity
    assert {found[i][1][0] for i in others[1:]} == {"consolidated"}
