"""Kill everything, repeatedly (issue 16, the fault suite's first item).

N invoices (default 1,000; ``ARFLOW_FAULT_INVOICES``) on the dev server with its file store,
each with two reminders falling due over a few minutes of real time; the worker runs as its
own OS process and sends email through the real SendGrid SDK to a local fake. While the
reminders fall due, a seeded chaos loop SIGKILLs the worker and the dev server several times
(``ARFLOW_FAULT_SEED``; printed) and starts each again (the server on the same file), and
payments come in through the signed webhook, some twice (a provider's redelivery), retried
by the "provider" while the server is down.

Afterwards: every step that fell due was sent once (its outbox row and the fake provider
agree) or recorded as skipped by the catch-up rule (``due_steps``), never both, never
neither; a send the worker died during is ``uncertain`` with a task (at most once by design:
the fake received it at most once); every payment was applied once and each balance is the
amount less its payments; every workflow is closed or running with a next action.
The figures go to stdout, and are appended to the file ``ARFLOW_FAULT_FIGURES`` names, if set.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from arflow.invoices import bulk
from arflow.ports import free_port
from models import Invoice, OutboxMessage, Payment, Task
from models.invoice import InvoiceCreate, InvoiceEvent
from tests.conftest import Harness, harness
from tests.faults.fakes import FakeProvider
from tests.processes import connect, kill, start_dev_server, start_worker, stop
from tests.webhook import signed_payment
from workflows.types import InvoiceState

N = int(os.environ.get("ARFLOW_FAULT_INVOICES", "1000"))
SEED = int(os.environ.get("ARFLOW_FAULT_SEED") or random.SystemRandom().randrange(10**6))
FIGURES = os.environ.get("ARFLOW_FAULT_FIGURES")
KILLS = 3  # of each: the worker, the dev server
SPREAD = float(os.environ.get("ARFLOW_FAULT_SPREAD", "150"))  # seconds the due dates span
# Two steps 90 s apart: far enough that a few seconds of downtime leaves both to be sent (the
# catch-up rule skips a step only when a later one of the same invoice is due as well).
STEPS = {"s0": 0, "s90": 90}
AMOUNT = 120_000
PART = 1_000  # a partial payment: dunning goes on
# Sends go at about 1 a second on the loaded 2-core VM with SQLite (see the report): the
# deadlines grow with the count.
CATCH_UP = 300 + 1.5 * N * len(STEPS)
pytestmark = [
    pytest.mark.fault,
    pytest.mark.devserver,
    pytest.mark.slow,
    pytest.mark.timeout(600 + 2 * CATCH_UP),
]
SENDGRID_ENV = {
    "ARFLOW_SENDGRID_API_KEY": "SG.fault-suite",
    "ARFLOW_EMAIL_FROM": "ar@arflow.example",
}


@dataclass
class Chaos:
    """The processes of the run, what was done to them, and a supervisor that starts the
    worker again when it exits by itself (as the compose file's ``restart: unless-stopped``
    does): a worker started while the server is down gives up connecting and exits."""

    tmp: Path
    port: int
    server: subprocess.Popen[bytes]
    h: Harness | None = None
    worker: subprocess.Popen[bytes] | None = None
    kills: Counter[str] = field(default_factory=Counter)
    worker_exits: int = 0
    log: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    _down: bool = False

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:6.1f}s {text}")

    def start_worker(self) -> None:
        assert self.h is not None
        self.worker = start_worker(self.h, self.tmp / "worker.log")

    def start_server(self) -> None:
        self.server = start_dev_server(
            self.tmp / "temporal.db", self.port, self.tmp / "temporal.log"
        )

    async def kill(self, what: str, rng: random.Random) -> None:
        proc = self.worker if what == "worker" else self.server
        assert proc is not None
        self._down = True
        kill(proc)
        self.kills[what] += 1
        down = rng.uniform(0.5, 4.0)
        self.note(f"kill {what}, down {down:.1f}s")
        await asyncio.sleep(down)
        if what == "worker":
            self.start_worker()
        else:
            self.start_server()
        self._down = False

    async def supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if not self._down and self.worker is not None and self.worker.poll() is not None:
                self.worker_exits += 1
                self.note(f"the worker exited by itself ({self.worker.returncode}): started again")
                self.start_worker()

    def stop_worker(self) -> None:
        if self.worker is not None:
            stop(self.worker)


async def create_invoices(h: Harness, tmp: Path, first_due: datetime) -> list[int]:
    """N invoices through the bulk import, due one after the other over ``SPREAD`` seconds."""
    pol = await h.policy(
        escalate_after="PT1H",
        steps=[
            {"key": k, "offset": f"PT{s}S", "channel": "email", "template": "reminder_overdue"}
            for k, s in STEPS.items()
        ],
    )
    customers = [await h.customer(email=f"ap{i}@c{i}.example.com") for i in range(10)]
    header = ["external_id", "number", "customer_external_id", "currency", "amount_minor"]
    header += ["issued_on", "due_date", "due_at", "policy_name"]
    path = tmp / "invoices.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        for i in range(N):
            due_at = first_due + timedelta(seconds=SPREAD * i / N)
            day = due_at.date().isoformat()
            cust = customers[i % len(customers)]["external_id"]
            out.writerow(
                [f"F-{i}", f"F{i}", cust, "EUR", AMOUNT, day, day, due_at.isoformat(), pol["name"]]
            )
    result = await bulk.import_invoices(
        bulk.read_csv(path, InvoiceCreate), h.engine, h.settings, h.client
    )
    assert result.created == N and result.workflows_started == N, result
    with Session(h.engine) as s:
        return [i for i in s.exec(select(Invoice.id)).all() if i is not None]


@dataclass
class Payments:
    """Webhook payments, each retried like a provider does until arflow answers 2xx."""

    h: Harness
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)  # event id -> invoice, amount
    redelivered: int = 0
    refused: Counter[int] = field(default_factory=Counter)

    async def post(self, invoice_id: int, amount: int, event_id: str | None = None) -> None:
        event_id = event_id or f"evt_{uuid.uuid4().hex}"
        self.sent[event_id] = (invoice_id, amount)
        for _ in range(300):
            try:
                resp = await signed_payment(
                    self.h, event_id=event_id, invoice_id=invoice_id, amount_minor=amount
                )
            except Exception:  # noqa: BLE001 - the API's Temporal call died with the server
                resp = None
            if resp is not None and resp.status_code < 300:
                return
            self.refused[resp.status_code if resp is not None else 0] += 1
            await asyncio.sleep(1)
        raise AssertionError(f"payment {event_id} never accepted")


def _decided(engine: Engine) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
    """(invoice, step) with an outbox row past ``queued``/``sending``, and those skipped."""
    with Session(engine) as s:
        rows = s.exec(
            select(OutboxMessage.invoice_id, OutboxMessage.step_key, OutboxMessage.status)
        )
        done = {(i, k) for i, k, st in rows.all() if st not in ("queued", "sending")}
        events = s.exec(
            select(InvoiceEvent.invoice_id, InvoiceEvent.data).where(
                InvoiceEvent.kind == "reminder_skipped"
            )
        ).all()
    return done, {(i, str(d["step"])) for i, d in events}


async def _poll(what: str, ok: Callable[[], Awaitable[bool] | bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = ok()
        if await got if isinstance(got, Awaitable) else got:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_worker_and_server_repeatedly(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(SEED)
    print(f"\nfault suite: seed {SEED} (ARFLOW_FAULT_SEED={SEED} repeats it), {N} invoices")
    fake = FakeProvider()
    for key, value in (SENDGRID_ENV | {"ARFLOW_SENDGRID_BASE_URL": fake.url}).items():
        monkeypatch.setenv(key, value)  # the worker process inherits them
    port = free_port()
    chaos = Chaos(
        tmp_path, port, start_dev_server(tmp_path / "temporal.db", port, tmp_path / "temporal.log")
    )
    try:
        env = WorkflowEnvironment.from_client(await connect(f"127.0.0.1:{port}"))
        async with harness(
            env,
            sqlite_engine,
            tmp_path,
            with_worker=False,
            sendgrid_api_key=SENDGRID_ENV["ARFLOW_SENDGRID_API_KEY"],
            email_from=SENDGRID_ENV["ARFLOW_EMAIL_FROM"],
            sendgrid_base_url=fake.url,
        ) as h:
            chaos.h = h
            supervisor = asyncio.create_task(chaos.supervise())
            try:
                await _run(h, chaos, fake, rng)
            finally:
                supervisor.cancel()
                print("\n".join(chaos.log))
                chaos.stop_worker()
    finally:  # after the harness: it terminates the workflows on the server
        if chaos.server.poll() is None:
            kill(chaos.server)
        fake.close()


async def _run(h: Harness, chaos: Chaos, fake: FakeProvider, rng: random.Random) -> None:
    started = time.monotonic()
    chaos.start_worker()
    lead = 15 + N * 0.15  # the import takes about 0.12 s an invoice here
    first_due = datetime.now(UTC) + timedelta(seconds=lead)
    ids = await create_invoices(h, chaos.tmp, first_due)
    t_import = time.monotonic() - started
    wait_first = (first_due - datetime.now(UTC)).total_seconds()
    print(f"imported {N} invoices in {t_import:.0f}s; the first is due in {wait_first:.0f}s")

    # The chaos: the kills at random moments while reminders fall due, in a random order.
    t0 = chaos.t0 = time.monotonic()
    window = max(wait_first, 0) + SPREAD + max(STEPS.values())
    moments = sorted(rng.uniform(max(wait_first, 0), window) for _ in range(2 * KILLS))
    kinds = ["worker"] * KILLS + ["server"] * KILLS
    rng.shuffle(kinds)

    async def killer() -> None:
        for at, kind in zip(moments, kinds, strict=True):
            await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
            await chaos.kill(kind, rng)

    # Payments while it happens: partial ones (dunning goes on), a fifth of them delivered
    # twice; and full ones for invoices whose last step is done (their workflows close).
    payments = Payments(h)
    partial = rng.sample(ids, max(1, len(ids) // 10))
    full = rng.sample(sorted(set(ids) - set(partial)), max(1, len(ids) // 50))

    async def payer() -> None:
        for invoice_id in partial:
            await asyncio.sleep(rng.uniform(0, 1.6 * window / len(partial)))
            await payments.post(invoice_id, PART)
            if rng.random() < 0.2:
                event_id = next(e for e, (i, _) in payments.sent.items() if i == invoice_id)
                await payments.post(invoice_id, PART, event_id)
                payments.redelivered += 1
        last = max(STEPS, key=STEPS.__getitem__)
        for invoice_id in full:

            def last_done(i: int = invoice_id) -> bool:
                done, skipped = _decided(h.engine)
                return (i, last) in done | skipped

            await _poll(f"invoice {invoice_id}'s last step", last_done, CATCH_UP)
            await payments.post(invoice_id, AMOUNT)  # in full: its workflow closes

    await asyncio.gather(killer(), payer())
    t_chaos = time.monotonic() - t0

    # Every step of every invoice due by now, decided; every payment applied.
    due = {(i, k) for i in ids for k in STEPS}

    def all_decided() -> bool:
        done, skipped = _decided(h.engine)
        return due <= done | skipped

    def all_applied() -> bool:
        with Session(h.engine) as s:
            return all(p.status == "applied" for p in s.exec(select(Payment)).all())

    timed_out = []  # the figures are taken all the same: what is undecided counts as lost
    for what, ok, seconds in (
        ("every due step decided", all_decided, CATCH_UP),
        ("every payment applied", all_applied, 120.0),
    ):
        try:
            await _poll(what, ok, seconds)
        except AssertionError as exc:
            timed_out.append(str(exc))
    await asyncio.sleep(3)  # a duplicate, if any, would show up now
    figures = await _check(h, chaos, fake, payments, ids, full, due)
    figures["problems"] = timed_out + figures["problems"]
    figures["seconds"] = round(time.monotonic() - started)
    figures["chaos_seconds"] = round(t_chaos)
    line = (
        f"fault-kill seed={SEED} invoices={N} kills worker={chaos.kills['worker']} "
        f"server={chaos.kills['server']} worker_exits={chaos.worker_exits} "
        + " ".join(f"{k}={v}" for k, v in figures.items() if k != "problems")
    )
    print(line)
    if FIGURES:
        with Path(FIGURES).open("a", encoding="utf-8") as f:
            f.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {line}\n")
            for p in figures["problems"]:
                f.write(f"  {p}\n")
    assert not figures["problems"], "\n".join(figures["problems"][:50])
    assert chaos.kills == {"worker": KILLS, "server": KILLS}


async def _check(
    h: Harness,
    chaos: Chaos,
    fake: FakeProvider,
    payments: Payments,
    ids: list[int],
    full: list[int],
    due: set[tuple[int, str]],
) -> dict[str, Any]:
    problems: list[str] = []
    with Session(h.engine) as s:
        every_row = s.exec(select(OutboxMessage)).all()
        events = s.exec(select(InvoiceEvent)).all()
        invoices = list(s.exec(select(Invoice)).all())
        stored = s.exec(select(Payment)).all()
        tasks = s.exec(select(Task).where(Task.kind == "delivery_uncertain")).all()

    # The fake provider's requests, by outbox id.
    received: Counter[int] = Counter()
    for req in fake.requests:
        body = json.loads(req.body)
        received[int(body["custom_args"]["outbox_id"])] += 1
    # The reminders; the payments' confirmations to the customer (confirm-payment-<id>) are
    # checked below for the one thing that matters for them: never received twice.
    rows = [r for r in every_row if not r.step_key.startswith("confirm-")]
    confirmations = [r for r in every_row if r.step_key.startswith("confirm-")]
    by_step = Counter((r.invoice_id, r.step_key) for r in rows)
    problems += [f"invoice {i} step {k}: {n} outbox rows" for (i, k), n in by_step.items() if n > 1]
    sent_events = Counter(
        (e.invoice_id, str(e.data["step"])) for e in events if e.kind == "reminder_sent"
    )
    skipped = Counter(
        (e.invoice_id, str(e.data["step"])) for e in events if e.kind == "reminder_skipped"
    )
    uncertain_tasks = {int(t.data["outbox_id"]) for t in tasks}
    outbox_ids = {r.id for r in every_row}
    for c in confirmations:
        if received[c.id or 0] > 1:
            problems.append(f"confirmation {c.step_key}: received {received[c.id or 0]} times")
    problems += [
        f"outbox row {o}: the provider got a message no row knows ({n}x)"
        for o, n in received.items()
        if o not in outbox_ids
    ]
    sent_once = uncertain_received = uncertain_missing = lost = doubled = 0
    for r in rows:
        assert r.id is not None
        got = received[r.id]
        where = f"invoice {r.invoice_id} step {r.step_key} (outbox {r.id}, {r.status})"
        if got > 1:
            doubled += 1
            problems.append(f"{where}: the provider received it {got} times")
        if r.status in ("sent", "delivered"):
            if got == 1:
                sent_once += 1
            elif got == 0:
                lost += 1
                problems.append(f"{where}: marked sent, the provider never received it")
        elif r.status == "uncertain":  # a kill cut the send off: never repeated, a task
            if got:
                uncertain_received += 1
            else:
                uncertain_missing += 1
            if r.id not in uncertain_tasks:
                problems.append(f"{where}: uncertain without a delivery_uncertain task")
        else:
            problems.append(f"{where}: left {r.status}")
        if sent_events[(r.invoice_id, r.step_key)] != 1:
            problems.append(f"{where}: {sent_events[(r.invoice_id, r.step_key)]} sent events")
    for inv, step in sorted(due):
        has_row, was_skipped = by_step[(inv, step)] > 0, skipped[(inv, step)]
        if has_row and was_skipped:
            problems.append(f"invoice {inv} step {step}: sent and also skipped")
        elif not has_row and was_skipped != 1:
            lost += 1
            problems.append(f"invoice {inv} step {step}: neither sent nor skipped once")

    # Payments: one payment_applied per payment, balances = amount - payments.
    applied = Counter(int(e.data["payment_id"]) for e in events if e.kind == "payment_applied")
    problems += [f"payment {p}: applied {n} times" for p, n in applied.items() if n > 1]
    paid: Counter[int] = Counter()
    for p in stored:
        assert p.id is not None
        if applied[p.id] != 1:
            problems.append(f"payment {p.id} ({p.event_id}): applied {applied[p.id]} times")
        paid[p.invoice_id] += p.amount_minor
    if len(stored) != len(payments.sent):
        problems.append(f"{len(payments.sent)} webhook events, {len(stored)} payments stored")
    for invoice in invoices:
        assert invoice.id is not None
        if invoice.balance_minor != invoice.amount_minor - paid[invoice.id]:
            problems.append(
                f"invoice {invoice.id}: balance {invoice.balance_minor}, "
                f"amount {invoice.amount_minor} - payments {paid[invoice.id]}"
            )

    # No workflow stuck: closed (the paid ones), or running with a next action and no
    # activity stuck retrying.
    sem = asyncio.Semaphore(20)

    async def look(invoice_id: int) -> tuple[bool, str | None]:
        """(closed, what is wrong with it or None)."""
        handle = h.client.get_workflow_handle(h.settings.workflow_id(invoice_id))
        async with sem:
            for attempt in range(5):
                try:
                    desc = await handle.describe()
                    running = desc.raw_description.workflow_execution_info.status == (
                        WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
                    )
                    if not running:
                        wrong = invoice_id not in full
                        return (
                            True,
                            f"invoice {invoice_id}: closed ({desc.status})" if wrong else None,
                        )
                    pending = desc.raw_description.pending_activities
                    state = await handle.query("state", result_type=InvoiceState)
                    break
                except RPCError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(2)
        if pending or state.next_action is None or invoice_id in full:
            return False, (
                f"invoice {invoice_id}: running, status {state.status}, next "
                f"{state.next_action}, {len(pending)} pending activities"
            )
        return False, None

    looked = await asyncio.gather(*(look(i) for i in ids))
    closed = sum(1 for c, _ in looked if c)
    wrong = [w for _, w in looked if w is not None]
    problems += wrong
    stuck = len(wrong)

    return {
        "reminders_due": len(due),
        "sent_once": sent_once,
        "uncertain_received": uncertain_received,
        "uncertain_missing": uncertain_missing,
        "skipped": sum(skipped.values()),
        "lost": lost,
        "doubled": doubled,
        "provider_requests": sum(received.values()),
        "confirmations": len(confirmations),
        "payments": len(stored),
        "redelivered": payments.redelivered,
        "refused_while_down": sum(payments.refused.values()),
        "applied_twice": sum(1 for n in applied.values() if n > 1),
        "workflows_closed": closed,
        "stuck": stuck,
        "problems": problems,
    }
