"""PostgreSQL goes away mid-run and comes back: the API answers 503 with the JSON error body
while it is away, activities are retried by Temporal, and afterwards every due reminder went out
exactly once and every payment was applied once.

PostgreSQL on the test machines is shared and must never be stopped: each test gets a database
of its own, reached through a TCP proxy (``tests/faults/proxy.py``) that plays the outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from arflow.db import make_engine
from arflow.migrate import upgrade
from models import Invoice, OutboxMessage, Payment
from models.invoice import InvoiceEvent
from tests.conftest import PG_URL, Harness, _pg_available, harness
from tests.faults.proxy import ProxyThread
from tests.webhook import signed_payment
from workflows.types import SegmentMove

pytestmark = [pytest.mark.postgres, pytest.mark.devserver, pytest.mark.slow]

N = 30
STEPS = ["s0", "s10", "s20", "s40"]
AMOUNT = 120_000
PART = 50_000
OUTAGE_SECONDS = 30


@dataclass
class FaultDb:
    name: str
    proxy: ProxyThread
    via_proxy: Engine  # what arflow uses
    direct: Engine  # what the test reads with, outage or not
    admin: Engine  # the shared ``test`` database, for CREATE/DROP DATABASE


@pytest.fixture
def fault_db() -> Iterator[FaultDb]:
    """A database of our own on the shared server, migrated, with a proxy in front of it."""
    problem = _pg_available()
    if problem:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    name = f"fault_pg_{uuid.uuid4().hex[:12]}"
    base = sa.make_url(PG_URL)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    try:
        with ProxyThread(base.host or "127.0.0.1", base.port or 5432) as proxy:
            proxied = base.set(port=proxy.port, database=name)
            via_proxy = make_engine(proxied.render_as_string(hide_password=False))
            direct = make_engine(base.set(database=name).render_as_string(hide_password=False))
            upgrade(direct)
            try:
                yield FaultDb(name, proxy, via_proxy, direct, admin)
            finally:
                via_proxy.dispose()
                direct.dispose()
    finally:
        with admin.connect() as conn:  # WITH (FORCE) ends connections to this database only
            conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


def outbox_count(engine: Engine) -> int:
    with Session(engine) as s:
        return int(
            s.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(col(OutboxMessage.step_key).not_like("confirm-%"))  # reminders only
            ).one()
        )


def outcomes(engine: Engine) -> int:
    """Steps with an outcome on their timeline: sent, or skipped by the catch-up rule."""
    kinds = ("reminder_sent", "reminder_skipped")
    with Session(engine) as s:
        stmt = select(func.count()).where(InvoiceEvent.kind.in_(kinds))  # type: ignore[attr-defined]
        return int(s.exec(stmt.select_from(InvoiceEvent)).one())


async def create_invoices(
    h: Harness, n: int, lead: timedelta, steps: list[str] = STEPS
) -> list[dict[str, Any]]:
    """``n`` invoices falling due half a second apart from ``lead`` on, under a policy with
    ``steps`` (``s10``: 10 s after due): the sends of one step spread over ``n / 2`` seconds."""
    pol = await h.policy(
        escalate_after="PT10M", steps=[{"key": k, "offset": f"PT{k[1:]}S"} for k in steps]
    )
    cust = await h.customer()
    first = datetime.now(UTC) + lead
    out = []
    for i in range(n):
        due_at = first + timedelta(seconds=i / 2)
        out.append(
            await h.invoice(
                cust["id"],
                external_id=f"PG-{i}",
                amount_minor=AMOUNT,
                policy_id=pol["id"],
                due_at=due_at.isoformat(),
                due_date=due_at.date().isoformat(),
            )
        )
    return out


def pay(h: Harness, invoice_id: int, event_id: str) -> Any:
    return signed_payment(
        h, event_id=event_id, invoice_id=invoice_id, amount_minor=PART, currency="EUR"
    )


def assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, (resp.status_code, resp.text)
    assert resp.json()["error"]["code"] == "unavailable", resp.text
    assert int(resp.headers["Retry-After"]) > 0


@pytest.mark.fault  # about 3 minutes
@pytest.mark.timeout(300)
async def test_postgres_down_mid_run_loses_and_doubles_nothing(
    dev_env: WorkflowEnvironment, fault_db: FaultDb, tmp_path: Path
) -> None:
    db = fault_db
    async with harness(dev_env, db.via_proxy, tmp_path) as h:
        invoices = await create_invoices(h, N, lead=timedelta(seconds=4))
        ids = [inv["id"] for inv in invoices]
        total = N * len(STEPS)

        # Mid-run: the first step sent everywhere, the second under way.
        deadline = time.monotonic() + 60
        while outbox_count(db.direct) < N + N // 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Payments just before the outage: their recording activities meet it.
        before = {inv_id: f"evt_before_{inv_id}" for inv_id in ids[:10]}
        for inv_id, event in before.items():
            resp = await pay(h, inv_id, event)
            assert resp.status_code == 200, resp.text
        sent_at_down = outbox_count(db.direct)
        assert 0 < sent_at_down < total, f"outage point missed: {sent_at_down} sent"
        db.proxy.down()
        down_at = time.monotonic()
        during = {inv_id: f"evt_during_{inv_id}" for inv_id in ids[10:15]}
        try:
            statuses = await requests_during_outage(h, ids, during, down_at)
            sent_during = outbox_count(db.direct) - sent_at_down
        finally:
            db.proxy.up()
        outage = time.monotonic() - down_at
        assert set(statuses) == {503}, statuses

        # Back: the first requests succeed (stale pooled connections are replaced), the
        # payments refused during the outage are sent again by their provider.
        assert (await h.get("/v1/invoices")).status_code == 200
        assert (await h.get(f"/v1/invoices/{ids[0]}")).status_code == 200
        for inv_id, event in during.items():
            resp = await pay(h, inv_id, event)
            assert resp.status_code == 200, resp.text
        deadline = time.monotonic() + 120
        while outcomes(db.direct) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        recovered = time.monotonic() - down_at - outage
        await asyncio.sleep(3)  # a duplicate, if any, would show up now

        paid = before | during
        report = check_nothing_lost_or_doubled(db.direct, ids, paid)
        await check_workflows(h, ids, paid)
        print(
            f"\n{N} invoices, {total} reminders due; outage {outage:.0f} s from {sent_at_down} "
            f"sent ({sent_during} during it); {report}; statuses during the outage: "
            f"{statuses}; all sent {recovered:.0f} s after it ended"
        )


@pytest.mark.timeout(150)
async def test_connections_dropped_are_replaced_and_nothing_is_lost(
    dev_env: WorkflowEnvironment, fault_db: FaultDb, tmp_path: Path
) -> None:
    """PostgreSQL stays up but ends every connection of our database (an admin's
    pg_terminate_backend, a failover of a pooler): the next requests succeed at once (the pool
    pre-pings), in-flight activities are retried, nothing is lost or doubled."""
    db = fault_db
    steps = ["s0", "s5", "s10"]
    n = 12
    async with harness(dev_env, db.via_proxy, tmp_path) as h:
        ids = [inv["id"] for inv in await create_invoices(h, n, timedelta(seconds=3), steps)]
        total = n * len(steps)
        paid: dict[int, str] = {}
        statuses: Counter[int] = Counter()
        cuts = 0
        deadline = time.monotonic() + 90
        while outcomes(db.direct) < total and time.monotonic() < deadline:
            with db.admin.connect() as conn:  # the backends of our database, no other
                cuts += len(
                    conn.execute(
                        sa.text(
                            "select pg_terminate_backend(pid) from pg_stat_activity "
                            "where datname = :name and pid <> pg_backend_pid()"
                        ),
                        {"name": db.name},
                    ).all()
                )
            inv_id = ids[len(paid) % n]
            for resp in (
                await h.get("/v1/invoices"),
                await h.get(f"/v1/invoices/{inv_id}"),
                await h.customer(),
            ):
                status = resp.status_code if isinstance(resp, httpx.Response) else 201
                statuses[status] += 1
            if len(paid) < n // 2:
                paid[inv_id] = f"evt_cut_{inv_id}"
                resp = await pay(h, inv_id, paid[inv_id])
                statuses[resp.status_code] += 1
            await asyncio.sleep(1)
        assert set(statuses) <= {200, 201}, statuses
        await asyncio.sleep(3)  # a duplicate, if any, would show up now
        report = check_nothing_lost_or_doubled(db.direct, ids, paid, steps)
        await check_workflows(h, ids, paid)
        print(f"\n{n} invoices, {total} reminders due; {cuts} backends terminated; {report}")
        print(f"API statuses right after the cuts: {dict(statuses)}")


async def test_segment_switch_survives_an_outage(
    dev_env: WorkflowEnvironment, fault_db: FaultDb, tmp_path: Path
) -> None:
    """A payment moved a customer to another segment while PostgreSQL goes away for 30 s: the
    switch of their invoices to the segment's policy waits for it instead of failing for good
    (five attempts one second apart gave up after 15 s, and the invoices kept the old policy)."""
    db = fault_db
    async with harness(dev_env, db.via_proxy, tmp_path) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"])
        new = await h.policy(escalate_after="P60D", steps=[{"key": "d5", "offset": "P5D"}])
        move = SegmentMove(
            customer_id=cust["id"],
            segment="good",
            previous="standard",
            policy_name=new["name"],
            invoice_ids=[inv["id"]],
            event_id=uuid.uuid4().int % 10**9,
        )
        db.proxy.down()
        try:
            handle = await h.client.start_workflow(
                "SegmentSwitchWorkflow", move, id=move.workflow_id, task_queue=h.settings.task_queue
            )
            await asyncio.sleep(OUTAGE_SECONDS)
        finally:
            db.proxy.up()
        try:
            failed = await asyncio.wait_for(handle.result(), timeout=150)
        except WorkflowFailureError as exc:
            pytest.fail(f"the segment switch gave up during a {OUTAGE_SECONDS} s outage: {exc}")
        assert failed == {}
        with Session(db.direct) as s:
            stored = s.get(Invoice, inv["id"])
            assert stored is not None and stored.policy_id == new["id"]


async def test_a_server_that_never_answers_is_a_503_not_a_hang(
    ts_env: WorkflowEnvironment, fault_db: FaultDb, tmp_path: Path
) -> None:
    """PostgreSQL's host gone from the network (the TCP connection opens, then nothing): a
    request waits for the connect timeout and answers 503, instead of holding its thread,
    and a pooled connection, until the operating system gives up minutes later."""
    db = fault_db
    async with harness(ts_env, db.via_proxy, tmp_path, with_worker=False) as h:
        db.via_proxy.dispose()  # no pooled connection: the next request opens one
        db.proxy.silent()
        started = time.monotonic()
        try:
            resp = await asyncio.wait_for(h.get("/v1/invoices/1"), timeout=30)
        except TimeoutError:
            pytest.fail("GET /v1/invoices/1 still waiting for PostgreSQL after 30 s")
        finally:
            db.proxy.down()
            db.proxy.up()
            db.proxy.proxy.silent = False
        assert_unavailable(resp)
        assert time.monotonic() - started < 15


async def requests_during_outage(
    h: Harness, ids: list[int], during: dict[int, str], down_at: float
) -> dict[int, dict[str, int]]:
    """Reads, a write and a payment webhook every 2 s until the outage ends, each answered
    503 with the JSON error body and Retry-After: {status: {request: count}}."""
    statuses: dict[int, Counter[str]] = {}
    await asyncio.sleep(1)
    while time.monotonic() - down_at < OUTAGE_SECONDS:
        calls = {
            "GET /v1/invoices": h.get("/v1/invoices"),
            "GET /v1/invoices/{id}": h.get(f"/v1/invoices/{ids[0]}"),
            "POST /v1/customers": h.post(
                "/v1/customers", {"external_id": f"C-{uuid.uuid4().hex[:8]}", "name": "Down"}
            ),
            "POST /v1/webhooks/payments": pay(h, ids[10], during[ids[10]]),
        }
        for label, call in calls.items():
            try:
                resp = await call
            except Exception:  # noqa: BLE001 - the app's unhandled error: a 500 to a client
                statuses.setdefault(500, Counter())[label] += 1
                continue
            statuses.setdefault(resp.status_code, Counter())[label] += 1
            if resp.status_code == 503:
                assert_unavailable(resp)
        await asyncio.sleep(2)
    return {status: dict(c) for status, c in statuses.items()}


def check_nothing_lost_or_doubled(
    engine: Engine, ids: list[int], paid: dict[int, str], steps: list[str] = STEPS
) -> str:
    with Session(engine) as s:
        rows = s.exec(
            select(OutboxMessage.invoice_id, OutboxMessage.step_key).where(
                # reminder steps only: not the payments' confirmations to the customer
                col(OutboxMessage.step_key).not_like("confirm-%")
            )
        ).all()
        events = s.exec(select(InvoiceEvent.invoice_id, InvoiceEvent.kind, InvoiceEvent.data)).all()
        payments = s.exec(select(Payment.invoice_id, Payment.event_id, Payment.status)).all()
        balances = dict(s.exec(select(Invoice.id, Invoice.balance_minor)).all())
    due = {(i, k) for i in ids for k in steps}
    sent = Counter(rows)
    sent_events = Counter(
        (inv, data["step"]) for inv, kind, data in events if kind == "reminder_sent"
    )
    # A workflow held up by the outage past its next step's instant sends the latest step and
    # records the earlier one as skipped (the product's catch-up rule: no burst of reminders).
    skipped = Counter(
        (inv, data["step"]) for inv, kind, data in events if kind == "reminder_skipped"
    )
    doubled = {k: n for k, n in (sent + skipped).items() if n > 1}
    lost = due - set(sent) - set(skipped)
    assert not lost and not doubled, (sorted(lost), doubled, sorted(skipped))
    assert set(sent) | set(skipped) == due and not set(sent) & set(skipped)
    assert sent_events == sent, (sent_events, sent)
    assert all(k != steps[-1] for _, k in skipped)  # the last step always goes out
    assert sorted((inv, ev) for inv, ev, _ in payments) == sorted(paid.items())
    assert {st for _, _, st in payments} == {"applied"}, payments
    applied = Counter(inv for inv, kind, _ in events if kind == "payment_applied")
    assert applied == dict.fromkeys(paid, 1), applied
    expected = {i: AMOUNT - PART if i in paid else AMOUNT for i in ids}
    assert balances == expected
    return (
        f"sent once {len(sent)}, skipped by catch-up {len(skipped)} {sorted(skipped)}, "
        f"lost {len(lost)}, doubled {len(doubled)}; "
        f"payments {len(payments)} applied once each"
    )


async def check_workflows(h: Harness, ids: list[int], paid: dict[int, str]) -> None:
    """No workflow stuck or failed: each answers a query with the balance the database has."""
    for inv_id in ids:
        handle = h.client.get_workflow_handle(h.settings.workflow_id(inv_id))
        desc = await handle.describe()
        assert desc.status is not None and desc.status.name == "RUNNING", (inv_id, desc.status)
        state = await handle.query("state")
        balance = state["balance_minor"] if isinstance(state, dict) else state.balance_minor
        assert balance == (AMOUNT - PART if inv_id in paid else AMOUNT), (inv_id, state)
