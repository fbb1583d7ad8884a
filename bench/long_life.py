"""Long lives (issue 19): an invoice with two years of daily events keeps each run of its
workflow under 10,000 history events through continue-as-new.

One run starts a Temporal server, migrates one database, runs the real worker
(``worker.build_worker``) and the real API in-process (``bench/lifecycle.py``'s ``Bench``: the
same dev server, database and API set-up as the lifecycle bench), then through the API:

1. a policy allowing 120 instalments, a customer, and ``--invoices`` invoices (default 1) of
   ``--days`` x 1,000.00 EUR (730,000.00 EUR for two years), due in 30 days;
2. on each invoice a payment plan of weekly instalments (105 for 730 days: each week's
   instalment is that week's daily payments, due on the week's last day), agreed through
   ``POST /v1/invoices/{id}/payment-plan`` (a workflow update);
3. for each of ``--days`` days: one partial payment of 1,000.00 EUR through the signed payment
   webhook (``POST /v1/webhooks/payments``, as a payment provider sends it) and one note
   (``POST /v1/invoices/{id}/notes``), waiting until the payment is applied (the invoice's
   balance in the database) before the next day, as days apart they would be. The last
   payment pays the invoice and its workflow completes.

Time (``--clock``):

- ``real`` (default): the dev server (``temporal server start-dev``, as ``arflow run`` starts
  it; in memory unless ``--db-file-store``) with its default dynamic config, so the
  continue-as-new suggestion comes as a deployment gets it. Days are fired one after another
  at real speed: the payments, their plan effects and the notes are the events; the plan's
  timers (a reminder 3 days before each instalment) never fall due in the minutes the bench
  takes.
- ``skip``: the time-skipping test server. Each day is a day of workflow time
  (``env.sleep(1 day)``), so the plan's reminders go out on their days as in two real years,
  with their timers and activities in the history too.

Runs continue as new at the workflow's own bound (``workflows/options.py``,
``CONTINUE_AS_NEW_AT_EVENTS``, 1,000 events) or when the server suggests it, whichever comes
first. ``--suggest-at N`` sets the dev server's ``limit.historyCount.suggestContinueAsNew``
(default 4,096), e.g. lower than the bound to see the server's suggestion act.

At the end the bench walks every run of each invoice's workflow id (``gateway.workflow_runs``:
visibility and the continue-as-new chain), prints each run's event count, how it ended and
whether the server had suggested continue-as-new by then, the number of runs, the largest run
and the total; and checks the outcome: the workflow's result ``paid`` with balance 0, one
stored payment per day all ``applied``, one ``payment_applied`` event per payment (applied
exactly once), their sum equal to the invoice's amount, one ``payment_received`` signal per
day across the runs, the notes all stored, the plan ``completed`` with every instalment paid.
Exit status 1 if a check fails or a run reaches 10,000 events.

Run from the project root::

    .venv/bin/python -m bench.long_life                     # SQLite file in a temp dir
    .venv/bin/python -m bench.long_life --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.long_life --clock skip        # two years of workflow time
    .venv/bin/python -m bench.long_life --suggest-at 100000 # the workflow's own bound acts
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from bench import lifecycle
from bench.entry import exit_with, write_json
from bench.lifecycle import API_KEYS, WEBHOOK_SECRET, Bench, machine_ticks

DAILY_MINOR = 100_000  # 1,000.00 EUR a day
LIMIT = 10_000  # the target: every run under this many history events
TASK_TIMEOUT_S = 10  # the invoice workflow's workflow task timeout (Temporal's default)


@dataclass
class Options:
    days: int
    invoices: int
    clock: str
    database_url: str | None
    db_file_store: bool
    suggest_at: int | None
    json_path: str | None
    history_dir: str | None = None
    dev_server_args: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.long_life",
        description="Two years of daily payments, notes and plan instalments on one invoice: "
        "the history events of each run of its workflow.",
    )
    p.add_argument("--days", type=int, default=730, help="days of events (default 730)")
    p.add_argument("--invoices", type=int, default=1, help="invoices living them (default 1)")
    p.add_argument(
        "--clock",
        choices=("real", "skip"),
        default="real",
        help="real: the dev server, days fired at real speed (default); skip: the "
        "time-skipping test server, a day of workflow time per day",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="default: a fresh SQLite file in a temp dir; postgresql:// gets a throwaway schema",
    )
    p.add_argument(
        "--db-file-store",
        action="store_true",
        help="--clock real: the dev server on a file store (as arflow run) instead of in memory",
    )
    p.add_argument(
        "--suggest-at",
        type=int,
        default=None,
        metavar="N",
        help="--clock real: the server suggests continue-as-new from N events (its default: 4,096)",
    )
    p.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    p.add_argument(
        "--history-dir",
        default=None,
        metavar="DIR",
        help="write each run's history there (invoice-<id>-run-<n>.json, the format "
        "WorkflowHistory.from_json reads)",
    )
    a = p.parse_args(argv)
    if a.days < 1 or a.invoices < 1:
        p.error("--days and --invoices must be >= 1")
    if a.clock == "skip" and (a.db_file_store or a.suggest_at is not None):
        p.error("--db-file-store and --suggest-at are dev server options (--clock real)")
    extra = []
    if a.suggest_at is not None:
        extra = [
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={a.suggest_at}",
        ]
    return Options(
        a.days,
        a.invoices,
        a.clock,
        a.database_url,
        a.db_file_store,
        a.suggest_at,
        a.json_path,
        a.history_dir,
        extra,
    )


def weekly_plan(start: datetime, days: int) -> list[dict[str, Any]]:
    """One instalment per week of daily payments, due on the week's last day (the first
    from the day of the first payment on)."""
    plan = []
    for week_start in range(0, days, 7):
        week = min(7, days - week_start)
        due = (start + timedelta(days=week_start + week - 1)).date()
        plan.append({"due_date": due.isoformat(), "amount_minor": week * DAILY_MINOR})
    return plan


# -- one run's figures ------------------------------------------------------------------------


@dataclass
class RunFigures:
    run_id: str
    started: datetime
    events: int
    ended: str  # continued_as_new, completed, running, ...
    suggested: bool  # the server suggested continue-as-new at the run's last workflow task
    signals: int
    by_kind: dict[str, int]
    replay_s: float = 0.0  # replaying the whole run, as a worker does after losing its cache


def run_figures(run_id: str, events: Sequence[HistoryEvent]) -> RunFigures:
    kinds: Counter[str] = Counter(
        (e.WhichOneof("attributes") or "?").removesuffix("_event_attributes") for e in events
    )
    last = (events[-1].WhichOneof("attributes") or "").removesuffix("_event_attributes")
    ended = {
        "workflow_execution_continued_as_new": "continued_as_new",
        "workflow_execution_completed": "completed",
        "workflow_execution_failed": "failed",
        "workflow_execution_terminated": "terminated",
        "workflow_execution_timed_out": "timed_out",
    }.get(last, "running")
    started_tasks = [
        e.workflow_task_started_event_attributes
        for e in events
        if e.HasField("workflow_task_started_event_attributes")
    ]
    return RunFigures(
        run_id=run_id,
        started=events[0].event_time.ToDatetime(tzinfo=UTC),
        events=len(events),
        ended=ended,
        suggested=bool(started_tasks and started_tasks[-1].suggest_continue_as_new),
        signals=kinds.get("workflow_execution_signaled", 0),
        by_kind=dict(kinds),
    )


async def replay_seconds(
    client: Client, settings: Any, workflow_id: str, events: Sequence[HistoryEvent]
) -> float:
    """Seconds to replay a run from its first event, with the worker's sandbox and converter:
    what a worker does for the run's next task after it lost the run from its cache (a
    restart, an eviction, a task timed out). Over the workflow task timeout (10 s), a task
    that needs it times out again and again."""
    from activities.worker import workflow_runner
    from workflows.invoice import InvoiceWorkflow

    replayer = Replayer(
        workflows=[InvoiceWorkflow],
        workflow_runner=workflow_runner(settings),
        data_converter=client.data_converter,
        # Given, not computed: the default hashes every loaded module (about 2 s here), once
        # per process, as a worker does at its start, not per replay.
        build_id="long-life-replay",
    )
    t0 = time.perf_counter()
    result = await replayer.replay_workflow(WorkflowHistory(workflow_id, events))
    seconds = time.perf_counter() - t0
    if result.replay_failure is not None:
        raise RuntimeError(f"{workflow_id} does not replay: {result.replay_failure}")
    return seconds


# -- the bench --------------------------------------------------------------------------------


class LongLife(Bench):
    def __init__(self, opts: Options) -> None:
        super().__init__(
            lifecycle.Options(
                n=opts.days,
                concurrency=1,
                warmup=0,
                database_url=opts.database_url,
                db_file_store=opts.db_file_store,
                plain_file_store=False,
                api="asgi",
                poll_interval=0.005,
                rounds=1,
                profile=False,
                json_path=None,
                dev_server_args=opts.dev_server_args,
            )
        )
        self.long = opts
        self.env: WorkflowEnvironment | None = None
        self.sent: dict[int, Counter[str]] = {}  # messages sent, by ``step_kind``
        self.stuck: str | None = None  # a day whose payments were not applied in time

    async def start_temporal(self) -> WorkflowEnvironment:
        if self.long.clock == "real":
            env = await super().start_temporal()
        else:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=str(
                    lifecycle.temporal_cli().parent / "temporal-test-server"
                )
            )
            self.cleanups.append(env.shutdown)
        self.env = env
        return env

    async def now(self) -> datetime:
        assert self.env is not None
        if self.long.clock == "skip":
            return await self.env.get_current_time()
        return datetime.now(UTC)

    async def run(self) -> dict[str, Any]:
        from arflow import gateway
        from worker import ACTIVITY_THREADS, build_worker

        b0 = machine_ticks()
        await asyncio.sleep(1.0)
        b1 = machine_ticks()
        self.busy_before = 100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        load_before = os.getloadavg()
        engine = self.setup_database()
        env = await self.start_temporal()
        client = env.client
        settings = self.settings(env)
        http = await self.start_api(settings, engine, client)
        executor = ThreadPoolExecutor(ACTIVITY_THREADS, thread_name_prefix="activity")
        self.cleanups.append(lambda: executor.shutdown(wait=False))
        async with build_worker(client, settings, engine, executor=executor):
            invoices = await self.set_up(http)
            t0 = time.perf_counter()
            day_seconds = await self.live(http, engine, invoices)
            wall = time.perf_counter() - t0
            results: dict[int, Any] = {}
            for inv in invoices:
                if self.stuck is None:
                    handle = client.get_workflow_handle(inv["workflow_id"])
                    results[inv["id"]] = await asyncio.wait_for(handle.result(), 120)
        load_after = os.getloadavg()
        histories = {
            inv["id"]: await gateway.workflow_runs(client, inv["workflow_id"]) for inv in invoices
        }
        runs = {
            inv["id"]: sorted(
                (run_figures(run_id, events) for run_id, events in histories[inv["id"]].items()),
                key=lambda r: r.started,
            )
            for inv in invoices
        }
        if self.long.history_dir:
            folder = Path(self.long.history_dir)
            folder.mkdir(parents=True, exist_ok=True)
            for inv in invoices:
                for n, r in enumerate(runs[inv["id"]], 1):
                    history = WorkflowHistory(inv["workflow_id"], histories[inv["id"]][r.run_id])
                    (folder / f"invoice-{inv['id']}-run-{n}.json").write_text(history.to_json())
        for inv in invoices:
            for r in runs[inv["id"]]:
                r.replay_s = await replay_seconds(
                    client, settings, inv["workflow_id"], histories[inv["id"]][r.run_id]
                )
        checks = {
            inv["id"]: self.check(engine, inv, results.get(inv["id"], {}), runs[inv["id"]])
            for inv in invoices
        }
        return self.long_report(invoices, runs, checks, wall, day_seconds, load_before, load_after)

    async def set_up(self, http: httpx.AsyncClient) -> list[dict[str, Any]]:
        admin = {"Authorization": f"Bearer {API_KEYS['admin']}"}
        spec = {"Authorization": f"Bearer {API_KEYS['specialist']}"}
        days = self.long.days
        resp = await http.post(
            "/v1/customers",
            json={
                "external_id": f"C-long-{self.run_id}",
                "name": "Long Life GmbH",
                "email": "ap@long.example.com",
                "timezone": "UTC",
                "locale": "en",
            },
            headers=admin,
        )
        customer = _ok(resp, 201, "create customer")
        resp = await http.post(
            "/v1/policies",
            json={
                "name": f"long-{self.run_id}",
                "send_at": None,
                "contact_window": None,
                "max_messages_per_day": 0,
                "consolidate": False,
                "escalate_after": "P60D",
                "steps": [{"key": "late_7", "offset": "P7D", "template": "reminder_overdue"}],
                "max_installments": 120,
            },
            headers=admin,
        )
        policy = _ok(resp, 201, "create policy")
        start = await self.now()
        plan = weekly_plan(start, days)
        invoices = []
        for i in range(self.long.invoices):
            resp = await http.post(
                "/v1/invoices",
                json={
                    "external_id": f"LONG-{self.run_id}-{i}",
                    "number": f"L{self.run_id}-{i}",
                    "customer_id": customer["id"],
                    "amount_minor": days * DAILY_MINOR,
                    "currency": "EUR",
                    "issued_on": start.date().isoformat(),
                    "due_date": (start + timedelta(days=30)).date().isoformat(),
                    "policy_id": policy["id"],
                },
                headers=spec,
            )
            inv = _ok(resp, 201, "create invoice")
            resp = await http.post(
                f"/v1/invoices/{inv['id']}/payment-plan",
                json={"installments": plan, "note": "two years, weekly"},
                headers=spec,
            )
            _ok(resp, 200, "agree plan")
            invoices.append(inv)
        print(
            f"{len(invoices)} invoice(s) of {days * DAILY_MINOR / 100:,.2f} EUR, plans of "
            f"{len(plan)} weekly instalments; {days} days of events, clock {self.long.clock}",
            file=sys.stderr,
        )
        return invoices

    async def live(
        self, http: httpx.AsyncClient, engine: Engine, invoices: list[dict[str, Any]]
    ) -> list[float]:
        """Each day: a payment and a note per invoice, then wait until the payments are
        applied. Returns each day's seconds."""
        from arflow.payments.signatures import sign

        assert self.env is not None
        spec = {"Authorization": f"Bearer {API_KEYS['specialist']}"}
        total = self.long.days * DAILY_MINOR
        seconds: list[float] = []
        for day in range(self.long.days):
            t0 = time.perf_counter()
            if day and self.long.clock == "skip":
                await self.env.sleep(timedelta(days=1))  # the plan's timers fire meanwhile
            paid_at = await self.now()
            for inv in invoices:
                raw = json.dumps(
                    {
                        "event_id": f"evt_long_{self.run_id}_{inv['id']}_{day}",
                        "invoice_id": inv["id"],
                        "amount_minor": DAILY_MINOR,
                        "currency": "EUR",
                        "paid_at": paid_at.isoformat(),
                        "method": "sepa",
                    }
                ).encode()
                resp = await http.post(
                    "/v1/webhooks/payments",
                    content=raw,
                    headers={
                        "Arflow-Signature": sign(WEBHOOK_SECRET, raw),
                        "Content-Type": "application/json",
                    },
                )
                if _ok(resp, 200, "payment webhook").get("status") != "accepted":
                    raise RuntimeError(f"payment webhook: {resp.text}")
                resp = await http.post(
                    f"/v1/invoices/{inv['id']}/notes",
                    json={"text": f"day {day + 1}: 1,000.00 received, customer on plan"},
                    headers=spec,
                )
                _ok(resp, 201, "note")
            left = total - (day + 1) * DAILY_MINOR
            try:
                await asyncio.to_thread(wait_for_balance, engine, [i["id"] for i in invoices], left)
            except TimeoutError as exc:
                self.stuck = f"day {day + 1}: {exc}"
                print(f"  STUCK on {self.stuck}", file=sys.stderr)
                return seconds
            seconds.append(time.perf_counter() - t0)
            if (day + 1) % 73 == 0:
                print(f"  day {day + 1}: {sum(seconds):.1f} s", file=sys.stderr)
        return seconds

    def check(
        self, engine: Engine, inv: dict[str, Any], result: Any, runs: list[RunFigures]
    ) -> list[str]:
        """What went wrong on this invoice; [] when its outcome is as the payments say."""
        from models import Invoice, OutboxMessage, Payment, PaymentPlan
        from models.invoice import InvoiceEvent

        days, amount = self.long.days, self.long.days * DAILY_MINOR
        problems = [self.stuck] if self.stuck else []
        if (result.get("status"), result.get("balance_minor")) != ("paid", 0):
            problems.append(f"workflow ended {result.get('status')} {result.get('balance_minor')}")
        with Session(engine) as s:
            row = s.get(Invoice, inv["id"])
            payments = s.exec(select(Payment).where(Payment.invoice_id == inv["id"])).all()
            events = s.exec(select(InvoiceEvent).where(InvoiceEvent.invoice_id == inv["id"])).all()
            plans = s.exec(select(PaymentPlan).where(PaymentPlan.invoice_id == inv["id"])).all()
            outbox = s.exec(
                select(OutboxMessage).where(OutboxMessage.invoice_id == inv["id"])
            ).all()
        assert row is not None
        if (row.status, row.balance_minor) != ("paid", 0):
            problems.append(f"invoice row {row.status} {row.balance_minor}")
        if len(payments) != days or any(p.status != "applied" for p in payments):
            problems.append(f"{len(payments)} payments stored, not {days} all applied")
        if sum(p.amount_minor for p in payments) != amount:
            problems.append(f"payments sum to {sum(p.amount_minor for p in payments)}")
        applied = [e.data.get("payment_id") for e in events if e.kind == "payment_applied"]
        if len(applied) != days or len(set(applied)) != days:
            problems.append(f"{len(applied)} payment_applied events, {len(set(applied))} distinct")
        if set(applied) != {p.id for p in payments}:
            problems.append("applied events and stored payments differ")
        if amount - sum(p.amount_minor for p in payments) != result.get("balance_minor"):
            problems.append("the workflow's balance is not the amount less the stored payments")
        self.sent[inv["id"]] = Counter(step_kind(m.step_key) for m in outbox)
        notes = sum(1 for e in events if e.kind == "note")
        if notes != days:
            problems.append(f"{notes} notes, not {days}")
        if len(plans) != 1 or plans[0].status != "completed":
            problems.append(f"plans: {[p.status for p in plans]}")
        elif any(i["state"] != "paid" for i in plans[0].installments):
            problems.append("an instalment is not paid")
        signals = sum(r.signals for r in runs)
        if signals != days:
            problems.append(f"{signals} payment signals across the runs, not {days}")
        if any(r.events >= LIMIT for r in runs):
            problems.append(f"a run reached {LIMIT} events")
        if any(r.ended not in ("continued_as_new", "completed") for r in runs):
            problems.append(f"runs ended {[r.ended for r in runs]}")
        return problems

    def long_report(
        self,
        invoices: list[dict[str, Any]],
        runs: dict[int, list[RunFigures]],
        checks: dict[int, list[str]],
        wall: float,
        day_seconds: list[float],
        load_before: tuple[float, float, float],
        load_after: tuple[float, float, float],
    ) -> dict[str, Any]:
        every = [r for rs in runs.values() for r in rs]
        return {
            "config": {
                "days": self.long.days,
                "invoices": self.long.invoices,
                "clock": self.long.clock,
                "database": self.db_label,
                "temporal": (
                    "time-skipping test server"
                    if self.long.clock == "skip"
                    else "dev server, " + ("file store" if self.long.db_file_store else "in memory")
                ),
                "suggest_continue_as_new_at": self.long.suggest_at or "server default",
                "cpus": os.cpu_count(),
                "machine_busy_pct_before": self.busy_before,
                "load_before": load_before,
                "load_after": load_after,
                "uptime": _uptime(),
            },
            "wall_s": wall,
            "day_ms": {
                "mean": 1000 * wall / max(1, len(day_seconds)),
                "p50": 1000 * lifecycle.pct(day_seconds, 0.5),
                "p99": 1000 * lifecycle.pct(day_seconds, 0.99),
                "max": 1000 * max(day_seconds, default=0.0),
            },
            "invoices": [
                {
                    "invoice_id": inv["id"],
                    "workflow_id": inv["workflow_id"],
                    "runs": [
                        {
                            "run_id": r.run_id,
                            "events": r.events,
                            "ended": r.ended,
                            "server_suggested": r.suggested,
                            "signals": r.signals,
                            "replay_s": r.replay_s,
                            "by_kind": r.by_kind,
                        }
                        for r in runs[inv["id"]]
                    ],
                    "messages_sent": dict(self.sent.get(inv["id"], {})),
                    "problems": checks[inv["id"]],
                }
                for inv in invoices
            ],
            "runs": len(every),
            "largest_run_events": max(r.events for r in every),
            "total_events": sum(r.events for r in every),
            "largest_replay_s": max(r.replay_s for r in every),
            "ok": not any(checks.values()),
        }


def step_kind(key: str) -> str:
    """A message's step key without its ids: ``confirm-payment-17`` -> ``confirm-payment``,
    ``plan1-12-before`` -> ``plan-before``."""
    return "-".join(p.rstrip("0123456789") for p in key.split("-") if p.rstrip("0123456789"))


def wait_for_balance(engine: Engine, ids: list[int], left: int, timeout: float = 60) -> None:
    """Until every invoice of ``ids`` shows the balance ``left`` (the day's payments applied)."""
    from models import Invoice

    deadline = time.monotonic() + timeout
    while True:
        with Session(engine) as s:
            rows = s.exec(select(Invoice.balance_minor).where(Invoice.id.in_(ids))).all()  # type: ignore[union-attr]
        if len(rows) == len(ids) and all(b == left for b in rows):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"balances {rows}, expected {left}, after {timeout} s")
        time.sleep(0.005)


def _ok(resp: httpx.Response, status: int, what: str) -> dict[str, Any]:
    if resp.status_code != status:
        raise RuntimeError(f"{what}: {resp.status_code} {resp.text}")
    body: dict[str, Any] = resp.json()
    return body


def _uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def print_report(r: dict[str, Any]) -> None:
    c = r["config"]
    print()
    print(
        f"arflow long life: {c['invoices']} invoice(s), {c['days']} days of a payment, a note "
        f"and a weekly plan; db={c['database']}, {c['temporal']}, continue-as-new suggested at "
        f"{c['suggest_continue_as_new_at']}; {c['cpus']} CPUs, "
        f"{c['machine_busy_pct_before']:.0f}% busy before, load {c['load_before'][0]:.2f} -> "
        f"{c['load_after'][0]:.2f}"
    )
    for inv in r["invoices"]:
        print(f"\n{inv['workflow_id']}: {len(inv['runs'])} runs")
        print(
            f"  {'run':>4} {'events':>7} {'signals':>8} {'server suggested':>17} "
            f"{'replay s':>9}  ended"
        )
        for n, run in enumerate(inv["runs"], 1):
            print(
                f"  {n:4} {run['events']:7} {run['signals']:8} "
                f"{'yes' if run['server_suggested'] else 'no':>17} {run['replay_s']:9.2f}  "
                f"{run['ended']}"
            )
        print(f"  messages sent (by step kind): {inv['messages_sent'] or 'none'}")
        for problem in inv["problems"]:
            print(f"  PROBLEM: {problem}")
    d = r["day_ms"]
    print()
    print(
        f"runs {r['runs']}, largest run {r['largest_run_events']} events (limit {LIMIT}), "
        f"total {r['total_events']} events, slowest replay {r['largest_replay_s']:.2f} s; "
        f"wall {r['wall_s']:.1f} s, a day mean {d['mean']:.1f} ms, p50 {d['p50']:.1f}, "
        f"p99 {d['p99']:.1f}, max {d['max']:.1f}"
    )
    if r["largest_replay_s"] > TASK_TIMEOUT_S:
        print(
            f"WARNING: a run took {r['largest_replay_s']:.1f} s to replay, over the "
            f"{TASK_TIMEOUT_S} s workflow task timeout: a worker that lost it from its cache "
            "could not finish a task of it"
        )
    print("checks: " + ("all passed" if r["ok"] else "FAILED"))
    print(c["uptime"])


async def amain(opts: Options) -> dict[str, Any]:
    return await lifecycle.run_cleaning_up(LongLife(opts))


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_args(argv)

    def body() -> int:
        report = asyncio.run(amain(opts))
        print_report(report)
        write_json(opts.json_path, report)
        return 0 if report["ok"] else 1

    exit_with(body)


if __name__ == "__main__":
    from bench.long_life import main as _main

    _main()
