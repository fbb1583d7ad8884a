"""Monthly statements of account: the daily run sends one per customer whose day it is, at
most once a month; the Schedule that starts it exists on the dev server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from arflow.schedules import ensure_monthly_statement_schedule
from models import ContactBlock, StatementSent
from tests.conftest import Harness, harness
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

    assert await run(h, at, "stmt-1") == {"sent": 1, "skipped": 1, "blocked": 1, "failed": 0}
    with Session(h.engine) as s:
        rows = {
            r.customer_id: (r.period, r.status, r.open_items) for r in s.exec(select(StatementSent))
        }
    assert rows == {due["id"]: ("2026-03", "sent", 1), blocked["id"]: ("2026-03", "blocked", 1)}
    assert (
        nothing_open["id"] not in rows and behind["id"] not in rows and other_day["id"] not in rows
    )
    # The same day again (a retried run): nothing twice.
    assert await run(h, at, "stmt-2") == {"sent": 0, "skipped": 3, "blocked": 0, "failed": 0}


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
