"""Webhook storms (issue 16, fault suite): one payment event delivered 50 times at once, a
refund that overtakes its payment, and 1,000 distinct payments in a burst while the API is
read. Each payment must be applied exactly once, every balance must add up, and no request
may be answered with a 5xx.

The in-process ASGI client runs the requests concurrently on one event loop; the duplicate
storm is also sent over real TCP connections to a uvicorn server serving the same app, so
requests interleave as they do in production (several connections, one server process).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from arflow.ports import free_port
from models import Invoice, InvoiceEvent, Payment
from tests.conftest import Harness, harness
from tests.test_api import eventually
from tests.test_workflow_decisions import invoice as decision_invoice
from tests.test_workflow_decisions import utc
from tests.webhook import signed
from workflows import payments
from workflows.types import PAID, PaymentSignal


async def post_all(http: httpx.AsyncClient, raw: bytes, headers: dict[str, str], n: int) -> list:
    return list(
        await asyncio.gather(
            *(http.post("/v1/webhooks/payments", content=raw, headers=headers) for _ in range(n))
        )
    )


@asynccontextmanager
async def real_server(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """The harness's app (same settings, database and Temporal client) behind uvicorn on a
    free port, and a client that may open up to 16 connections to it."""
    app = create_app(h.settings, engine=h.engine, temporal=h.client)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    limits = httpx.Limits(max_connections=16)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
        ) as http:
            yield http
    finally:
        server.should_exit = True
        await task


def payments_of(engine: Engine, invoice_id: int) -> list[Payment]:
    with Session(engine) as s:
        return list(s.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all())


def kinds(h: Harness, invoice_id: int, kind: str) -> list[InvoiceEvent]:
    return [e for e in h.events(invoice_id) if e.kind == kind]


@pytest.fixture
async def hs(
    dev_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The dev server (a real clock, many workflows at once), SQLite and PostgreSQL."""
    async with harness(dev_env, engine, tmp_path) as h:
        yield h


# -- 1. the same event 50 times at once -------------------------------------------------------


async def check_applied_once(h: Harness, inv: dict[str, Any], responses: list) -> None:
    codes = sorted({r.status_code for r in responses})
    assert codes == [200], [r.text for r in responses if r.status_code != 200][:3]
    statuses = [r.json()["status"] for r in responses]
    assert statuses.count("accepted") == 1, statuses
    assert statuses.count("duplicate") == len(responses) - 1, statuses
    assert len({r.json()["payment_id"] for r in responses}) == 1
    assert await eventually(lambda: kinds(h, inv["id"], "payment_applied"), timeout=30)
    await asyncio.sleep(0.5)  # a second application would show by now
    assert len(payments_of(h.engine, inv["id"])) == 1
    assert len(kinds(h, inv["id"], "payment_applied")) == 1
    stored = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert (stored["status"], stored["balance_minor"]) == ("open", 80_000)


async def test_the_same_event_50_times_at_once_is_applied_once(hs: Harness) -> None:
    cust = await hs.customer()
    inv = await hs.invoice(cust["id"], amount_minor=120_000)
    raw, headers = signed(invoice_id=inv["id"], amount_minor=40_000)
    await check_applied_once(hs, inv, await post_all(hs.http, raw, headers, 50))


async def test_the_same_event_50_times_over_real_connections_is_applied_once(
    hs: Harness,
) -> None:
    cust = await hs.customer()
    inv = await hs.invoice(cust["id"], amount_minor=120_000)
    raw, headers = signed(invoice_id=inv["id"], amount_minor=40_000)
    async with real_server(hs) as http:
        responses = await post_all(http, raw, headers, 50)
    await check_applied_once(hs, inv, responses)


# -- 2. a refund that overtakes its payment ---------------------------------------------------


async def end_state(h: Harness, inv: dict[str, Any]) -> tuple[str, int]:
    """The invoice once both events are applied (each exactly once)."""
    assert await eventually(
        lambda: kinds(h, inv["id"], "payment_applied") and kinds(h, inv["id"], "payment_reversed"),
        timeout=30,
    ), [e.kind for e in h.events(inv["id"])]
    await asyncio.sleep(0.5)
    assert len(kinds(h, inv["id"], "payment_applied")) == 1
    assert len(kinds(h, inv["id"], "payment_reversed")) == 1
    assert sorted(p.amount_minor for p in payments_of(h.engine, inv["id"])) == [-50_000, 50_000]
    stored = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    return stored["status"], stored["balance_minor"]


@pytest.mark.parametrize("amount", [120_000, 50_000], ids=["partial", "full"])
async def test_a_refund_applied_before_its_payment_cancels_it_out(hs: Harness, amount: int) -> None:
    """The refund reaches the workflow first; the payment it refunds comes after. The end
    state is the same as in order: the balance is the invoice amount again."""
    cust = await hs.customer()
    inv = await hs.invoice(cust["id"], amount_minor=amount)
    refund = await hs.http.post(
        "/v1/webhooks/payments",
        content=(r := signed(invoice_id=inv["id"], amount_minor=50_000, type="refund"))[0],
        headers=r[1],
    )
    assert refund.status_code == 200, refund.text
    assert await eventually(lambda: kinds(hs, inv["id"], "payment_reversed"), timeout=30)
    raw, headers = signed(invoice_id=inv["id"], amount_minor=50_000)
    payment = await hs.http.post("/v1/webhooks/payments", content=raw, headers=headers)
    assert payment.status_code == 200, payment.text
    assert await end_state(hs, inv) == ("open", amount)


@pytest.mark.parametrize("amount", [120_000, 50_000], ids=["partial", "full"])
async def test_a_refund_racing_its_payment_ends_as_in_order(hs: Harness, amount: int) -> None:
    """Refund and payment (and copies of each) at the same time, the refund sent first."""
    cust = await hs.customer()
    inv = await hs.invoice(cust["id"], amount_minor=amount)
    refund = signed(invoice_id=inv["id"], amount_minor=50_000, type="refund")
    payment = signed(invoice_id=inv["id"], amount_minor=50_000)
    sends = [refund, payment] * 5
    responses = await asyncio.gather(
        *(hs.http.post("/v1/webhooks/payments", content=raw, headers=hd) for raw, hd in sends)
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert await end_state(hs, inv) == ("open", amount)


def test_a_reversal_beyond_what_was_paid_is_parked_until_its_payment() -> None:
    """The decision itself: the refund of 500 on an unpaid invoice of 1,000 cannot raise
    the balance; it waits, and the payment of 500 it refunds is cancelled out by it."""
    inp = decision_invoice()
    back = payments.apply(inp, PaymentSignal(1, 500, "EUR", kind="refund"), utc(2026, 3, 1))
    assert (back.balance_after, back.parked_minor, inp.parked_reversal_minor) == (1000, 500, 500)
    paid = payments.apply(inp, PaymentSignal(2, 700, "EUR"), utc(2026, 3, 2))
    assert (paid.balance_after, paid.offset_minor, paid.overpaid_minor) == (800, 500, 0)
    assert inp.parked_reversal_minor == 0
    again = payments.apply(inp, PaymentSignal(3, 800, "EUR"), utc(2026, 3, 3))
    assert (again.balance_after, again.status_after, again.offset_minor) == (0, PAID, 0)


# -- 3. 1,000 distinct payments in a burst, reads meanwhile -----------------------------------

INVOICES = 200
PER_INVOICE = 5
CONCURRENCY = 32


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@pytest.mark.fault
@pytest.mark.timeout(900)  # 1,000 payments took over 150 s in CI's run (2 shared cores)
async def test_a_burst_of_1000_payments_is_applied_once_each_while_reads_go_on(
    hs: Harness, request: pytest.FixtureRequest
) -> None:
    database = hs.engine.dialect.name
    cust = await hs.customer()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def new_invoice(i: int) -> dict[str, Any]:
        async with gate:
            return await hs.invoice(cust["id"], amount_minor=100_000)

    invoices = await asyncio.gather(*(new_invoice(i) for i in range(INVOICES)))
    # Every 4th invoice is paid in full by its five payments; the others get half of it.
    plan: dict[int, list[int]] = {
        inv["id"]: [20_000 if n % 4 == 0 else 10_000] * PER_INVOICE
        for n, inv in enumerate(invoices)
    }
    sends = [signed(invoice_id=i, amount_minor=a) for i, amounts in plan.items() for a in amounts]
    sends = sends[0::2] + sends[1::2]  # not invoice by invoice

    reads: list[float] = []
    storming = True

    async def reader() -> None:
        ids = list(plan)
        n = 0
        while storming:
            n += 1
            start = time.perf_counter()
            if n % 2:
                resp = await hs.get("/v1/invoices", limit=50)
            else:
                resp = await hs.get(f"/v1/invoices/{ids[n % len(ids)]}")
            reads.append(time.perf_counter() - start)
            assert resp.status_code == 200, resp.text
            # A user's pace: back to back, the reads starved the worker sharing this loop.
            await asyncio.sleep(0.05)

    async def send(raw: bytes, headers: dict[str, str]) -> httpx.Response:
        async with gate:
            return await hs.http.post("/v1/webhooks/payments", content=raw, headers=headers)

    reading = asyncio.create_task(reader())
    started = time.perf_counter()
    responses = await asyncio.gather(*(send(raw, hd) for raw, hd in sends))
    posted = time.perf_counter() - started

    def applied() -> int:
        with Session(hs.engine) as s:
            return len(s.exec(select(Payment.id).where(Payment.status == "applied")).all())

    await eventually(lambda: applied() == len(sends), timeout=600)
    storm = time.perf_counter() - started
    storming = False
    await reading
    # The figures first: the lead reports them whatever the checks below find.
    p50, p99 = percentile(reads, 50), percentile(reads, 99)
    line = (
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {database}: "
        f"{len(sends)} payments over {INVOICES} invoices, concurrency {CONCURRENCY}; "
        f"posted in {posted:.1f} s, {applied()} applied after {storm:.1f} s; "
        f"{len(reads)} reads p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms "
        f"max {max(reads) * 1000:.0f} ms mean {statistics.mean(reads) * 1000:.0f} ms; "
        f"p99 < 1 s {'met' if p99 < 1 else 'NOT met'} "
        f"(in-process ASGI client, one event loop, Temporal dev server, 2 shared cores)"
    )
    print(line)  # make fault-suite runs with -s: the figures are in CI's log

    bad = [r.text for r in responses if r.status_code != 200]
    assert not bad, bad[:3]
    assert {r.json()["status"] for r in responses} == {"accepted"}
    assert applied() == len(sends)
    with Session(hs.engine) as s:
        events = s.exec(select(InvoiceEvent).where(InvoiceEvent.kind == "payment_applied")).all()
        stored = {i.id: i for i in s.exec(select(Invoice)).all()}
    per_payment = [e.data["payment_id"] for e in events]
    assert len(per_payment) == len(set(per_payment)) == len(sends)
    for invoice_id, amounts in plan.items():
        inv = stored[invoice_id]
        assert inv.balance_minor == 100_000 - sum(amounts), invoice_id
        assert inv.status == ("paid" if sum(amounts) == 100_000 else "open"), invoice_id
    # A paid invoice's workflow completes once it has recorded the payment (and its last
    # interest posting): every one of them, a little after the storm.
    paid = [i for i, a in plan.items() if sum(a) == 100_000]

    async def still_running() -> list[int]:
        running = []
        for invoice_id in paid:
            handle = hs.client.get_workflow_handle(hs.settings.workflow_id(invoice_id))
            if (await handle.describe()).status != WorkflowExecutionStatus.COMPLETED:
                running.append(invoice_id)
        return running

    deadline = time.monotonic() + 120
    while (running := await still_running()) and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert not running, running
