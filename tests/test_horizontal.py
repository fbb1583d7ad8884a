"""Two workers on one task queue, as N worker processes or machines run them (docs/scaling.md):
the invoices' workflow tasks and activities are shared between them, and nothing happens twice
(one reminder per step, one payment applied per invoice). ``bench/lifecycle.py --workers 2
--apis 2`` proves the same with processes; this is its in-process, always-run twin."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench.lifecycle import check_lifecycles, split_of, wait_for_pollers
from tests.conftest import harness
from tests.test_api import eventually
from tests.webhook import signed_payment
from worker import build_worker

pytestmark = pytest.mark.devserver

INVOICES = 16


async def test_two_workers_share_the_lifecycles_and_do_nothing_twice(
    dev_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    async with harness(dev_env, engine, tmp_path, with_worker=False) as h:
        # A second connection, as a second process has: the SDK refuses two workers of one
        # client on one task queue ("Registration of multiple workers ... not allowed").
        other = await Client.connect(
            h.client.service_client.config.target_host,
            namespace=h.client.namespace,
            data_converter=h.client.data_converter,
        )
        first = build_worker(h.client, h.settings, engine, identity="worker-1")
        second = build_worker(other, h.settings, engine, identity="worker-2")
        async with first, second:
            await wait_for_pollers(h.client, h.settings.task_queue, ["worker-1", "worker-2"], [])
            cust = await h.customer()
            pol = await h.policy(
                escalate_after="P30D",
                steps=[{"key": "due", "offset": "PT0S", "template": "reminder"}],
            )
            due_at = datetime.now(UTC) - timedelta(seconds=1)  # the reminder is due at once
            invoices = await asyncio.gather(
                *(
                    h.invoice(
                        cust["id"],
                        policy_id=pol["id"],
                        due_at=due_at.isoformat(),
                        due_date=due_at.date().isoformat(),
                    )
                    for _ in range(INVOICES)
                )
            )
            ids = [inv["id"] for inv in invoices]
            assert await eventually(lambda: all(h.reminders(i) for i in ids), timeout=60)
            for inv in invoices:
                resp = await signed_payment(h, invoice_id=inv["id"], amount_minor=120_000)
                assert resp.json()["status"] == "accepted"
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(h.client.get_workflow_handle(inv["workflow_id"]).result() for inv in invoices)
                ),
                timeout=60,
            )
            assert {r["status"] for r in results} == {"paid"}
            split = await split_of(h.client, [inv["workflow_id"] for inv in invoices])
            check = check_lifecycles(engine, ids)

    # Shared: each worker ran some of the workflow tasks, and their local activities with them.
    tasks = split["workflow_tasks_by_worker"]
    assert set(tasks) == {"worker-1", "worker-2"}, split
    assert sum(tasks.values()) >= 2 * INVOICES  # the start's task and the payment's at least
    assert set(split["local_activities_by_worker"]) <= {"worker-1", "worker-2"}
    assert split["activity_retries"] == 0
    # Nothing twice, nothing missing: one reminder row and event per step, one payment stored
    # and applied once, every invoice paid with a zero balance.
    assert check["problems"] == [], check
    assert check["invoices"] == INVOICES
    for name in ("reminders", "reminder_events", "payments", "applied", "applied_events"):
        assert check["totals"][name] == INVOICES, (name, check)
