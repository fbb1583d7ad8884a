"""Kill -9 the worker process in the middle of 200 invoices' reminders and start it again:
every due reminder is sent exactly once (counted in the outbox and on the timelines)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select
from temporalio.testing import WorkflowEnvironment

from arflow.ports import free_port
from models import OutboxMessage
from models.invoice import InvoiceEvent
from tests.conftest import Harness, harness
from tests.processes import connect, kill, start_dev_server, start_worker, stop

pytestmark = [pytest.mark.devserver, pytest.mark.slow]
N = 200
STEPS = ["s0", "s20", "s40"]


async def create_invoices(h: Harness, n: int, lead: timedelta) -> datetime:
    """``n`` invoices due ``lead`` from now under a policy with steps 0, 20 and 40 s after due."""
    pol = await h.policy(
        escalate_after="PT10M", steps=[{"key": k, "offset": f"PT{k[1:]}S"} for k in STEPS]
    )
    cust = await h.customer()
    due_at = datetime.now(UTC) + lead
    for i in range(n):
        await h.invoice(
            cust["id"],
            external_id=f"K-{i}",
            policy_id=pol["id"],
            due_at=due_at.isoformat(),
            due_date=due_at.date().isoformat(),
        )
    return due_at


def outbox_count(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(OutboxMessage)).one())


async def test_worker_killed_mid_run_sends_every_reminder_once(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(dev_env, sqlite_engine, tmp_path, with_worker=False) as h:
        due_at = await create_invoices(h, N, lead=timedelta(seconds=10))
        assert datetime.now(UTC) < due_at, "creating the invoices took longer than planned"
        log = tmp_path / "worker.log"
        worker = start_worker(h, log)
        try:
            deadline = time.monotonic() + 60
            while outbox_count(h.engine) < N // 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            before_kill = outbox_count(h.engine)
            assert N // 3 <= before_kill < N, f"kill point missed: {before_kill} sent"
            kill(worker)
            await asyncio.sleep(1)
            worker = start_worker(h, log)
            deadline = time.monotonic() + 120
            while outbox_count(h.engine) < N * len(STEPS) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # a duplicate, if any, would show up now
        finally:
            stop(worker)

        with Session(h.engine) as s:
            rows = s.exec(select(OutboxMessage.invoice_id, OutboxMessage.step_key)).all()
            events = s.exec(
                select(InvoiceEvent.invoice_id, InvoiceEvent.kind, InvoiceEvent.data)
            ).all()
        per_step = Counter(step for _, step in rows)
        assert per_step == dict.fromkeys(STEPS, N), per_step
        assert len(set(rows)) == len(rows) == N * len(STEPS)
        sent_events = Counter(
            (inv, data["step"]) for inv, kind, data in events if kind == "reminder_sent"
        )
        assert len(sent_events) == N * len(STEPS) and set(sent_events.values()) == {1}
        assert not [e for e in events if e[1] == "reminder_skipped"]
        print(f"killed the worker after {before_kill} of {N * len(STEPS)} reminders")


async def test_temporal_server_killed_mid_run_loses_no_reminder(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """The embedded dev server keeps its state in a file (as ``arflow run`` starts it): killed
    with SIGKILL and started again, its timers resume and each reminder goes out once."""
    n = 60
    port = free_port()
    db_file, log = tmp_path / "temporal.db", tmp_path / "temporal.log"
    server = start_dev_server(db_file, port, log)
    try:
        client = await connect(f"127.0.0.1:{port}")
        env = WorkflowEnvironment.from_client(client)
        async with harness(env, sqlite_engine, tmp_path) as h:
            await create_invoices(h, n, lead=timedelta(seconds=5))
            deadline = time.monotonic() + 60
            while outbox_count(h.engine) < n // 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            before_kill = outbox_count(h.engine)
            assert n // 2 <= before_kill < n * len(STEPS), f"kill point missed: {before_kill}"
            kill(server)
            await asyncio.sleep(1)
            server = start_dev_server(db_file, port, log)
            deadline = time.monotonic() + 120
            while outbox_count(h.engine) < n * len(STEPS) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)
            with Session(h.engine) as s:
                rows = s.exec(select(OutboxMessage.invoice_id, OutboxMessage.step_key)).all()
                skipped = s.exec(
                    select(InvoiceEvent.id).where(InvoiceEvent.kind == "reminder_skipped")
                ).all()
    finally:
        stop(server)
    assert Counter(step for _, step in rows) == dict.fromkeys(STEPS, n)
    assert len(set(rows)) == len(rows)
    assert skipped == []
    print(f"killed the Temporal server after {before_kill} of {n * len(STEPS)} reminders")
