"""100,000 open invoices on one box: the bulk import's live workflows, and what they cost.

One run, on the dev server's file store as ``arflow run`` starts it (``--db-filename`` with the
WAL pragmas ``FILE_STORE_ARGS`` of arflow/cli.py). The machinery is bench/import_10k.py's
(``Bench``: files, databases, processes, the first-task wait); this adds the memory and size
measurements:

1. **bare baseline** (``--bare-n``, default min(n, 10,000)): N ``BareInvoice`` starts on a dev
   server of its own (same file-store settings, shut down and deleted afterwards so its
   workflows do not count in the store measured below).
2. **import**: a fresh dev server and database, ``worker.py`` running (sticky cache and
   workflow-task concurrency from ``--max-cached-workflows`` / ``--max-concurrent-workflow-tasks``
   or the ``ARFLOW_WORKER_*`` defaults), ``arflow import customers`` (n/5) then ``arflow import
   invoices`` of n rows, due on days drawn evenly from ``--due-from`` .. ``--due-from + 89``
   (default 5..94, today being the UTC date: every invoice open and not yet due, and the
   default policy's first step, 3 days before the due date at its send time in the customer's
   zone, still in the future even in UTC+13 (Pacific/Tongatapu is one of the zones), so every
   workflow is asleep on a timer after its first task and no reminder is sent during the run;
   with 4, measured, Tongatapu's customers due on day 4 got their first reminder at once).
   Then the wait until every invoice workflow has completed its first workflow task (backlog
   empty, then a ``describe()`` sweep).
3. **at rest** (``--rest`` seconds, default 60): nothing happens; the worker holds its cache.

All along, a thread samples VmRSS of the worker and the dev server every ``--sample-seconds``
(/proc/<pid>/status); VmHWM gives the kernel's own peak. At the end: open workflows
(``count_workflows``), the app database's size (SQLite file + -wal, or on PostgreSQL the
schema's tables with ``pg_total_relation_size`` and the whole database's ``pg_database_size``)
and the Temporal store's (the --db-filename file + -wal + -shm).

Run from the project root::

    .venv/bin/python -m bench.open_100k --n 2000                 # quick check, a few minutes
    .venv/bin/python -m bench.open_100k                          # 100,000 (20-40 min on 2 cores)
    .venv/bin/python -m bench.open_100k --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.open_100k --n 2000 --max-cached-workflows 200
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import import_10k
from bench.entry import exit_with, write_json
from bench.import_10k import Bench, machine_ticks, run_bench, write_files

MIB = 1024 * 1024


@dataclass
class Options:
    n: int
    bare_n: int
    due_from: int
    rest_s: float
    sample_s: float
    max_cached_workflows: int | None
    max_concurrent_workflow_tasks: int | None
    json_path: str | None
    base: import_10k.Options


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.open_100k",
        description="N open invoices through the bulk import: worker RSS, store sizes.",
    )
    p.add_argument("--n", type=int, default=100_000, help="invoices (default 100000)")
    p.add_argument("--customers", type=int, default=0, help="customers (default n/5)")
    p.add_argument(
        "--bare-n", type=int, default=0, help="bare starts of the baseline (default min(n, 10000))"
    )
    p.add_argument("--concurrency", type=int, default=32, help="starts in flight (default 32)")
    p.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    p.add_argument(
        "--database-url",
        default=None,
        help="default: a fresh SQLite file in a temp dir; postgresql:// gets a throwaway schema",
    )
    p.add_argument(
        "--due-from",
        type=int,
        default=5,
        help="first due day relative to today (UTC); due dates spread evenly over 90 days "
        "from it (default 5: all in the future, first reminders not yet due in any zone)",
    )
    p.add_argument("--rest", type=float, default=60.0, help="seconds at rest after the load")
    p.add_argument("--sample-seconds", type=float, default=2.0, help="RSS sampling interval")
    p.add_argument("--max-cached-workflows", type=int, default=None, help="worker sticky cache")
    p.add_argument(
        "--max-concurrent-workflow-tasks", type=int, default=None, help="worker task slots"
    )
    p.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    a = p.parse_args(argv)
    if a.n < 1 or a.concurrency < 1 or a.bare_n < 0:
        p.error("--n and --concurrency must be >= 1")
    base = import_10k.Options(
        n=a.n,
        customers=a.customers or max(1, a.n // 5),
        concurrency=a.concurrency,
        batch_size=a.batch_size,
        database_url=a.database_url,
        db_file_store=True,
        plain_file_store=False,
        overdue=0.0,
        rerun=False,
        json_path=None,
    )
    return Options(
        n=a.n,
        bare_n=a.bare_n or min(a.n, 10_000),
        due_from=a.due_from,
        rest_s=a.rest,
        sample_s=a.sample_seconds,
        max_cached_workflows=a.max_cached_workflows,
        max_concurrent_workflow_tasks=a.max_concurrent_workflow_tasks,
        json_path=a.json_path,
        base=base,
    )


# -- memory and sizes --------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """VmRSS of named processes every ``interval`` seconds, in a thread of its own (the event
    loop may be busy): a list of (seconds since start, {name: KiB})."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.t0 = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def loop(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()

    def sample(self) -> dict[str, int]:
        row = {name: status_kib(pid, "VmRSS") for name, pid in list(self.pids.items())}
        self.samples.append((self.now(), row))
        return row

    def peak(self, name: str, since: float = 0.0, until: float = float("inf")) -> int:
        return max((r.get(name, 0) for t, r in self.samples if since <= t <= until), default=0)


def file_sizes(path: Path) -> dict[str, int]:
    """Bytes of a SQLite file and its -wal and -shm (those present)."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            out[p.name] = p.stat().st_size
    return out


def database_sizes(url: str, schema: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        files = file_sizes(Path(url.removeprefix("sqlite:///")))
        return {"kind": "sqlite", "files": files, "total_bytes": sum(files.values())}
    from arflow.db import normalize_url

    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select c.relname, pg_total_relation_size(c.oid) from pg_class c "
                "join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = :s and c.relkind in ('r', 'p') order by 2 desc"
            ),
            {"s": schema},
        ).all()
        whole = conn.execute(sa.text("select pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    tables = {name: int(size) for name, size in rows}
    return {
        "kind": "postgresql",
        "schema_tables_bytes": tables,
        "total_bytes": sum(tables.values()),
        "pg_database_size_bytes": int(whole),
    }


# -- the bench ---------------------------------------------------------------------------------


class OpenBench(Bench):
    """import_10k's Bench with the worker's settings in its environment and its memory and
    the dev server's sampled from the moment they start."""

    def __init__(self, opts: Options) -> None:
        super().__init__(opts.base)
        self.o = opts
        self.sampler = Sampler(opts.sample_s)
        self.worker_ready_at = 0.0
        self.worker_idle_kib = 0
        self.env_url = ""
        self.empty_db_bytes = 0

    def env(self, url: str, address: str, task_queue: str) -> dict[str, str]:
        env = super().env(url, address, task_queue) | {"ARFLOW_WORKER_METRICS_PORT": "0"}
        if self.o.max_cached_workflows is not None:
            env["ARFLOW_WORKER_MAX_CACHED_WORKFLOWS"] = str(self.o.max_cached_workflows)
        if self.o.max_concurrent_workflow_tasks is not None:
            env["ARFLOW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS"] = str(
                self.o.max_concurrent_workflow_tasks
            )
        return env

    def spawn_worker(self, args: list[str], env: dict[str, str], name: str) -> Any:
        proc = super().spawn_worker(args, env, name)
        if name == "worker":  # worker.py, not the baseline's bare worker
            self.sampler.pids["worker"] = proc.pid
        return proc

    async def wait_ready(self, proc: Any, name: str, words: str) -> None:
        await super().wait_ready(proc, name, words)
        if name == "worker":
            self.worker_ready_at = self.sampler.now()
            self.worker_idle_kib = self.sampler.sample()["worker"]

    async def run(self) -> dict[str, Any]:
        say = functools.partial(print, file=sys.stderr, flush=True)
        b0 = machine_ticks()
        await asyncio.sleep(1.0)
        b1 = machine_ticks()
        busy_before = 100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        load_before = os.getloadavg()
        due = (self.o.due_from, self.o.due_from + 89)
        customers, invoices = write_files(self.tmp, self.opts, due_days=due)

        say(f"baseline: {self.o.bare_n} bare workflow starts on a dev server of its own ...")
        base_store = self.tmp / "bare-temporal.db"
        env = await self.start_server(base_store)
        try:
            bare = await self.bare(env.client, self.o.bare_n)
        finally:
            await env.shutdown()
        for p in file_sizes(base_store):
            (self.tmp / p).unlink()
        say(
            f"  {bare['starts_per_s']:.0f} starts/s, first tasks done at "
            f"{bare['first_tasks_done_s']:.1f} s"
        )

        store = self.tmp / "temporal.db"
        env = await self.start_server(store)
        empty_store = sum(file_sizes(store).values())
        self.cleanups.append(env.shutdown)
        self.sampler.pids["dev server"] = self.server
        self.sampler.thread.start()
        self.cleanups.append(self.sampler.stopped.set)
        say(f"import: {self.o.n} invoices, {self.opts.customers} customers ...")
        full = await self.full(env.client, customers, invoices)
        loaded_at = self.sampler.now()
        say(
            f"  imported in {full['wall_s']:.1f} s ({full['rows_per_s']:.0f}/s), first tasks "
            f"done at {full['first_tasks_done_s']:.1f} s, checked at "
            f"{full['first_tasks_checked_s']:.1f} s; {self.o.rest_s:.0f} s at rest ..."
        )
        load_loaded = os.getloadavg()
        await asyncio.sleep(self.o.rest_s)
        rest = self.sampler.sample()
        worker_pid, server = self.sampler.pids["worker"], self.server
        hwm = {"worker": status_kib(worker_pid, "VmHWM"), "dev server": status_kib(server, "VmHWM")}
        prefix = f"b{self.run_id}-invoice-"
        client = env.client
        open_invoices = (
            await client.count_workflows(
                f"WorkflowType = 'InvoiceWorkflow' AND ExecutionStatus = 'Running' "
                f"AND WorkflowId STARTS_WITH '{prefix}'"
            )
        ).count
        running = (await client.count_workflows("ExecutionStatus = 'Running'")).count
        sample_wf = await client.get_workflow_handle(f"{prefix}1").describe()
        url = self.env_url
        from arflow.db import make_engine

        engine = make_engine(url)
        with engine.connect() as conn:
            outbox = conn.execute(sa.text("select count(*) from outbox")).scalar_one()
        engine.dispose()
        sizes = {
            "database": database_sizes(url, f"arflow_bench_{self.run_id}_full")
            | {"empty_bytes": self.empty_db_bytes},
            "temporal_store": {
                "files": file_sizes(store),
                "total_bytes": sum(file_sizes(store).values()),
                "empty_bytes": empty_store,
            },
        }
        timeline = [
            {"t_s": round(t, 1), **{f"{k}_mib": round(v / 1024, 1) for k, v in row.items()}}
            for t, row in self.sampler.samples
        ]
        return {
            "config": {
                "n": self.o.n,
                "customers": self.opts.customers,
                "bare_n": self.o.bare_n,
                "concurrency": self.opts.concurrency,
                "batch_size": self.opts.batch_size,
                "due_days": list(due),
                "database": "sqlite" if url.startswith("sqlite") else "postgresql",
                "temporal_store": "file (--db-filename, FILE_STORE_ARGS)",
                "max_cached_workflows": self.o.max_cached_workflows or "default",
                "max_concurrent_workflow_tasks": self.o.max_concurrent_workflow_tasks or "default",
                "rest_s": self.o.rest_s,
                "cpus": os.cpu_count(),
                "machine_busy_pct_before": busy_before,
                "loadavg_before": load_before,
                "loadavg_after_load": load_loaded,
                "loadavg_end": os.getloadavg(),
            },
            "bare": bare,
            "full": full,
            "ratio_import_rate_over_bare_rate": full["rows_per_s"] / bare["starts_per_s"],
            "memory_mib": {
                "worker_idle": self.worker_idle_kib / 1024,
                "worker_peak_sampled": self.sampler.peak("worker") / 1024,
                "worker_peak_hwm": hwm["worker"] / 1024,
                "worker_rest": rest["worker"] / 1024,
                "dev_server_peak_sampled": self.sampler.peak("dev server") / 1024,
                "dev_server_peak_hwm": hwm["dev server"] / 1024,
                "dev_server_rest": rest["dev server"] / 1024,
            },
            "loaded_at_s": loaded_at,
            "worker_ready_at_s": self.worker_ready_at,
            "open_invoice_workflows": open_invoices,
            "running_workflows": running,
            "history_events_per_invoice": sample_wf.history_length,
            "outbox_rows": int(outbox),
            "sizes": sizes,
            "rss_timeline": timeline,
        }

    def database(self, name: str) -> str:
        url = super().database(name)
        if name == "full":
            self.env_url = url
            self.empty_db_bytes = database_sizes(url, f"arflow_bench_{self.run_id}_full")[
                "total_bytes"
            ]
        return url


def mib(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def print_report(r: dict[str, Any]) -> None:
    c, bare, full, m = r["config"], r["bare"], r["full"], r["memory_mib"]
    n = c["n"]
    print()
    print(
        f"open invoices benchmark: n={n} ({c['customers']} customers), due in days "
        f"{c['due_days'][0]}..{c['due_days'][1]}, db={c['database']}, dev server "
        f"{c['temporal_store']}, concurrency={c['concurrency']}, batch={c['batch_size']}, "
        f"sticky cache {c['max_cached_workflows']}, workflow task slots "
        f"{c['max_concurrent_workflow_tasks']}, {c['cpus']} CPUs"
    )
    la = " / ".join(
        f"{k.removeprefix('loadavg_')} {v[0]:.2f}" for k, v in c.items() if k.startswith("loadavg")
    )
    print(f"load (1-min average): {la}; {c['machine_busy_pct_before']:.0f}% busy before start")
    print(
        f"baseline: {bare['n']} bare starts in {bare['starter_wall_s']:.1f} s "
        f"({bare['starts_per_s']:.0f}/s), first tasks done at {bare['first_tasks_done_s']:.1f} s"
    )
    print(
        f"import: {n} invoices in {full['wall_s']:.1f} s ({full['rows_per_s']:.0f}/s; "
        f"ratio to bare starts/s {r['ratio_import_rate_over_bare_rate']:.2f}); customers "
        f"{full['customers_wall_s']:.1f} s; machine {full['machine_busy_pct']:.0f}% busy"
    )
    print(
        f"every first workflow task done at {full['first_tasks_done_s']:.1f} s after the "
        f"import started (confirmed by a describe() sweep at {full['first_tasks_checked_s']:.1f}"
        f" s, {full['first_sweep_stragglers']} pending at its first pass)"
    )
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in full["cpu_s"].items())
    print(f"CPU seconds during the import: {cpu}")
    print(
        f"worker RSS: idle {m['worker_idle']:.0f} MiB, peak {m['worker_peak_sampled']:.0f} MiB "
        f"sampled ({m['worker_peak_hwm']:.0f} MiB VmHWM), at rest {m['worker_rest']:.0f} MiB "
        f"after {c['rest_s']:.0f} s"
    )
    print(
        f"dev server RSS: peak {m['dev_server_peak_sampled']:.0f} MiB sampled "
        f"({m['dev_server_peak_hwm']:.0f} MiB VmHWM), at rest {m['dev_server_rest']:.0f} MiB"
    )
    print(
        f"open invoice workflows: {r['open_invoice_workflows']} (running in the namespace: "
        f"{r['running_workflows']}); history events per invoice: "
        f"{r['history_events_per_invoice']}; messages in the outbox (reminders sent during "
        f"the run): {r['outbox_rows']}"
    )
    db, ts = r["sizes"]["database"], r["sizes"]["temporal_store"]
    if db["kind"] == "sqlite":
        files = ", ".join(f"{k} {mib(v)}" for k, v in db["files"].items())
        print(f"database (SQLite): {mib(db['total_bytes'])} ({files})")
    else:
        top = ", ".join(f"{k} {mib(v)}" for k, v in list(db["schema_tables_bytes"].items())[:5])
        print(
            f"database (PostgreSQL schema tables): {mib(db['total_bytes'])} (largest: {top}); "
            f"pg_database_size of the whole database {mib(db['pg_database_size_bytes'])}"
        )
    files = ", ".join(f"{k} {mib(v)}" for k, v in ts["files"].items())
    print(f"Temporal store: {mib(ts['total_bytes'])} ({files})")
    print(
        f"empty, before the import: database {mib(db['empty_bytes'])} (migrated), Temporal "
        f"store {mib(ts['empty_bytes'])} (fresh dev server)"
    )
    print(
        f"per open invoice, growth over empty: database "
        f"{(db['total_bytes'] - db['empty_bytes']) / n / 1024:.1f} KiB, Temporal store "
        f"{(ts['total_bytes'] - ts['empty_bytes']) / n / 1024:.1f} KiB"
    )
    peak = max(m["worker_peak_sampled"], m["worker_peak_hwm"])
    print(f"target worker RSS < 1 GiB: {'met' if peak < 1024 else 'NOT met'} ({peak:.0f} MiB)")
    print("worker / dev server RSS (MiB) over time, s since the bench started:")
    step = max(1, len(r["rss_timeline"]) // 40)
    for row in r["rss_timeline"][::step]:
        print(
            f"  {row['t_s']:8.1f}  worker {row.get('worker_mib', 0):7.1f}  "
            f"dev server {row.get('dev server_mib', 0):7.1f}"
        )


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        opts = parse_args(argv)
        report = asyncio.run(run_bench(OpenBench(opts)))
        print_report(report)
        write_json(opts.json_path, report)
        return 0

    exit_with(body)


if __name__ == "__main__":
    main()
