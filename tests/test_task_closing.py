"""Worklist tasks close when their cause ends (``arflow.invoices.tasks``), with the reason on
the task and a ``task_closed`` event on the timeline: a dispute past its SLA once it is
resolved or the invoice is paid, an uncertain delivery once a provider event settles it or a
later message goes out, a step no channel could take once the contact details are fixed or
a later message goes out, a legal review once the invoice is closed."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from activities.invoice import InvoiceActivities
from arflow.db import session_factory
from arflow.invoices import recording
from arflow.messages.channels import OutboxOnlyChannel
from arflow.messages.delivery import StepDelivery
from arflow.messages.provider_events import apply_sendgrid_events
from models import ContactBlock, InvoiceEvent, OutboxMessage, Task
from tests.conftest import Harness
from tests.test_actions import new_case
from tests.test_contact_rules import invoice_due_in, one_step_policy, sleep_until
from tests.test_legal import an_invoice_with_history, open_legal
from tests.test_step_races import siblings_due_at_once, step_input
from tests.webhook import signed_payment
from workflows.invoice import InvoiceWorkflow
from workflows.types import RecordClosedInput


def tasks_of(engine: Engine, invoice_id: int, kind: str) -> list[Task]:
    with Session(engine) as s:
        return list(
            s.exec(select(Task).where(Task.invoice_id == invoice_id, Task.kind == kind)).all()
        )


def closed_events(engine: Engine, invoice_id: int) -> list[dict[str, Any]]:
    with Session(engine) as s:
        events = s.exec(
            select(InvoiceEvent).where(
                InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.kind == "task_closed"
            )
        ).all()
        return [e.data for e in events]


def assert_closed(engine: Engine, invoice_id: int, kind: str, reason: str) -> None:
    [task] = tasks_of(engine, invoice_id, kind)
    assert task.status == "done", (kind, task.status)
    assert task.data["closed_reason"] == reason
    assert {"task_id": task.id, "task": kind, "reason": reason} in closed_events(engine, invoice_id)


async def overdue_dispute(h: Harness) -> Any:
    c = await new_case(h)
    assert (await c.act("/disputes", {"reason": "wrong quantity"})).status_code == 200
    deadline = datetime.fromisoformat((await c.get())["next_action"]["at"])
    await c.sleep_until(deadline + timedelta(minutes=1))
    [task] = tasks_of(h.engine, c.id, "dispute_overdue")
    assert task.status == "open"
    return c


async def test_dispute_overdue_closes_when_the_dispute_is_resolved(h: Harness) -> None:
    c = await overdue_dispute(h)
    dispute_id = (await c.get("/disputes"))[0]["id"]
    resp = await c.act(
        f"/disputes/{dispute_id}/resolve", {"outcome": "rejected", "note": "order confirmed"}
    )
    assert resp.status_code == 200, resp.text
    assert_closed(h.engine, c.id, "dispute_overdue", "dispute rejected")
    assert (await h.get("/v1/worklist", kind="dispute_overdue")).json() == []


async def test_dispute_overdue_closes_when_the_invoice_is_paid(h: Harness) -> None:
    c = await overdue_dispute(h)
    await signed_payment(h, invoice_id=c.id, amount_minor=120_000)
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, c.inv["workflow_id"])
    assert (await handle.result()).status == "paid"
    [task] = tasks_of(h.engine, c.id, "dispute_overdue")
    assert task.status == "done"
    assert task.data["closed_reason"] in ("invoice paid", "dispute closed")


def uncertain_delivery(engine: Engine) -> tuple[int, int, int]:
    """An invoice whose earlier email went out with an uncertain outcome: (invoice, outbox
    row, task)."""
    invoice_id, *_ = siblings_due_at_once(engine)
    with Session(engine) as s:
        row = OutboxMessage(
            invoice_id=invoice_id,
            step_key="before_due",
            channel="email",
            recipient="ap@acme.example.com",
            subject="s",
            body="b",
            status="uncertain",
        )
        s.add(row)
        s.flush()
        task = Task(
            invoice_id=invoice_id,
            kind="delivery_uncertain",
            data={"step": "before_due", "channel": "email", "outbox_id": row.id},
        )
        s.add(task)
        s.commit()
        assert row.id is not None and task.id is not None
        return invoice_id, row.id, task.id


def test_delivery_uncertain_closes_when_the_provider_reports_delivery(
    sqlite_engine: Engine,
) -> None:
    invoice_id, row_id, _ = uncertain_delivery(sqlite_engine)
    with Session(sqlite_engine) as s:
        event = {"event": "delivered", "outbox_id": str(row_id), "invoice_id": str(invoice_id)}
        assert apply_sendgrid_events(s, [event | {"email": "ap@acme.example.com"}]).applied == 1
        s.commit()
    assert_closed(
        sqlite_engine,
        invoice_id,
        "delivery_uncertain",
        "the provider reported the message delivered",
    )


def test_delivery_uncertain_and_contact_failed_close_when_a_later_step_goes_out(
    sqlite_engine: Engine,
) -> None:
    invoice_id, _, _ = uncertain_delivery(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add(Task(invoice_id=invoice_id, kind="contact_failed", data={"step": "before_due"}))
        s.commit()
    delivery = StepDelivery(OutboxOnlyChannel(), lambda i, n, e: f"https://pay.example.com/{i}")
    acts = InvoiceActivities(session_factory(sqlite_engine), delivery)
    inp = step_input(invoice_id)
    inp.consolidate = False
    assert acts.send_reminder(inp).status == "sent"
    assert_closed(sqlite_engine, invoice_id, "delivery_uncertain", "a later email message was sent")
    assert_closed(sqlite_engine, invoice_id, "contact_failed", "a later email message was sent")
    acts.send_reminder(inp)  # a retry: nothing closed twice
    assert len(closed_events(sqlite_engine, invoice_id)) == 2


async def test_contact_failed_closes_when_the_contact_block_is_lifted(h: Harness) -> None:
    cust = await h.customer()
    with Session(h.engine) as s:
        s.add(
            ContactBlock(
                customer_id=cust["id"], channel="email", reason="unsubscribed", source="test"
            )
        )
        s.commit()
    pol = await one_step_policy(h, "email", [])
    inv, due_at = await invoice_due_in(h, cust, pol, 1)
    await sleep_until(h, due_at + timedelta(minutes=1))
    [task] = tasks_of(h.engine, inv["id"], "contact_failed")
    assert task.status == "open"
    resp = await h.http.delete(
        f"/v1/customers/{cust['id']}/contact-blocks/email", headers=h.as_role("specialist")
    )
    assert resp.status_code == 204, resp.text
    assert_closed(h.engine, inv["id"], "contact_failed", "email contact details fixed")
    assert (await h.get("/v1/worklist", kind="contact_failed")).json() == []


def test_legal_review_closes_when_the_invoice_is_closed(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    invoice_id = an_invoice_with_history(sqlite_engine)
    open_legal(sqlite_engine, tmp_path / "legal", invoice_id)
    [task] = tasks_of(sqlite_engine, invoice_id, "legal_review")
    assert task.status == "open"
    closing = RecordClosedInput(invoice_id, "written_off", "uncollectable", "alice")
    for _ in range(2):  # the activity and its retry
        with Session(sqlite_engine) as s:
            recording.record_closed(s, closing)
    assert_closed(sqlite_engine, invoice_id, "legal_review", "invoice written_off")
    assert len(closed_events(sqlite_engine, invoice_id)) == 1
