"""Monthly statements of account: the daily run sends one per customer whose day it is, at
most once a month; the Schedule that starts it exists on the dev server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from arflow.messages.channels import OutboxOnlyChannel
from arflow.messages.documents import Seller
from arflow.messages.statements import send_statement
from arflow.policies.service import ensure_default_policy
from arflow.schedules import ensure_monthly_statement_schedule
from models import ContactBlock, Customer, Invoice, StatementSent
from tests.conftest import Harness, harness
from tests.faults.fakes import Answer, FakeProvider
from workflows.statements import MonthlyStatementWorkflow
from workflows.types import StatementRun


async def run(h: Harness, at: datetime, run_id: str) -> dict[str, int]:
    result: dict[str, int] = await h.client.execute_workflow(
        MonthlyStatementWorkflow.run,
        StatementRun(at=at),
        id=f"{h.settings.workflow_id_prefix}{run_id}",
        task_queue=h.settings.task_queue,
    )
    return result


async def test_statements_go_to_customers_whose_day_it_is_once_a_month(h: Harness) -> None:
    # 15 March 2026, 07:00 UTC: the 15th in Berlin; still the 14th in Honolulu.
    at = datetime(2026, 3, 15, 7, 0, tzinfo=UTC)
    due = await h.customer(statement_day=15, timezone="Europe/Berlin")
    behind = await h.customer(statement_day=15, timezone="Pacific/Honolulu")
    nothing_open = await h.customer(statement_day=15)
    blocked = await h.customer(statement_day=15)
    other_day = await h.customer(statement_day=3)
    for cust in (due, behind, blocked, other_day):
        await h.invoice(cust["id"], amount_minor=10_000)
    with Session(h.engine) as s:
        s.add(
            ContactBlock(customer_id=blocked["id"], channel="email", reason="bounced", source="t")
        )
        s.commit()

    assert await run(h, at, "stmt-1") == {
        "sent": 1,
        "skipped": 1,
        "deferred": 0,
        "blocked": 1,
        "failed": 0,
    }
    with Session(h.engine) as s:
        rows = {
            r.customer_id: (r.period, r.status, r.open_items) for r in s.exec(select(StatementSent))
        }
    assert rows == {due["id"]: ("2026-03", "sent", 1), blocked["id"]: ("2026-03", "blocked", 1)}
    assert (
        nothing_open["id"] not in rows and behind["id"] not in rows and other_day["id"] not in rows
    )
    # The same day again (a retried run): nothing twice.
    assert await run(h, at, "stmt-2") == {
        "sent": 0,
        "skipped": 3,
        "deferred": 0,
        "blocked": 0,
        "failed": 0,
    }


async def test_a_statement_outside_the_contact_window_waits_for_it(h: Harness) -> None:
    """The run fires at 07:00 UTC: 03:00 in New York, outside the default policy's window
    (08:00-21:00). The statement is deferred (recorded on its row) and the run sends it when
    the window opens, 12:00 UTC, not before."""
    at = datetime(2026, 3, 15, 7, 0, tzinfo=UTC)
    ny = await h.customer(statement_day=15, timezone="America/New_York")
    await h.invoice(ny["id"], amount_minor=10_000)
    berlin = await h.customer(statement_day=15, timezone="Europe/Berlin")
    await h.invoice(berlin["id"], amount_minor=10_000)
    started = await h.env.get_current_time()

    counts = await run(h, at, "stmt-window")
    assert counts == {"sent": 2, "skipped": 0, "deferred": 1, "blocked": 0, "failed": 0}
    # The run slept from 07:00 to 12:00 UTC (its own clock) before the second pass.
    assert await h.env.get_current_time() - started >= timedelta(hours=5)
    with Session(h.engine) as s:
        rows = {r.customer_id: r for r in s.exec(select(StatementSent))}
    assert rows[ny["id"]].status == "sent" and rows[berlin["id"]].status == "sent"


def test_a_deferred_statement_is_recorded_with_the_window_opening(sqlite_engine: Engine) -> None:
    """The domain alone: outside the window nothing is sent and the row says until when."""

    at = datetime(2026, 3, 15, 7, 0, tzinfo=UTC)
    with Session(sqlite_engine) as s:
        policy = ensure_default_policy(s)
        customer = Customer(
            external_id="C-ny",
            name="NY Inc",
            email="ap@ny.example.com",
            timezone="America/New_York",
            statement_day=15,
        )
        s.add(customer)
        s.flush()
        assert customer.id is not None and policy.id is not None
        s.add(
            Invoice(
                external_id="I-ny",
                number="1",
                currency="USD",
                issued_on=at.date(),
                due_date=at.date(),
                customer_id=customer.id,
                policy_id=policy.id,
                amount_minor=100,
                balance_minor=100,
                due_at=at,
                request_hash="x",
            )
        )
        s.commit()
        seller, today = Seller("arflow"), at.date()
        outcome = send_statement(s, OutboxOnlyChannel(), seller, customer, today, at)
        opens = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
        assert (outcome.status, outcome.until) == ("deferred", opens)
        [row] = s.exec(select(StatementSent)).all()
        assert row.status == "deferred" and opens.isoformat() in (row.detail or "")
        assert send_statement(s, OutboxOnlyChannel(), seller, customer, today, opens).status == (
            "sent"
        )
        s.refresh(row)
        assert row.status == "sent"


async def test_a_provider_server_error_is_retried_and_the_statement_sent_once(
    fakes: tuple[Harness, FakeProvider],
) -> None:
    """SendGrid answers 500, then 202: the retry sends the statement (it used to find the
    month's row and count it skipped: the month's statement was lost)."""
    h, fake = fakes
    fake.answer(Answer(500), Answer(202, headers={"X-Message-Id": "sg-stmt"}))
    at = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    cust = await h.customer(statement_day=15)
    await h.invoice(cust["id"], amount_minor=10_000)

    counts = await run(h, at, "stmt-retry")
    assert counts["sent"] == 1 and counts["skipped"] == 0
    assert len(statements(fake)) == 2
    with Session(h.engine) as s:
        [row] = s.exec(select(StatementSent)).all()
    assert (row.status, row.provider_id) == ("sent", "sg-stmt")
    # A later run that day sends nothing more.
    assert (await run(h, at, "stmt-retry-2"))["skipped"] == 1
    assert len(statements(fake)) == 2


def statements(fake: FakeProvider) -> list[Any]:
    """The statement emails among the requests (the invoice's own reminders go there too)."""
    return [r for r in fake.requests if "Statement of account" in r.json()["subject"]]


def test_statement_day_is_validated() -> None:
    from pydantic import ValidationError

    from models.customer import CustomerCreate

    with pytest.raises(ValidationError, match="less than or equal to 28"):
        CustomerCreate(external_id="x", name="x", statement_day=31)


@pytest.mark.devserver
async def test_the_daily_statement_schedule_exists(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(dev_env, sqlite_engine, tmp_path) as h:
        schedule_id = await ensure_monthly_statement_schedule(h.client, h.settings)
        handle = h.client.get_schedule_handle(schedule_id)
        try:
            [calendar] = (await handle.describe()).schedule.spec.calendars
            assert [(r.start, r.end) for r in calendar.hour] == [(7, 7)]
        finally:
            await handle.delete()
