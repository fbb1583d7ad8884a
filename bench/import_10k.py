"""Bulk import benchmark: ``arflow import invoices`` of 10,000 rows against the bare engine.

One run, one Temporal dev server (``temporal server start-dev`` from the venv, as
bench/lifecycle.py starts it), the same concurrency for every phase:

1. **bare**: a process starts N ``BareInvoice`` workflows (bench/lifecycle.py; its first task
   sets a 30-day timer) with ``--concurrency`` starts in flight, a worker process runs them.
   This is the baseline: what the engine on this machine, right now, takes for N starts.
2. **db only**: ``arflow import customers`` + ``arflow import invoices`` into a fresh database
   with ARFLOW_TEMPORAL_ADDRESS pointing at a closed port: validation and storage alone (the
   command exits 3, workflows not started).
3. **full**: ``arflow import customers`` then ``arflow import invoices`` (the real command, a
   process of its own) into another fresh database, with ``worker.py`` running, then waits until
   every invoice workflow has completed its first workflow task (``describe()``).
4. **re-run** (``--rerun``): the same invoices command again: all rows unchanged, every
   workflow already running.

Reported: rows/s and seconds of each phase, the first-task completion times, CPU seconds by
process, and the ratio full/bare (import seconds over bare start seconds, both the wall time of
the starting process). Compare ratios from one run, not absolute figures across runs.

Run from the project root::

    .venv/bin/python -m bench.import_10k                      # SQLite file, in-memory server
    .venv/bin/python -m bench.import_10k --db-file-store      # server state on disk (arflow run)
    .venv/bin/python -m bench.import_10k --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from arflow.cli import FILE_STORE_ARGS
from bench.entry import exit_with, write_json

ROOT = Path(__file__).resolve().parent.parent
ZONES = ["Europe/Berlin", "America/New_York", "Pacific/Tongatapu", "UTC", "Asia/Kolkata"]


@dataclass
class Options:
    n: int
    customers: int
    concurrency: int
    batch_size: int
    database_url: str | None
    db_file_store: bool
    plain_file_store: bool
    overdue: float
    rerun: bool
    json_path: str | None
    dev_server_args: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.import_10k",
        description="arflow import invoices of N rows vs N bare workflow starts, one run.",
    )
    p.add_argument("--n", type=int, default=10_000, help="invoices (default 10000)")
    p.add_argument("--customers", type=int, default=0, help="customers (default n/5)")
    p.add_argument("--concurrency", type=int, default=32, help="starts in flight (default 32)")
    p.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    p.add_argument(
        "--database-url",
        default=None,
        help="default: fresh SQLite files in a temp dir; postgresql:// gets throwaway schemas",
    )
    p.add_argument(
        "--db-file-store",
        action="store_true",
        help="dev server with --db-filename (state on disk, as `arflow run`); default in memory",
    )
    p.add_argument(
        "--plain-file-store",
        action="store_true",
        help="with --db-file-store: without arflow run's SQLite pragmas (WAL, synchronous=normal)",
    )
    p.add_argument(
        "--overdue",
        type=float,
        default=0.0,
        help="share of invoices already overdue (their first task sends a reminder); default 0",
    )
    p.add_argument("--rerun", action="store_true", help="import the same file a second time")
    p.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    p.add_argument(
        "--dev-server-arg",
        action="append",
        metavar="ARG",
        help="extra argument for `temporal server start-dev` (repeatable)",
    )
    a = p.parse_args(argv)
    if a.n < 1 or a.concurrency < 1 or not 0 <= a.overdue <= 1:
        p.error("--n and --concurrency must be >= 1, --overdue between 0 and 1")
    return Options(
        n=a.n,
        customers=a.customers or max(1, a.n // 5),
        concurrency=a.concurrency,
        batch_size=a.batch_size,
        database_url=a.database_url,
        db_file_store=a.db_file_store,
        plain_file_store=a.plain_file_store,
        overdue=a.overdue,
        rerun=a.rerun,
        json_path=a.json_path,
        dev_server_args=a.dev_server_arg or [],
    )


# -- data -----------------------------------------------------------------------------------


def write_files(
    folder: Path, opts: Options, seed: int = 7, due_days: tuple[int, int] | None = None
) -> tuple[Path, Path]:
    """customers.csv and invoices.csv: zones around the world, EUR and USD, every tenth
    invoice with an early-payment discount, due 1-60 days ahead (or overdue, --overdue); with
    ``due_days`` (first, last), due on a day drawn evenly from that range instead (relative
    to today, both included, --overdue ignored)."""
    rnd = random.Random(seed)
    today = date.today()
    customers = folder / "customers.csv"
    with customers.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["external_id", "name", "email", "timezone", "locale", "segment"])
        for c in range(opts.customers):
            out.writerow(
                [f"C-{c:06d}", f"Customer {c} Ltd", f"ap{c}@example.com", ZONES[c % len(ZONES)]]
                + ["en", "standard"]
            )
    invoices = folder / "invoices.csv"
    with invoices.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(
            ["external_id", "number", "customer_external_id", "currency", "amount_minor"]
            + ["issued_on", "due_date", "discount_percent", "discount_days"]
        )
        for i in range(opts.n):
            overdue = rnd.random() < opts.overdue
            days = -rnd.randint(2, 20) if overdue else rnd.randint(1, 60)
            due = today + timedelta(days=rnd.randint(*due_days) if due_days else days)
            discount = ["2.00", "10"] if i % 10 == 0 else ["", ""]
            out.writerow(
                [f"INV-{i:06d}", f"2026-{i:06d}", f"C-{rnd.randrange(opts.customers):06d}"]
                + ["EUR" if i % 3 else "USD", rnd.randint(1_000, 5_000_000)]
                + [(due - timedelta(days=30)).isoformat(), due.isoformat(), *discount]
            )
    return customers, invoices


# -- processes and measurement ----------------------------------------------------------------


def machine_ticks() -> tuple[int, int]:
    from bench.lifecycle import machine_ticks as ticks

    return ticks()


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid() -> int:
    """The dev server: the live (not zombie) `temporal` child of this process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and comm.startswith("temporal") and state not in "ZX":
            return int(entry)
    raise RuntimeError("the dev server process was not found")


@dataclass
class Run:
    """One timed child process: wall seconds, its own CPU, its exit status and output."""

    wall_s: float
    cpu_s: float
    status: int
    output: str


def run_process(args: list[str], env: dict[str, str], log: Path) -> Run:
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    return Run(wall, usage.ru_utime + usage.ru_stime, proc.returncode, log.read_text())


def table_values(output: str) -> dict[str, str]:
    """The rows of the command's rich result table: {"created": "10000", ...}."""
    values = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) == 2 and cells[0]:
            values[cells[0]] = cells[1]
    return values


async def first_tasks_done(
    client: Client,
    task_queue: str,
    ids: list[str],
    t0: float,
    at_done: Callable[[], None],
) -> tuple[float, float, int]:
    """When the workflows in ``ids`` had completed their first workflow task.

    Returns (seconds from ``t0`` until the task queue's workflow backlog was empty and the
    last workflow started had its first task completed, seconds until a ``describe()`` of
    every workflow had confirmed history length >= 4 for all (started, task scheduled,
    started, completed), how many the first such sweep still found pending). The backlog
    figure comes from the server's task queue stats, refreshed about every 5 s; the sweep
    loads the server, so it only starts once the backlog is empty.
    """
    sem = asyncio.Semaphore(32)

    async def done(wid: str) -> bool:
        async with sem:
            return (await client.get_workflow_handle(wid).describe()).history_length >= 4

    async def backlog() -> int:
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                report_stats=True,
            )
        )
        return int(resp.stats.approximate_backlog_count)

    while await backlog() or not await done(ids[-1]):
        await asyncio.sleep(0.5)
    first = time.perf_counter() - t0
    at_done()
    pending = ids
    stragglers = -1
    while pending:
        flags = await asyncio.gather(*(done(w) for w in pending))
        pending = [w for w, ok in zip(pending, flags, strict=True) if not ok]
        stragglers = len(pending) if stragglers < 0 else stragglers
        if pending:
            await asyncio.sleep(0.5)
    return first, time.perf_counter() - t0, stragglers


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix="arflow-import-bench-"))
        self.cleanups: list[Callable[[], Any]] = []
        self.address = ""
        self.server = 0

    def database(self, name: str) -> str:
        """A fresh, migrated database: a SQLite file, or a PostgreSQL schema dropped after."""
        from arflow.db import make_engine
        from arflow.migrate import upgrade

        if self.opts.database_url is None or self.opts.database_url.startswith("sqlite"):
            url = f"sqlite:///{self.tmp / f'{name}.db'}"
        else:
            from bench.databases import throwaway_schema

            url, drop = throwaway_schema(
                self.opts.database_url, f"arflow_bench_{self.run_id}_{name}"
            )
            self.cleanups.append(drop)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url

    def env(self, url: str, address: str, task_queue: str) -> dict[str, str]:
        return os.environ | {
            "ARFLOW_ENVIRONMENT": "test",
            "ARFLOW_DATABASE_URL": url,
            "ARFLOW_TEMPORAL_ADDRESS": address,
            "ARFLOW_TASK_QUEUE": task_queue,
            "ARFLOW_WORKFLOW_ID_PREFIX": f"b{self.run_id}-",
            "ARFLOW_DATA_DIR": str(self.tmp / "data"),
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "200",  # the result table on one line per row
        }

    def spawn_worker(
        self, args: list[str], env: dict[str, str], name: str
    ) -> subprocess.Popen[Any]:
        log = (self.tmp / f"{name}.log").open("w")
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()

        self.cleanups.append(stop)
        return proc

    async def wait_ready(self, proc: subprocess.Popen[Any], name: str, words: str) -> None:
        deadline = time.monotonic() + 60
        while words not in (self.tmp / f"{name}.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not start: {(self.tmp / f'{name}.log').read_text()}"
                )
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # its pollers are up

    def cpu(self, workers: dict[str, int]) -> dict[str, float]:
        out = {"temporal dev server": proc_cpu(self.server)}
        for name, pid in workers.items():
            out[name] = proc_cpu(pid)
        return out

    @staticmethod
    def cpu_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: b[k] - a.get(k, 0.0) for k in b}

    # -- phases ------------------------------------------------------------------------------

    async def bare(self, client: Client, n: int = 0) -> dict[str, Any]:
        """N (default: ``--n``) bare workflow starts and their first tasks."""
        n = n or self.opts.n
        tq = f"bench-bare-{self.run_id}"
        prefix = f"b{self.run_id}-bare-"
        env = self.env("", self.address, tq)
        worker = self.spawn_worker(
            [sys.executable, "-m", "bench.import_10k", "--bare-worker", self.address, tq],
            env,
            "bare-worker",
        )
        await self.wait_ready(worker, "bare-worker", "bare worker polling")
        m0, c0, t0 = machine_ticks(), self.cpu({"worker": worker.pid}), time.perf_counter()
        args = [sys.executable, "-m", "bench.import_10k", "--bare-start", self.address, tq]
        args += [prefix, str(n), str(self.opts.concurrency)]
        run = await asyncio.to_thread(run_process, args, env, self.tmp / "bare-start.log")
        if run.status != 0:
            raise RuntimeError(f"bare starter failed:\n{run.output}")
        ids = [f"{prefix}{i}" for i in range(n)]
        end: list[Any] = []

        def snapshot() -> None:
            end[:] = [machine_ticks(), self.cpu({"worker": worker.pid})]

        first, checked, stragglers = await first_tasks_done(client, tq, ids, t0, snapshot)
        m1, cpu = end[0], self.cpu_delta(c0, end[1])
        worker.terminate()
        return {
            "n": n,
            "starter_wall_s": run.wall_s,
            "starts_per_s": n / run.wall_s,
            "first_tasks_done_s": first,
            "first_tasks_checked_s": checked,
            "first_sweep_stragglers": stragglers,
            "cpu_s": {"starter": run.cpu_s, **cpu},
            "machine_busy_pct": 100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
        }

    async def db_only(self, customers: Path, invoices: Path) -> dict[str, Any]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"127.0.0.1:{s.getsockname()[1]}"
        env = self.env(self.database("dbonly"), closed, f"bench-none-{self.run_id}")
        cli = [sys.executable, "-m", "arflow.cli", "import"]
        await asyncio.to_thread(
            run_process, [*cli, "customers", str(customers)], env, self.tmp / "dbonly-c.log"
        )
        args = [*cli, "invoices", str(invoices), "--batch-size", str(self.opts.batch_size)]
        run = await asyncio.to_thread(run_process, args, env, self.tmp / "dbonly-i.log")
        values = table_values(run.output)
        if run.status != 3 or values.get("created") != str(self.opts.n):
            raise RuntimeError(f"db-only import: exit {run.status}\n{run.output}")
        return {
            "wall_s": run.wall_s,
            "command_elapsed_s": float(values["elapsed seconds"]),
            "rows_per_s": self.opts.n / run.wall_s,
            "cpu_s": {"import": run.cpu_s},
        }

    async def full(self, client: Client, customers: Path, invoices: Path) -> dict[str, Any]:
        from sqlmodel import col

        from arflow.db import make_engine
        from models import Invoice, InvoiceEvent

        url = self.database("full")
        tq = f"bench-import-{self.run_id}"
        env = self.env(url, self.address, tq)
        worker = self.spawn_worker([sys.executable, str(ROOT / "worker.py")], env, "worker")
        await self.wait_ready(worker, "worker", "worker polling task queue")
        cli = [sys.executable, "-m", "arflow.cli", "import"]
        cust = await asyncio.to_thread(
            run_process, [*cli, "customers", str(customers)], env, self.tmp / "customers.log"
        )
        if cust.status != 0:
            raise RuntimeError(f"customer import: exit {cust.status}\n{cust.output}")
        args = [*cli, "invoices", str(invoices), "--concurrency", str(self.opts.concurrency)]
        args += ["--batch-size", str(self.opts.batch_size)]
        m0, c0, t0 = machine_ticks(), self.cpu({"worker": worker.pid}), time.perf_counter()
        run = await asyncio.to_thread(run_process, args, env, self.tmp / "invoices.log")
        values = table_values(run.output)
        if run.status != 0 or values.get("workflows started") != str(self.opts.n):
            raise RuntimeError(f"invoice import: exit {run.status}\n{run.output}")
        engine = make_engine(url)
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.select(col(Invoice.id)).order_by(col(Invoice.id)))]
            events = conn.execute(sa.select(sa.func.count()).select_from(InvoiceEvent)).scalar_one()
        if len(ids) != self.opts.n or events < self.opts.n:
            raise RuntimeError(f"{len(ids)} invoices and {events} events stored")
        wids = [f"b{self.run_id}-invoice-{i}" for i in ids]
        end: list[Any] = []

        def snapshot() -> None:
            end[:] = [machine_ticks(), self.cpu({"worker": worker.pid})]

        first, checked, stragglers = await first_tasks_done(client, tq, wids, t0, snapshot)
        m1, cpu = end[0], self.cpu_delta(c0, end[1])
        result: dict[str, Any] = {
            "customers_wall_s": cust.wall_s,
            "wall_s": run.wall_s,
            "command_elapsed_s": float(values["elapsed seconds"]),
            "rows_per_s": self.opts.n / run.wall_s,
            "first_tasks_done_s": first,
            "first_tasks_checked_s": checked,
            "first_sweep_stragglers": stragglers,
            "cpu_s": {"import": run.cpu_s, **cpu},
            "machine_busy_pct": 100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
            "table": values,
        }
        if self.opts.rerun:
            again = await asyncio.to_thread(run_process, args, env, self.tmp / "rerun.log")
            rerun = table_values(again.output)
            if again.status != 0 or rerun.get("unchanged") != str(self.opts.n):
                raise RuntimeError(f"re-run: exit {again.status}\n{again.output}")
            result["rerun"] = {"wall_s": again.wall_s, "table": rerun, "cpu_s": again.cpu_s}
        engine.dispose()
        return result

    async def start_server(self, db_file: Path) -> WorkflowEnvironment:
        """A dev server as the options say (on ``db_file`` with --db-file-store); sets
        ``address`` and ``server`` (its pid). The caller shuts it down."""
        kwargs: dict[str, Any] = {}
        extra = list(self.opts.dev_server_args)
        if self.opts.db_file_store:
            kwargs["dev_server_database_filename"] = str(db_file)
            if not self.opts.plain_file_store:
                extra += FILE_STORE_ARGS  # as `arflow run` starts it
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
            dev_server_extra_args=extra,
            **kwargs,
        )
        self.address = env.client.service_client.config.target_host
        self.server = server_pid()
        return env

    async def run(self) -> dict[str, Any]:
        b0 = machine_ticks()
        await asyncio.sleep(1.0)
        b1 = machine_ticks()
        busy_before = 100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        customers, invoices = write_files(self.tmp, self.opts)
        env = await self.start_server(self.tmp / "temporal.db")
        self.cleanups.append(env.shutdown)
        say = functools.partial(print, file=sys.stderr, flush=True)
        say("phase 1/3: bare workflow starts ...")
        bare = await self.bare(env.client)
        say(
            f"  started in {bare['starter_wall_s']:.1f} s ({bare['starts_per_s']:.0f}/s), first "
            f"tasks done at {bare['first_tasks_done_s']:.1f} s, checked at "
            f"{bare['first_tasks_checked_s']:.1f} s"
        )
        say("phase 2/3: db only ...")
        db_only = await self.db_only(customers, invoices)
        say(f"  {db_only['wall_s']:.1f} s ({db_only['rows_per_s']:.0f} rows/s)")
        say("phase 3/3: full import ...")
        full = await self.full(env.client, customers, invoices)
        return {
            "config": {
                "n": self.opts.n,
                "customers": self.opts.customers,
                "concurrency": self.opts.concurrency,
                "batch_size": self.opts.batch_size,
                "overdue_share": self.opts.overdue,
                "database": "sqlite"
                if "sqlite" in (self.opts.database_url or "sqlite")
                else "postgresql",
                "temporal_store": "file (--db-filename)"
                if self.opts.db_file_store
                else "in-memory",
                "dev_server_args": self.opts.dev_server_args,
                "cpus": os.cpu_count(),
                "machine_busy_pct_before": busy_before,
            },
            "bare": bare,
            "db_only": db_only,
            "full": full,
            "ratio_import_over_bare": full["wall_s"] / bare["starter_wall_s"],
            "ratio_first_tasks_over_bare": full["first_tasks_done_s"] / bare["first_tasks_done_s"],
        }


def print_report(r: dict[str, Any]) -> None:
    c, bare, db, full = r["config"], r["bare"], r["db_only"], r["full"]
    print()
    print(
        f"arflow import benchmark: n={c['n']} invoices ({c['customers']} customers), "
        f"concurrency={c['concurrency']}, batch={c['batch_size']}, db={c['database']}, "
        f"temporal dev server {c['temporal_store']}, overdue share {c['overdue_share']:.0%}, "
        f"{c['cpus']} CPUs ({c['machine_busy_pct_before']:.0f}% busy before start)"
    )
    head = f"{'':44} {'seconds':>8} {'per s':>8} {'first tasks done s':>19} {'machine busy':>12}"
    print(head)
    print("-" * len(head))
    print(
        f"{'bare: N BareInvoice starts (baseline)':44} {bare['starter_wall_s']:8.1f} "
        f"{bare['starts_per_s']:8.0f} {bare['first_tasks_done_s']:19.1f} "
        f"{bare['machine_busy_pct']:11.0f}%"
    )
    print(
        f"{'db only: arflow import, Temporal down':44} {db['wall_s']:8.1f} {db['rows_per_s']:8.0f}"
    )
    print(
        f"{'full: arflow import invoices':44} {full['wall_s']:8.1f} {full['rows_per_s']:8.0f} "
        f"{full['first_tasks_done_s']:19.1f} {full['machine_busy_pct']:11.0f}%"
    )
    if "rerun" in full:
        rr = full["rerun"]
        rate = c["n"] / rr["wall_s"]
        print(f"{'re-run: same file, all unchanged':44} {rr['wall_s']:8.1f} {rate:8.0f}")
    print("-" * len(head))
    print(f"ratio import / bare starts: {r['ratio_import_over_bare']:.2f}")
    print(f"ratio first tasks done, import / bare: {r['ratio_first_tasks_over_bare']:.2f}")
    print(
        f"the command's own elapsed: {full['command_elapsed_s']:.1f} s full, "
        f"{db['command_elapsed_s']:.1f} s db only (without interpreter start-up); "
        f"customers import {full['customers_wall_s']:.1f} s"
    )
    for name, phase in (("bare", bare), ("full", full)):
        print(
            f"{name}: every first task confirmed by a describe() sweep at "
            f"{phase['first_tasks_checked_s']:.1f} s ({phase['first_sweep_stragglers']} "
            "still pending at the first sweep)"
        )
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in phase["cpu_s"].items())
        print(f"CPU seconds, {name}: {cpu}")
    print(
        f"target: {c['n']} invoices imported and started in < 120 s: "
        f"{'met' if full['wall_s'] < 120 else 'NOT met'} ({full['wall_s']:.1f} s)"
    )


# -- helper processes: the bare starter and the bare worker ---------------------------------


async def bare_start(address: str, task_queue: str, prefix: str, n: int, concurrency: int) -> None:
    client = await Client.connect(address)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await client.start_workflow("BareInvoice", i, id=f"{prefix}{i}", task_queue=task_queue)

    await asyncio.gather(*(one(i) for i in range(n)))


async def bare_worker(address: str, task_queue: str) -> None:
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from bench.lifecycle import BareInvoice

    client = await Client.connect(address)
    restrictions = SandboxRestrictions.default.with_passthrough_modules("bench")
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareInvoice],
        workflow_runner=SandboxedWorkflowRunner(restrictions=restrictions),
    )
    print("bare worker polling", flush=True)
    await worker.run()


# -- entry point -----------------------------------------------------------------------------


async def amain(opts: Options) -> dict[str, Any]:
    return await run_bench(Bench(opts))


async def run_bench(bench: Bench) -> dict[str, Any]:
    """``bench.run()``, then its cleanups on every exit path and its temp dir removed (on a
    failure the logs stay, the databases and stores do not: at 100,000 they are large)."""
    keep = False
    try:
        return await bench.run()
    except Exception:
        keep = True
        print(f"logs kept in {bench.tmp}", file=sys.stderr)
        raise
    finally:
        for cleanup in reversed(bench.cleanups):
            try:
                res = cleanup()
                if asyncio.iscoroutine(res):
                    await res
            except Exception:  # noqa: BLE001 - keep cleaning up
                traceback.print_exc()
        if keep:
            for p in bench.tmp.glob("*.db*"):
                p.unlink(missing_ok=True)
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv

    def body() -> int:
        if args[:1] == ["--bare-start"]:
            address, tq, prefix, n, concurrency = args[1:6]
            asyncio.run(bare_start(address, tq, prefix, int(n), int(concurrency)))
        elif args[:1] == ["--bare-worker"]:
            asyncio.run(bare_worker(args[1], args[2]))
        else:
            opts = parse_args(args)
            report = asyncio.run(amain(opts))
            print_report(report)
            write_json(opts.json_path, report)
        return 0

    exit_with(body)


if __name__ == "__main__":
    main()
