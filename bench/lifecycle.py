"""Lifecycle benchmark: the bare Temporal engine against the full arflow invoice lifecycle.

One run, one Temporal dev server, one database, the same concurrency for both measurements:

* **bare**: ``BareInvoice`` (below) waits up to 30 days for a ``pay`` signal. One lifecycle is
  start, signal, await the result.
* **full**: ``POST /v1/invoices`` through the real FastAPI app (policy with one ``PT0S`` step
  and ``due_at`` a second ago, so the first reminder is due at once) -> wait until the reminder
  is in the outbox table -> signed ``POST /v1/webhooks/payments`` for the full amount -> await
  the invoice workflow's result (status ``paid``).

Run from the project root::

    .venv/bin/python -m bench.lifecycle --n 200
    .venv/bin/python -m bench.lifecycle --n 200 --database-url postgresql://postgres@127.0.0.1:5432/test

See bench/README.md for what is measured and how.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

from arflow.policies import service as policies

with workflow.unsafe.imports_passed_through():
    # With --bare-sandbox reimport the sandbox re-imports this module for every BareInvoice
    # run: it must not re-import FastAPI/SQLAlchemy too.
    import argparse
    import asyncio
    import json
    import os
    import shutil
    import socket
    import statistics
    import subprocess
    import sys
    import tempfile
    import threading
    import time
    import traceback
    import uuid
    from collections import Counter, defaultdict
    from collections.abc import Awaitable, Callable
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import dataclass, field
    from datetime import UTC, date, datetime
    from pathlib import Path
    from typing import Any

    import httpx
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlmodel import Session
    from temporalio.client import Client
    from temporalio.service import RPCError
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from bench.entry import exit_with, write_json


# -- the baseline workflow -------------------------------------------------------------------


@workflow.defn(name="BareInvoice")
class BareInvoice:
    """The least an invoice workflow can be: wait for a payment (or 30 days), then return."""

    def __init__(self) -> None:
        self._paid = False

    @workflow.run
    async def run(self, invoice_no: int) -> str:
        try:
            await workflow.wait_condition(lambda: self._paid, timeout=timedelta(days=30))
        except TimeoutError:
            return "expired"
        return "paid"

    @workflow.signal(name="pay")
    def pay(self, amount_minor: int) -> None:
        self._paid = True


# -- configuration ---------------------------------------------------------------------------

# With --bare-sandbox reimport, module-level code also runs inside the workflow sandbox: keep
# it free of file-system and OS calls (the sandbox forbids them); see root() and clk_tck().
API_KEYS = {"admin": "bench-admin", "specialist": "bench-specialist", "viewer": "bench-viewer"}
WEBHOOK_SECRET = "bench-webhook-secret"
AMOUNT_MINOR = 120_000


@dataclass
class Options:
    n: int
    concurrency: int
    warmup: int
    database_url: str | None
    db_file_store: bool
    plain_file_store: bool
    api: str
    poll_interval: float
    rounds: int
    profile: bool
    json_path: str | None
    cprofile: str | None = None
    bare_sandbox: str = "passthrough"
    dev_server_args: list[str] = field(default_factory=list)
    charges: bool = False
    customers: int = 1
    workers: int = 0
    apis: int = 1

    @property
    def processes(self) -> bool:
        """The full lifecycle's worker runs as worker.py processes (--workers N)."""
        return self.workers > 0

    @property
    def scaled(self) -> bool:
        """Each round also measures N workers + M APIs against 1 + 1."""
        return self.workers > 1 or self.apis > 1


# --charges: a fee posted with the reminder, and interest (nothing accrues within the day).
BENCH_CHARGES = {"charges": {"stage_fees_minor": {"due": 500}, "interest_rate_pct": "10"}}


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.lifecycle",
        description="Lifecycles/s: a bare Temporal workflow vs the full arflow invoice lifecycle.",
    )
    p.add_argument("--n", type=int, default=200, help="lifecycles measured per kind (default 200)")
    p.add_argument("--concurrency", type=int, default=16, help="lifecycles in flight (default 16)")
    p.add_argument(
        "--warmup", type=int, default=20, help="unmeasured lifecycles first (default 20)"
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="default: a fresh SQLite file in a temp dir; postgresql:// gets a throwaway schema",
    )
    p.add_argument(
        "--db-file-store",
        action="store_true",
        help="start the dev server with --db-filename (file store) instead of in memory",
    )
    p.add_argument(
        "--plain-file-store",
        action="store_true",
        help="with --db-file-store: without arflow run's SQLite pragmas (WAL, synchronous=normal)",
    )
    p.add_argument(
        "--api",
        choices=("asgi", "uvicorn"),
        default=None,
        help="asgi: the app in-process via httpx.ASGITransport (default); "
        "uvicorn: the app in a uvicorn subprocess over real HTTP (implied by --workers "
        "and --apis)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run the full lifecycle's worker as `worker.py` processes on one task queue, each "
        "with its own ARFLOW_WORKER_IDENTITY: each round measures 1 worker + 1 API process, "
        "then N workers + the --apis API processes, and checks duplicates and the split "
        "(default 0: the worker in this process)",
    )
    p.add_argument(
        "--apis",
        type=int,
        default=1,
        metavar="M",
        help="uvicorn API processes on ports of their own; with M > 1 each lifecycle creates "
        "its invoice through one and sends the payment webhook through the next, round-robin",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="seconds between outbox polls (one batched query for all waiters; default 0.01)",
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat bare+full this many times")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also count SQL statements per lifecycle by thread, event-loop lag and CPU by thread",
    )
    p.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    p.add_argument(
        "--charges",
        action="store_true",
        help="the full lifecycle's policy charges a fee with its reminder and interest (one "
        "more activity and charge row per lifecycle)",
    )
    p.add_argument(
        "--customers",
        type=int,
        default=1,
        help="spread the full lifecycles over this many customers, round robin (default 1: "
        "every payment re-evaluates one customer holding all the run's invoices, the worst "
        "case; a real book has a few open invoices per customer)",
    )
    p.add_argument(
        "--dev-server-arg",
        action="append",
        metavar="ARG",
        help="extra argument for `temporal server start-dev` (repeatable), e.g. "
        "--dev-server-arg=--dynamic-config-value "
        "--dev-server-arg=system.enableActivityEagerExecution=true",
    )
    p.add_argument(
        "--bare-sandbox",
        choices=("passthrough", "reimport"),
        default="passthrough",
        help="passthrough (default): the sandbox does not re-import this big module for each "
        "BareInvoice run; reimport: it does (an artifact; see README)",
    )
    p.add_argument(
        "--cprofile",
        default=None,
        metavar="PREFIX",
        help="cProfile the event-loop thread during each measured phase; "
        "writes PREFIX.<kind>.<round>.prof (inspect with python -m pstats)",
    )
    a = p.parse_args(argv)
    if a.n < 1 or a.concurrency < 1 or a.warmup < 0 or a.rounds < 1 or a.customers < 1:
        p.error("--n, --concurrency, --rounds and --customers must be >= 1, --warmup >= 0")
    if a.workers < 0 or a.apis < 1:
        p.error("--workers must be >= 0 and --apis >= 1")
    if a.apis > 1 and a.workers == 0:
        p.error("--apis M > 1 needs --workers (1 or more worker processes)")
    if a.workers and a.api == "asgi":
        p.error("--workers runs the API in uvicorn processes: drop --api asgi")
    return Options(
        n=a.n,
        concurrency=a.concurrency,
        warmup=a.warmup,
        database_url=a.database_url,
        db_file_store=a.db_file_store,
        plain_file_store=a.plain_file_store,
        api=a.api or ("uvicorn" if a.workers else "asgi"),
        poll_interval=a.poll_interval,
        rounds=a.rounds,
        profile=a.profile,
        json_path=a.json_path,
        cprofile=a.cprofile,
        bare_sandbox=a.bare_sandbox,
        dev_server_args=a.dev_server_arg or [],
        charges=a.charges,
        customers=a.customers,
        workers=a.workers,
        apis=a.apis,
    )


# -- measuring helpers -----------------------------------------------------------------------


def root() -> Path:
    return Path(__file__).resolve().parent.parent


def temporal_cli() -> Path:
    return Path(sys.executable).parent / "temporal"


def clk_tck() -> int:
    return os.sysconf("SC_CLK_TCK")


def _proc_ticks(stat_path: str) -> int | None:
    try:
        with open(stat_path) as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def _children(pid: int) -> dict[int, str]:
    """Direct child processes of ``pid``: {pid: comm}."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found[int(entry)] = comm
    return found


def _thread_category(name: str | None, comm: str) -> str:
    if name is None:
        return f"native thread {comm!r} (SDK core)"
    if name == "MainThread":
        return "event loop (MainThread)"
    if name.startswith("temporal_workflow_"):
        return "workflow tasks (sandbox)"
    if name.startswith("activity"):
        return "activities"
    if name.startswith("AnyIO worker"):
        return "API threadpool (anyio)"
    if name.startswith("bench-poll"):
        return "bench outbox poller"
    return "other Python threads"


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds per live thread of this process: {tid: (category, seconds)}.

    Python threads are read with their own CPU clock (nanosecond precision); native threads
    (the SDK core's Rust runtime) from /proc ticks.
    """
    out: dict[int, tuple[str, float]] = {}
    for t in threading.enumerate():
        if t.native_id is None or t.ident is None:
            continue
        try:
            secs = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, ProcessLookupError):
            continue
        out[t.native_id] = (_thread_category(t.name, ""), secs)
    for entry in os.listdir("/proc/self/task"):
        tid = int(entry)
        if tid in out:
            continue
        ticks = _proc_ticks(f"/proc/self/task/{entry}/stat")
        if ticks is None:
            continue
        try:
            comm = Path(f"/proc/self/task/{entry}/comm").read_text().strip()
        except OSError:
            comm = "?"
        out[tid] = (_thread_category(None, comm), ticks / clk_tck())
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class CpuSnapshot:
    wall: float
    machine: tuple[int, int]
    process: float
    children: dict[int, tuple[str, int]]
    threads: dict[int, tuple[str, float]]


def cpu_snapshot(with_threads: bool, labels: dict[int, str] | None = None) -> CpuSnapshot:
    """CPU so far; a child process in ``labels`` is named by its label instead of its comm
    (the worker and API processes are all "python")."""
    labels = labels or {}
    kids = {
        pid: (labels.get(pid, comm), _proc_ticks(f"/proc/{pid}/stat") or 0)
        for pid, comm in _children(os.getpid()).items()
    }
    return CpuSnapshot(
        wall=time.perf_counter(),
        machine=machine_ticks(),
        process=time.process_time(),
        children=kids,
        threads=thread_cpu() if with_threads else {},
    )


def cpu_delta(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, Any]:
    kids: dict[str, float] = defaultdict(float)
    for pid, (comm, ticks) in b.children.items():
        before = a.children.get(pid, (comm, 0))[1]
        kids[comm] += (ticks - before) / clk_tck()
    threads: dict[str, float] = defaultdict(float)
    for tid, (cat, secs) in b.threads.items():
        since = a.threads.get(tid, (cat, 0.0))[1]
        threads[cat] += secs - since
    if b.threads:
        rest = (b.process - a.process) - sum(threads.values())
        threads["unattributed (threads that ended, rounding)"] = max(0.0, rest)
    busy = (b.machine[0] - a.machine[0]) / clk_tck()
    total = (b.machine[1] - a.machine[1]) / clk_tck()
    return {
        "wall_s": b.wall - a.wall,
        "machine_busy_cpu_s": busy,
        "machine_busy_pct": 100 * busy / total if total else 0.0,
        "bench_process_cpu_s": b.process - a.process,
        "children_cpu_s": dict(kids),
        "threads_cpu_s": dict(threads),
    }


class SqlCounter:
    """Counts statements, transactions and time in SQL on an engine, by thread category."""

    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.transactions: Counter[str] = Counter()
        self.checkouts: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.by_sql: Counter[tuple[str, str]] = Counter()
        self._local = threading.local()
        self.enabled = False

    @staticmethod
    def _cat() -> str:
        if activity.in_activity():  # the statements of each activity apart
            return f"activity {activity.info().activity_type}"
        return _thread_category(threading.current_thread().name, "")

    def attach(self, engine: Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            self._local.t0 = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if not self.enabled:
                return
            cat = self._cat()
            self.statements[cat] += 1
            self.seconds[cat] += time.perf_counter() - getattr(
                self._local, "t0", time.perf_counter()
            )
            words = statement.upper().split()
            verb = words[0] if words else "?"
            kw = {"INSERT": "INTO", "UPDATE": "UPDATE"}.get(verb, "FROM")
            table = "?"
            if kw in words and words.index(kw) + 1 < len(words):
                table = words[words.index(kw) + 1].strip('"(').lower()
            self.by_sql[(cat, f"{verb} {table}")] += 1

        @event.listens_for(engine, "checkout")
        def _checkout(*args: Any) -> None:
            if self.enabled:
                self.checkouts[self._cat()] += 1

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            if self.enabled:
                self.transactions[self._cat()] += 1

        @event.listens_for(engine, "rollback")
        def _rollback(conn: Any) -> None:
            if self.enabled:
                self.transactions[self._cat() + " (rollback)"] += 1

    def reset(self) -> None:
        self.statements.clear()
        self.transactions.clear()
        self.checkouts.clear()
        self.seconds.clear()
        self.by_sql.clear()


class LoopLag:
    """How late the event loop wakes a 5 ms sleeper: time the loop was blocked or saturated."""

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.tick)
            self.samples.append(max(0.0, time.perf_counter() - t0 - self.tick))

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        s = sorted(self.samples) or [0.0]
        return {
            "samples": len(self.samples),
            "mean_ms": 1000 * statistics.fmean(s),
            "p95_ms": 1000 * s[int(0.95 * (len(s) - 1))],
            "max_ms": 1000 * s[-1],
            "total_s": sum(s),
        }


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "mean_ms": 1000 * statistics.fmean(values),
        "p50_ms": 1000 * pct(values, 0.5),
        "p95_ms": 1000 * pct(values, 0.95),
        "max_ms": 1000 * max(values),
    }


# -- waiting for the first reminder: one batched outbox query for all waiters ----------------


class OutboxPoller:
    """Resolves ``wait(invoice_id)`` once the invoice has a row in the outbox table.

    One query (``SELECT DISTINCT invoice_id FROM outbox WHERE invoice_id IN (...)``) covers all
    lifecycles waiting at that moment (at most --concurrency), run on its own engine in its own
    thread, then a sleep of --poll-interval. So the poll cost is about one indexed query per
    interval, not one per lifecycle per interval, and never blocks the event loop.
    """

    def __init__(self, url: str, interval: float) -> None:
        from arflow.db import make_engine

        self.engine = make_engine(url)  # its own engine: not the product's pool, not counted
        self.interval = interval
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="bench-poll")
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.queries = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _query(self, ids: list[int]) -> set[int]:
        stmt = sa.text(
            "SELECT DISTINCT invoice_id FROM outbox WHERE invoice_id IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True))
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(stmt, {"ids": ids})}

    async def wait(self, invoice_id: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[invoice_id] = fut
        self._wake.set()
        await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            ids = list(self.waiting)
            try:
                found = await loop.run_in_executor(self.executor, self._query, ids)
            except Exception as exc:  # noqa: BLE001 - fail the waiters, not the poller
                for i in ids:
                    fut = self.waiting.pop(i)
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.queries += 1
            for i in found:
                waiter = self.waiting.pop(i, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)
        self.engine.dispose()


# -- several worker and API processes: who did what, and nothing twice ------------------------


async def wait_for_pollers(
    client: Client,
    task_queue: str,
    identities: list[str],
    procs: list[tuple[subprocess.Popen[bytes], str]],
    timeout: float = 90.0,
) -> None:
    """Until every identity polls ``task_queue`` for workflow and for activity tasks (the
    server's DescribeTaskQueue lists each poller with its identity)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    deadline = time.monotonic() + timeout
    while True:
        polling = []
        for kind in kinds:
            resp = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=kind,
                )
            )
            polling.append({p.identity for p in resp.pollers})
        if all(set(identities) <= seen for seen in polling):
            return
        for proc, _ in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers {identities} not all polling after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def scrape(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples called ``name`` on a Prometheus endpoint: [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(url)
    resp.raise_for_status()
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
        if sample.name == name
    ]


async def api_requests(url: str) -> dict[str, float]:
    """Requests an API process has answered so far, by "METHOD route" (its /metrics)."""
    out: defaultdict[str, float] = defaultdict(float)
    for labels, value in await scrape(url, "arflow_http_requests_total"):
        if labels.get("method") == "POST":
            out[f"POST {labels.get('route')}"] += value
    return dict(out)


async def worker_activities(url: str) -> dict[str, float]:
    """Activity attempts a worker process has run so far, by kind (its /metrics)."""
    out: defaultdict[str, float] = defaultdict(float)
    for labels, value in await scrape(url, "arflow_activity_attempts_total"):
        out[labels.get("kind", "?")] += value
    return dict(out)


async def split_of(client: Client, workflow_ids: list[str]) -> dict[str, Any]:
    """Which worker ran each workflow task and each activity of these workflows: the
    ``identity`` on their WorkflowTaskCompleted and ActivityTaskStarted history events."""
    tasks: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    local: Counter[str] = Counter()  # local activities: run by the worker of their task
    missing = 0
    workflows: Counter[str] = Counter()  # workflows whose tasks ran on exactly that set
    retries = 0
    gate = asyncio.Semaphore(16)

    async def one(wid: str) -> None:
        nonlocal retries, missing
        async with gate:
            try:
                history = await client.get_workflow_handle(wid).fetch_history()
            except RPCError:
                missing += 1  # e.g. a confirmation not started (yet)
                return
        ran: set[str] = set()
        who = "?"
        for ev in history.events:
            which = ev.WhichOneof("attributes")
            if which == "workflow_task_completed_event_attributes":
                who = ev.workflow_task_completed_event_attributes.identity
                tasks[who] += 1
                ran.add(who)
            elif which == "marker_recorded_event_attributes":
                # A local activity's marker follows the completion of the task that ran it.
                if ev.marker_recorded_event_attributes.marker_name == "core_local_activity":
                    local[who] += 1
            elif which == "activity_task_started_event_attributes":
                started = ev.activity_task_started_event_attributes
                activities[started.identity] += 1
                retries += started.attempt > 1
        workflows[" + ".join(sorted(ran))] += 1

    await asyncio.gather(*(one(wid) for wid in workflow_ids))
    return {
        "workflows": len(workflow_ids) - missing,
        "not_found": missing,
        "workflow_tasks_by_worker": dict(sorted(tasks.items())),
        "activities_by_worker": dict(sorted(activities.items())),
        "local_activities_by_worker": dict(sorted(local.items())),
        "workflows_by_workers_that_ran_their_tasks": dict(sorted(workflows.items())),
        "activity_retries": retries,
    }


def confirmation_ids(engine: Engine, settings: Any, invoice_ids: list[int]) -> list[str]:
    """The workflow ids of the payment confirmations of these invoices' payments."""
    from arflow.gateway import confirmation_id
    from workflows.confirmations import ConfirmationInput

    stmt = sa.text("select invoice_id, id from payments where invoice_id in :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt, {"ids": invoice_ids}).all()
    return [confirmation_id(settings, ConfirmationInput(i, "payment", p)) for i, p in rows]


def check_lifecycles(engine: Engine, invoice_ids: list[int]) -> dict[str, Any]:
    """Nothing twice, nothing missing: per invoice exactly one reminder per step in the outbox
    and one ``reminder_sent`` event, one payment stored and applied with one
    ``payment_applied`` event, at most one payment confirmation, status paid, balance 0."""
    per_invoice = sa.text(
        """
        select i.id, i.status, i.balance_minor,
          (select count(*) from outbox o
            where o.invoice_id = i.id and o.step_key not like 'confirm-%') as reminders,
          (select count(*) from outbox o
            where o.invoice_id = i.id and o.step_key like 'confirm-%') as confirmations,
          (select count(*) from invoice_events e
            where e.invoice_id = i.id and e.kind = 'reminder_sent') as reminder_events,
          (select count(*) from payments p where p.invoice_id = i.id) as payments,
          (select count(*) from payments p
            where p.invoice_id = i.id and p.status = 'applied') as applied,
          (select count(*) from invoice_events e
            where e.invoice_id = i.id and e.kind = 'payment_applied') as applied_events
        from invoices i where i.id in :ids
        """
    ).bindparams(sa.bindparam("ids", expanding=True))
    per_step = sa.text(
        "select invoice_id, step_key, count(*) from outbox where invoice_id in :ids "
        "group by invoice_id, step_key having count(*) > 1"
    ).bindparams(sa.bindparam("ids", expanding=True))
    problems: list[str] = []
    totals: Counter[str] = Counter()
    with engine.connect() as conn:
        rows = conn.execute(per_invoice, {"ids": invoice_ids}).mappings().all()
        twice = conn.execute(per_step, {"ids": invoice_ids}).all()
    if len(rows) != len(set(invoice_ids)):
        problems.append(f"{len(set(invoice_ids))} invoices created, {len(rows)} found")
    exactly_one = ("reminders", "reminder_events", "payments", "applied", "applied_events")
    for row in rows:
        for name in (*exactly_one, "confirmations"):
            totals[name] += row[name]
        wrong = [f"{name}={row[name]}" for name in exactly_one if row[name] != 1]
        if row["confirmations"] > 1:
            wrong.append(f"confirmations={row['confirmations']}")
        if row["status"] != "paid" or row["balance_minor"] != 0:
            wrong.append(f"status={row['status']} balance={row['balance_minor']}")
        if wrong:
            problems.append(f"invoice {row['id']}: {', '.join(wrong)}")
    problems += [f"invoice {i}: step {step!r} in the outbox {n} times" for i, step, n in twice]
    return {"invoices": len(rows), "totals": dict(totals), "problems": problems}


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Phase:
    kind: str
    round: int
    n: int
    wall_s: float
    steps: dict[str, list[float]] = field(default_factory=dict)
    totals: list[float] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)
    sql: dict[str, Any] = field(default_factory=dict)
    loop_lag: dict[str, float] = field(default_factory=dict)
    poll_queries: int = 0
    processes: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.wall_s


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix="arflow-bench-"))
        self.cleanups: list[Callable[[], Awaitable[None] | None]] = []
        self.sql = SqlCounter()
        self.db_label = "sqlite"
        self.url = ""
        self.bare_workflow: type = BareInvoice
        self.busy_before = 0.0
        self.child_labels: dict[int, str] = {}  # pid -> "api-1", "full-w1", ...
        self.apis: list[httpx.AsyncClient] = []
        self.api_metrics: list[str] = []  # each API's /metrics URL

    def bare_runner(self) -> Any:
        """The sandbox, with this module passed through unless --bare-sandbox reimport.

        The sandbox re-imports a workflow's module for every run. For InvoiceWorkflow that is
        workflows/invoice.py (~240 lines, its dependencies passed through): a real product cost,
        measured. For BareInvoice it would be this whole benchmark module (~1,000 lines of
        dataclasses and helpers, compiled from source again each time when
        PYTHONDONTWRITEBYTECODE=1), a cost no real bare workflow has: see the README.
        """
        from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

        if self.opts.bare_sandbox == "reimport":
            return SandboxedWorkflowRunner()
        restrictions = SandboxRestrictions.default.with_passthrough_modules("bench")
        return SandboxedWorkflowRunner(restrictions=restrictions)

    # -- set-up --------------------------------------------------------------------------

    def setup_database(self) -> Engine:
        from arflow.db import make_engine
        from arflow.migrate import upgrade

        if self.opts.database_url is None or self.opts.database_url.startswith("sqlite"):
            self.url = self.opts.database_url or f"sqlite:///{self.tmp / 'arflow.db'}"
        else:
            self.db_label = "postgresql"
            from bench.databases import throwaway_schema

            self.url, drop = throwaway_schema(self.opts.database_url, f"arflow_bench_{self.run_id}")
            self.cleanups.append(drop)
        engine = make_engine(self.url)
        upgrade(engine)
        self.cleanups.append(engine.dispose)
        self.sql.attach(engine)
        return engine

    async def start_temporal(self) -> WorkflowEnvironment:
        kwargs: dict[str, Any] = {}
        extra = list(self.opts.dev_server_args)
        if self.opts.db_file_store:
            kwargs["dev_server_database_filename"] = str(self.tmp / "temporal.db")
            if not self.opts.plain_file_store:
                from arflow.cli import FILE_STORE_ARGS

                extra += FILE_STORE_ARGS  # as `arflow run` starts it
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_cli()),
            dev_server_extra_args=extra,
            **kwargs,
        )
        self.cleanups.append(env.shutdown)
        return env

    def settings(self, env: WorkflowEnvironment) -> Any:
        from arflow.config import Settings

        return Settings(
            environment="test",
            database_url=self.url,
            temporal_address=env.client.service_client.config.target_host,
            task_queue=f"bench-arflow-{self.run_id}",
            workflow_id_prefix=f"bench{self.run_id}-",
            api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
            webhook_secret=WEBHOOK_SECRET,
            data_dir=str(self.tmp / "data"),
        )

    async def start_api(self, settings: Any, engine: Engine, client: Client) -> httpx.AsyncClient:
        from api.app import create_app

        if self.opts.api == "uvicorn":
            self.apis = [
                await self.start_uvicorn(settings, f"api-{k + 1}") for k in range(self.opts.apis)
            ]
            return self.apis[0]
        app = create_app(settings, engine=engine, temporal=client)
        with Session(engine) as session:  # the lifespan's job; ASGITransport skips it
            policies.ensure_default_policy(session)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://arflow.bench", timeout=60
        )
        self.apis = [http]
        self.cleanups.append(http.aclose)
        return http

    def child_env(self, settings: Any) -> dict[str, str]:
        """The ARFLOW_* settings every API and worker process of the run shares."""
        return dict(os.environ) | {
            "ARFLOW_ENVIRONMENT": "test",
            "ARFLOW_DATABASE_URL": settings.database_url,
            "ARFLOW_TEMPORAL_ADDRESS": settings.temporal_address,
            "ARFLOW_TASK_QUEUE": settings.task_queue,
            "ARFLOW_WORKFLOW_ID_PREFIX": settings.workflow_id_prefix,
            "ARFLOW_API_KEYS": settings.api_keys,
            "ARFLOW_WEBHOOK_SECRET": settings.webhook_secret,
            "ARFLOW_DATA_DIR": settings.data_dir,
            "PYTHONPATH": str(root()),
        }

    def stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    async def start_uvicorn(self, settings: Any, label: str) -> httpx.AsyncClient:
        """The app in a uvicorn process of its own on a free port (as `arflow run` runs it)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app"]
            + ["--host", "127.0.0.1", "--port", str(port)]
            + ["--log-level", "warning", "--no-access-log"],
            cwd=root(),
            env=self.child_env(settings),
        )
        self.child_labels[proc.pid] = label
        self.cleanups.append(lambda: self.stop_process(proc))
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60)
        self.cleanups.append(http.aclose)
        deadline = time.monotonic() + 120  # a loaded machine takes a while to import the app
        while time.monotonic() < deadline:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn ({label}) exited with {proc.returncode}")
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"uvicorn ({label}) did not answer /healthz within 120 s")
        self.api_metrics.append(f"http://127.0.0.1:{port}/metrics")
        return http

    async def start_workers(
        self, client: Client, settings: Any, identities: list[str]
    ) -> list[tuple[subprocess.Popen[bytes], str]]:
        """``worker.py`` processes with the run's settings, one per identity, on the one task
        queue; returns each process and its /metrics URL once all of them are polling."""
        started: list[tuple[subprocess.Popen[bytes], str]] = []
        try:
            for identity in identities:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                log = (self.tmp / f"{identity}.log").open("ab")
                proc = subprocess.Popen(
                    [sys.executable, str(root() / "worker.py")],
                    cwd=root(),
                    env=self.child_env(settings)
                    | {"ARFLOW_WORKER_IDENTITY": identity, "ARFLOW_WORKER_METRICS_PORT": str(port)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                log.close()
                self.child_labels[proc.pid] = identity
                started.append((proc, f"http://127.0.0.1:{port}/metrics"))
            await wait_for_pollers(client, settings.task_queue, identities, started)
        except BaseException:
            for proc, _ in started:
                self.stop_process(proc)
            raise
        return started

    # -- lifecycles ------------------------------------------------------------------------

    async def run_many(
        self, count: int, one: Callable[[int, dict[str, list[float]]], Awaitable[None]], start: int
    ) -> tuple[float, dict[str, list[float]]]:
        sem = asyncio.Semaphore(self.opts.concurrency)
        steps: dict[str, list[float]] = defaultdict(list)

        async def guarded(i: int) -> None:
            async with sem:
                await one(i, steps)

        t0 = time.perf_counter()
        await asyncio.gather(*(guarded(start + i) for i in range(count)))
        return time.perf_counter() - t0, steps

    async def measure(
        self,
        kind: str,
        rnd: int,
        one: Callable[[int, dict[str, list[float]]], Awaitable[None]],
        start: int,
        poller: OutboxPoller | None = None,
    ) -> Phase:
        if self.opts.warmup:
            await self.run_many(self.opts.warmup, one, start)
        start += self.opts.warmup
        lag = LoopLag() if self.opts.profile else None
        self.sql.reset()
        self.sql.enabled = self.opts.profile
        q0 = poller.queries if poller else 0
        before = cpu_snapshot(self.opts.profile, self.child_labels)
        if lag:
            lag.start()
        prof = None
        if self.opts.cprofile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        wall, steps = await self.run_many(self.opts.n, one, start)
        if prof is not None:
            prof.disable()
            prof.dump_stats(f"{self.opts.cprofile}.{kind}.{rnd + 1}.prof")
        after = cpu_snapshot(self.opts.profile, self.child_labels)
        self.sql.enabled = False
        phase = Phase(kind=kind, round=rnd, n=self.opts.n, wall_s=wall, steps=dict(steps))
        phase.totals = steps.pop("total")
        phase.cpu = cpu_delta(before, after)
        phase.poll_queries = (poller.queries - q0) if poller else 0
        if lag:
            phase.loop_lag = await lag.stop()
        if self.opts.profile:
            phase.sql = {
                "statements": dict(self.sql.statements),
                "transactions": dict(self.sql.transactions),
                "pool_checkouts": dict(self.sql.checkouts),
                "seconds": dict(self.sql.seconds),
                "by_sql": {f"{c}: {s}": v for (c, s), v in self.sql.by_sql.most_common()},
            }
        return phase

    async def bare_phase(self, client: Client, rnd: int) -> tuple[Phase, str]:
        tq = f"bench-bare-{self.run_id}-{rnd}"
        last_id = ""

        async def one(i: int, steps: dict[str, list[float]]) -> None:
            nonlocal last_id
            t0 = time.perf_counter()
            wid = f"bench{self.run_id}-bare-{rnd}-{i}"
            handle = await client.start_workflow("BareInvoice", i, id=wid, task_queue=tq)
            t1 = time.perf_counter()
            await handle.signal("pay", AMOUNT_MINOR)
            t2 = time.perf_counter()
            result = await handle.result()
            t3 = time.perf_counter()
            if result != "paid":
                raise RuntimeError(f"{wid} returned {result!r}")
            steps["start"].append(t1 - t0)
            steps["signal"].append(t2 - t1)
            steps["result"].append(t3 - t2)
            steps["total"].append(t3 - t0)
            last_id = wid

        worker = Worker(
            client,
            task_queue=tq,
            workflows=[self.bare_workflow],
            workflow_runner=self.bare_runner(),
        )
        async with worker:
            phase = await self.measure("bare", rnd, one, start=0)
        return phase, last_id

    async def full_phase(
        self,
        client: Client,
        settings: Any,
        engine: Engine,
        customer_ids: list[int],
        policy_id: int,
        rnd: int,
        kind: str = "full",
        workers: int = 0,
        apis: int = 1,
    ) -> tuple[Phase, str]:
        """The full lifecycle: worker in this process (``workers`` 0) or ``workers``
        worker.py processes; requests through the first ``apis`` API clients, round-robin."""
        from arflow.payments.signatures import sign
        from worker import ACTIVITY_THREADS, build_worker

        last_id = ""
        spec = {"Authorization": f"Bearer {API_KEYS['specialist']}"}
        poller = OutboxPoller(self.url, self.opts.poll_interval)
        labels = [f"api-{k + 1}" for k in range(apis)]
        sent: Counter[str] = Counter()  # "api-1 POST /v1/invoices" -> requests
        lifecycles: list[tuple[int, str]] = []  # (invoice id, workflow id), warm-up included

        async def one(i: int, steps: dict[str, list[float]]) -> None:
            nonlocal last_id
            today = date.today().isoformat()
            now = datetime.now(UTC)
            tag = f"{self.run_id}-{kind}-{rnd}-{i}"
            body = {
                "external_id": f"BENCH-{tag}",
                "number": f"B{tag}",
                "customer_id": customer_ids[i % len(customer_ids)],
                "amount_minor": AMOUNT_MINOR,
                "currency": "EUR",
                "issued_on": today,
                "due_date": today,
                "due_at": (now - timedelta(seconds=1)).isoformat(),
                "policy_id": policy_id,
            }
            # Round-robin: the invoice through one API, its payment through the next.
            create_via, pay_via = i % apis, (i + 1) % apis
            t0 = time.perf_counter()
            resp = await self.apis[create_via].post("/v1/invoices", json=body, headers=spec)
            if resp.status_code != 201:
                raise RuntimeError(f"create invoice: {resp.status_code} {resp.text}")
            sent[f"{labels[create_via]} POST /v1/invoices"] += 1
            inv = resp.json()
            lifecycles.append((inv["id"], inv["workflow_id"]))
            t1 = time.perf_counter()
            await poller.wait(inv["id"])
            t2 = time.perf_counter()
            raw = json.dumps(
                {
                    "event_id": f"evt_bench_{tag.replace('-', '_')}",
                    "invoice_id": inv["id"],
                    "amount_minor": AMOUNT_MINOR,
                    "currency": "EUR",
                    "paid_at": datetime.now(UTC).isoformat(),
                    "method": "card",
                }
            ).encode()
            resp = await self.apis[pay_via].post(
                "/v1/webhooks/payments",
                content=raw,
                headers={
                    "Arflow-Signature": sign(WEBHOOK_SECRET, raw),
                    "Content-Type": "application/json",
                },
            )
            if resp.status_code != 200 or resp.json().get("status") != "accepted":
                raise RuntimeError(f"payment webhook: {resp.status_code} {resp.text}")
            sent[f"{labels[pay_via]} POST /v1/webhooks/payments"] += 1
            t3 = time.perf_counter()
            result = await client.get_workflow_handle(inv["workflow_id"]).result()
            t4 = time.perf_counter()
            if result.get("status") != "paid":
                raise RuntimeError(f"{inv['workflow_id']} ended {result!r}")
            steps["create (POST /v1/invoices)"].append(t1 - t0)
            steps["until reminder in outbox"].append(t2 - t1)
            steps["payment webhook"].append(t3 - t2)
            steps["until workflow completed"].append(t4 - t3)
            steps["total"].append(t4 - t0)
            last_id = inv["workflow_id"]

        if not workers:
            executor = ThreadPoolExecutor(ACTIVITY_THREADS, thread_name_prefix="activity")
            poller.start()
            try:
                async with build_worker(client, settings, engine, executor=executor):
                    phase = await self.measure(kind, rnd, one, start=0, poller=poller)
            finally:
                await poller.stop()
                executor.shutdown(wait=False)
            return phase, last_id

        identities = [f"{kind}-w{k + 1}" for k in range(workers)]
        procs = await self.start_workers(client, settings, identities)
        try:
            api_before = [await api_requests(url) for url in self.api_metrics[:apis]]
            poller.start()
            try:
                phase = await self.measure(kind, rnd, one, start=0, poller=poller)
            finally:
                await poller.stop()
            api_after = [await api_requests(url) for url in self.api_metrics[:apis]]
            # Each payment's confirmation is a workflow of its own: let the last ones finish.
            invoice_ids = [iid for iid, _ in lifecycles]
            for _ in range(60):
                check = await asyncio.to_thread(check_lifecycles, engine, invoice_ids)
                if check["totals"].get("confirmations", 0) >= len(invoice_ids):
                    break
                await asyncio.sleep(0.25)
            worker_acts = {
                identity: await worker_activities(url)
                for identity, (_, url) in zip(identities, procs, strict=True)
            }
        finally:
            for proc, _ in procs:
                self.stop_process(proc)
        phase.processes = {
            "workers": workers,
            "apis": apis,
            "lifecycles_checked": len(lifecycles),
            "requests_sent": dict(sorted(sent.items())),
            "requests_answered": {
                label: {
                    route: after[route] - before.get(route, 0)
                    for route in sorted(after)
                    if after[route] > before.get(route, 0)
                }
                for label, before, after in zip(labels, api_before, api_after, strict=True)
            },
            "activity_attempts_by_worker_metrics": worker_acts,
            "split": await split_of(client, [wid for _, wid in lifecycles]),
            "confirmations_split": await split_of(
                client, await asyncio.to_thread(confirmation_ids, engine, settings, invoice_ids)
            ),
            "duplicates": await asyncio.to_thread(check_lifecycles, engine, invoice_ids),
        }
        return phase, last_id

    # -- main --------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        b0 = machine_ticks()
        await asyncio.sleep(1.0)
        b1 = machine_ticks()
        self.busy_before = 100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if self.busy_before > 15:
            print(
                f"warning: the machine was {self.busy_before:.0f}% busy before the run started "
                "(other processes); results will be noisy",
                file=sys.stderr,
            )
        engine = self.setup_database()
        env = await self.start_temporal()
        client = env.client
        settings = self.settings(env)
        http = await self.start_api(settings, engine, client)
        admin = {"Authorization": f"Bearer {API_KEYS['admin']}"}
        customer_ids = []
        for c in range(self.opts.customers):
            resp = await http.post(
                "/v1/customers",
                json={
                    "external_id": f"C-bench-{self.run_id}-{c}",
                    "name": f"Bench {c} GmbH",
                    "email": f"ap{c}@bench.example.com",
                    "timezone": "UTC",
                    "locale": "en",
                },
                headers=admin,
            )
            if resp.status_code != 201:
                raise RuntimeError(f"create customer: {resp.status_code} {resp.text}")
            customer_ids.append(resp.json()["id"])
        resp = await http.post(
            "/v1/policies",
            json={
                "name": f"bench-{self.run_id}",
                "send_at": None,
                "contact_window": None,
                "max_messages_per_day": 0,
                "consolidate": False,
                "escalate_after": "P30D",
                "steps": [{"key": "due", "offset": "PT0S", "template": "reminder"}],
                **(BENCH_CHARGES if self.opts.charges else {}),
            },
            headers=admin,
        )
        if resp.status_code != 201:
            raise RuntimeError(f"create policy: {resp.status_code} {resp.text}")
        policy_id = resp.json()["id"]

        phases: list[Phase] = []
        sample_ids: dict[str, str] = {}
        for rnd in range(self.opts.rounds):
            bare, sample_ids["bare"] = await self.bare_phase(client, rnd)
            phases.append(bare)
            print(f"round {rnd + 1}: bare  {bare.rate:7.1f} lifecycles/s", file=sys.stderr)
            full, sample_ids["full"] = await self.full_phase(
                client,
                settings,
                engine,
                customer_ids,
                policy_id,
                rnd,
                workers=1 if self.opts.processes else 0,
            )
            phases.append(full)
            print(f"round {rnd + 1}: full  {full.rate:7.1f} lifecycles/s", file=sys.stderr)
            if self.opts.scaled:
                scaled, sample_ids["scaled"] = await self.full_phase(
                    client,
                    settings,
                    engine,
                    customer_ids,
                    policy_id,
                    rnd,
                    kind="scaled",
                    workers=self.opts.workers,
                    apis=self.opts.apis,
                )
                phases.append(scaled)
                print(
                    f"round {rnd + 1}: {self.opts.workers} workers + {self.opts.apis} APIs "
                    f"{scaled.rate:7.1f} lifecycles/s",
                    file=sys.stderr,
                )
        histories = {k: await history_profile(client, wid) for k, wid in sample_ids.items()}
        return self.report(phases, histories)

    def report(self, phases: list[Phase], histories: dict[str, Any]) -> dict[str, Any]:
        def median_rate(kind: str) -> float:
            return statistics.median(p.rate for p in phases if p.kind == kind)

        bare, full = median_rate("bare"), median_rate("full")
        scaled = median_rate("scaled") if self.opts.scaled else None
        return {
            "config": {
                "n": self.opts.n,
                "concurrency": self.opts.concurrency,
                "warmup": self.opts.warmup,
                "rounds": self.opts.rounds,
                "database": self.db_label,
                "temporal_store": "file (--db-filename)"
                if self.opts.db_file_store
                else "in-memory",
                "api": self.opts.api,
                "worker_processes": self.opts.workers,
                "api_processes": self.opts.apis if self.opts.api == "uvicorn" else 0,
                "bare_sandbox": self.opts.bare_sandbox,
                "customers": self.opts.customers,
                "dev_server_args": self.opts.dev_server_args,
                "poll_interval_s": self.opts.poll_interval,
                "cpus": os.cpu_count(),
                "machine_busy_pct_before": self.busy_before,
                "python": sys.version.split()[0],
            },
            "bare_lifecycles_per_s": bare,
            "full_lifecycles_per_s": full,
            "ratio_full_over_bare": full / bare,
            **(
                {"scaled_lifecycles_per_s": scaled, "ratio_scaled_over_full": scaled / full}
                if scaled is not None
                else {}
            ),
            "phases": [
                {
                    "kind": p.kind,
                    "round": p.round + 1,
                    "n": p.n,
                    "wall_s": p.wall_s,
                    "lifecycles_per_s": p.rate,
                    "lifecycle": summarize(p.totals),
                    "steps": {k: summarize(v) for k, v in p.steps.items()},
                    "cpu": p.cpu,
                    "outbox_poll_queries": p.poll_queries,
                    **({"sql": p.sql} if p.sql else {}),
                    **({"loop_lag": p.loop_lag} if p.loop_lag else {}),
                    **({"processes": p.processes} if p.processes else {}),
                }
                for p in phases
            ],
            "history_per_lifecycle": histories,
        }


async def history_profile(client: Client, workflow_id: str) -> dict[str, Any]:
    """What one lifecycle costs the engine: history events, workflow tasks, activities."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    kinds: Counter[str] = Counter()
    for ev in history.events:
        kinds[ev.WhichOneof("attributes") or str(ev.event_type)] += 1
    return {
        "workflow_id": workflow_id,
        "events": len(history.events),
        "workflow_tasks": kinds.get("workflow_task_completed_event_attributes", 0),
        "activities": kinds.get("activity_task_scheduled_event_attributes", 0),
        "signals": kinds.get("workflow_execution_signaled_event_attributes", 0),
        "timers": kinds.get("timer_started_event_attributes", 0),
        "sequence": [
            (ev.WhichOneof("attributes") or "?").removesuffix("_event_attributes")
            for ev in history.events
        ],
        "by_type": {k.removesuffix("_event_attributes"): v for k, v in sorted(kinds.items())},
    }


# -- output ----------------------------------------------------------------------------------


def print_report(r: dict[str, Any], profile: bool) -> None:
    c = r["config"]
    print()
    print(
        f"arflow lifecycle benchmark: n={c['n']} per kind, concurrency={c['concurrency']}, "
        f"warm-up={c['warmup']}, db={c['database']}, temporal dev server {c['temporal_store']}, "
        f"api={c['api']}, bare sandbox={c['bare_sandbox']}, customers={c['customers']}, "
        f"{c['cpus']} CPUs "
        f"({c['machine_busy_pct_before']:.0f}% busy before start)"
    )
    head = (
        f"{'':28} {'lifecycles/s':>12} {'wall s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'Python CPU ms/lc':>15} {'server CPU ms/lc':>16} {'other CPU ms/lc':>15} "
        f"{'machine busy':>12}"
    )
    print(head)
    print("-" * len(head))
    for p in r["phases"]:
        label = {
            "bare": "bare engine (BareInvoice)",
            "full": "full arflow lifecycle" + (" (1w+1a)" if c["worker_processes"] else ""),
            "scaled": f"full, {c['worker_processes']} workers + {c['api_processes']} APIs",
        }[p["kind"]]
        if c["rounds"] > 1:
            label += f" #{p['round']}"
        kids = p["cpu"]["children_cpu_s"]
        server = sum(v for k, v in kids.items() if k.startswith("temporal"))
        python = p["cpu"]["bench_process_cpu_s"] + sum(
            v for k, v in kids.items() if not k.startswith("temporal")
        )
        print(
            f"{label:28} {p['lifecycles_per_s']:12.1f} {p['wall_s']:8.2f} "
            f"{p['lifecycle']['p50_ms']:8.1f} {p['lifecycle']['p95_ms']:8.1f} "
            f"{1000 * python / p['n']:15.2f} "
            f"{1000 * server / p['n']:16.2f} "
            f"{1000 * max(0.0, p['cpu']['machine_busy_cpu_s'] - python - server) / p['n']:15.2f} "
            f"{p['cpu']['machine_busy_pct']:11.0f}%"
        )
    print("-" * len(head))
    print(
        f"{'ratio full/bare':28} {r['ratio_full_over_bare']:12.3f}"
        + ("   (median rates over rounds)" if c["rounds"] > 1 else "")
    )
    if "ratio_scaled_over_full" in r:
        print(f"{'ratio scaled/full':28} {r['ratio_scaled_over_full']:12.3f}")
    print()
    last = {p["kind"]: p for p in r["phases"]}
    kinds = [k for k in ("bare", "full", "scaled") if k in last]
    for kind in kinds:
        p = last[kind]
        print(f"{kind} lifecycle steps (ms)      {'mean':>8} {'p50':>8} {'p95':>8} {'max':>8}")
        for name, s in p["steps"].items():
            print(
                f"  {name:30} {s['mean_ms']:8.1f} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} "
                f"{s['max_ms']:8.1f}"
            )
    full = last["full"]
    print(
        f"  outbox polling: {full['outbox_poll_queries']} batched queries for {full['n']} "
        f"lifecycles ({full['outbox_poll_queries'] / full['n']:.1f} per lifecycle)"
    )
    print()
    print("engine work per lifecycle (history of the last one)")
    for kind, h in r["history_per_lifecycle"].items():
        print(
            f"  {kind:5} events={h['events']:3} workflow tasks={h['workflow_tasks']} "
            f"activities={h['activities']} signals={h['signals']} timers={h['timers']}"
        )
    for p in r["phases"]:
        if p.get("processes"):
            print_processes(p)
    if profile:
        print()
        print("profile (last round), per lifecycle")
        for kind in kinds:
            p = last[kind]
            n = p["n"]
            threads = ", ".join(
                f"{k} {1000 * v / n:.2f}"
                for k, v in sorted(p["cpu"]["threads_cpu_s"].items(), key=lambda kv: -kv[1])
                if v > 0
            )
            print(f"  {kind}: CPU ms by thread: {threads}")
            if p.get("loop_lag"):
                lag = p["loop_lag"]
                print(
                    f"  {kind}: event-loop lag (5 ms sleeper): mean {lag['mean_ms']:.2f} ms, "
                    f"p95 {lag['p95_ms']:.2f} ms, max {lag['max_ms']:.1f} ms"
                )
            sql = p.get("sql")
            if sql and sql["statements"]:
                for cat, count in sorted(sql["statements"].items(), key=lambda kv: -kv[1]):
                    tx = sql["transactions"].get(cat, 0)
                    co = sql["pool_checkouts"].get(cat, 0)
                    print(
                        f"  {kind}: SQL from {cat}: {count / n:.1f} statements, {tx / n:.1f} "
                        f"commits, {co / n:.1f} pool checkouts, "
                        f"{1000 * sql['seconds'][cat] / n:.2f} ms in SQL"
                    )
                for name, count in sql["by_sql"].items():
                    print(f"      {count / n:5.2f}  {name}")


def print_processes(p: dict[str, Any]) -> None:
    """Who did what in a phase with worker and API processes, and the duplicate check."""
    pr, n = p["processes"], p["n"]
    print()
    print(
        f"{p['kind']} #{p['round']}: {pr['workers']} worker process(es), {pr['apis']} API "
        f"process(es), {pr['lifecycles_checked']} lifecycles (warm-up included)"
    )
    kids = p["cpu"]["children_cpu_s"]
    cpu = ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in sorted(kids.items()))
    print(
        f"  CPU ms per measured lifecycle by process: {cpu}, bench client+poller "
        f"{1000 * p['cpu']['bench_process_cpu_s'] / n:.1f}"
    )
    sp = pr["split"]
    print(
        f"  workflow tasks by worker (WorkflowTaskCompleted identity): "
        f"{sp['workflow_tasks_by_worker']}"
    )
    print(
        "  local activities by worker (markers after that worker's task): "
        f"{sp['local_activities_by_worker']}"
    )
    cs = pr["confirmations_split"]
    print(
        f"  payment confirmations ({cs['workflows']} workflows): workflow tasks "
        f"{cs['workflow_tasks_by_worker']}, activities {cs['activities_by_worker']}, "
        f"retries {cs['activity_retries']}"
    )
    print(
        f"  activities by worker (ActivityTaskStarted identity): {sp['activities_by_worker']}"
        f", retries {sp['activity_retries']}"
        + ("" if sp["activities_by_worker"] else " (the invoice workflow's are all local)")
    )
    print(
        f"  workflows by the workers that ran their tasks: "
        f"{sp['workflows_by_workers_that_ran_their_tasks']}"
    )
    print(
        f"  activity attempts by worker (their /metrics, confirmations included): "
        f"{pr['activity_attempts_by_worker_metrics']}"
    )
    print(f"  requests sent by the client: {pr['requests_sent']}")
    print(f"  requests answered (each API's /metrics): {pr['requests_answered']}")
    d = pr["duplicates"]
    print(
        f"  database check of {d['invoices']} invoices: totals {d['totals']}; "
        f"problems {len(d['problems'])}"
    )
    for problem in d["problems"][:10]:
        print(f"    {problem}")


# -- entry point -----------------------------------------------------------------------------


async def amain(opts: Options) -> dict[str, Any]:
    return await run_cleaning_up(Bench(opts))


async def run_cleaning_up(bench: Bench) -> dict[str, Any]:
    """``bench.run()``, then its cleanups (last first, each whatever the others did) and its
    temporary directory."""
    try:
        return await bench.run()
    finally:
        for cleanup in reversed(bench.cleanups):
            try:
                res = cleanup()
                if asyncio.iscoroutine(res):
                    await res
            except Exception:  # noqa: BLE001 - keep cleaning up
                traceback.print_exc()
        shutil.rmtree(bench.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)

    def body() -> int:
        report = asyncio.run(amain(opts))
        print_report(report, opts.profile)
        write_json(opts.json_path, report)
        # a lifecycle doubled or missing with several processes
        phases = report["phases"]
        doubled = (p.get("processes", {}).get("duplicates", {}).get("problems") for p in phases)
        return int(any(doubled))

    exit_with(body)


if __name__ == "__main__":
    # Run the module's importable twin: workflow classes defined in __main__ fail sandbox checks.
    from bench.lifecycle import main as _main

    _main()
