"""Morning burst benchmark (issue 19): N reminders due at the same instant, against N bare
timers firing on the same server.

The deployment ``arflow run`` starts (``bench/storm.py``'s ``Deployment``: the Temporal dev
server on its file store with ``FILE_STORE_ARGS``, one ``worker.py`` process, one uvicorn API
process) on a fresh database; then, one after the other:

1. **setup**, both at once: a worker process of its own for ``BareTimer`` (below: sleep until
   one instant T2, then one local activity that appends the wall-clock time to a file, as the
   reminder's send is a local activity that writes its row) and N of them started from this
   process, 32 in flight; and a policy through ``POST /v1/policies`` whose only step is at
   ``PT0S`` with nothing that could move it (no ``send_at``, no contact window, no weekend or
   holiday skipping, no daily cap, no consolidation), then N invoices through the real bulk
   import (``arflow import customers`` and ``arflow import invoices``, processes of their
   own, as bench/import_10k.py runs them), all with ``due_at`` = T and that policy. Each side
   waits until every workflow has completed its first workflow task (its timer is set).
2. **bare burst** (the baseline) at T2: watched until every timer has recorded (at most
   until a second before T; the bare worker is stopped then).
3. **reminders' burst** at T: watched until the ``outbox`` table has N rows (the default
   channel: the row is the message).

T2 is a whole second ``--lead`` after the setup starts (default 40 s + 70 ms per invoice) and
T ``--gap`` after T2 (default 30 s + 30 ms per invoice): the slack before each instant is
printed, and a setup that ran into its instant is flagged.

Lateness of a reminder = its outbox row's ``sent_at`` (set by the send activity in the
transaction that records it) minus T; ``created_at`` (the workflow's clock when it decided to
send, ``workflow.now()``) minus T is the engine's share. Lateness of a bare timer = the time
its activity recorded minus T2. Reported for each: all recorded?, until the last one, p50 /
p99 / max, throughput, CPU seconds of each process and how busy the machine was during the
burst, the worker's resident memory (peak from /proc VmHWM, and the largest sample during the
burst), ``uptime`` at the start, at each instant and at the end; and the ratios
reminders / bare. Target: all N recorded within 5 minutes of T.

Run from the project root::

    .venv/bin/python -m bench.morning_burst                     # n=10,000, fresh SQLite file
    .venv/bin/python -m bench.morning_burst --n 200             # a quick check (< 3 min)
    .venv/bin/python -m bench.morning_burst \\
        --database-url postgresql://postgres@127.0.0.1:5432/test  # a throwaway schema
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import argparse
    import asyncio
    import csv
    import math
    import os
    import subprocess
    import sys
    import threading
    import time
    from collections.abc import Callable, Sequence
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import dataclass
    from datetime import UTC, datetime
    from pathlib import Path
    from typing import Any

    import httpx
    from temporalio import activity
    from temporalio.client import Client

    from bench.entry import exit_with, write_json
    from bench.storm import Deployment
    from bench.storm import Options as DeploymentOptions

TARGET_S = 300.0
AMOUNT_MINOR = 125_000
STARTS_IN_FLIGHT = 32
RECORD_ACTIVITY = "bare_record"


# -- the baseline: a bare timer and a trivial local activity that records the time -------------


@workflow.defn(name="BareTimer")
class BareTimer:
    """Sleep until the instant given, then record the time once (a local activity)."""

    @workflow.run
    async def run(self, at: str) -> float:
        wait = datetime.fromisoformat(at) - workflow.now()
        await workflow.sleep(max(wait, timedelta(milliseconds=1)))
        result: float = await workflow.execute_local_activity(
            RECORD_ACTIVITY,
            workflow.info().workflow_id,
            start_to_close_timeout=timedelta(seconds=10),
        )
        return result


class Recorder:
    """``bare_record``: appends ``workflow-id time`` to a file, one line per call."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", buffering=1)
        self.lock = threading.Lock()

    @activity.defn(name=RECORD_ACTIVITY)
    def record(self, workflow_id: str) -> float:
        now = time.time()
        with self.lock:
            self.file.write(f"{workflow_id} {now:.6f}\n")
        return now


async def bare_worker(address: str, task_queue: str, record_path: str) -> None:
    """The baseline's worker: the arflow worker's activity threads and limits (a local
    activity runs in the same executor), the SDK's defaults otherwise."""
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from activities.worker import ACTIVITY_THREADS

    client = await Client.connect(address)
    restrictions = SandboxRestrictions.default.with_passthrough_modules("bench")
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareTimer],
        activities=[Recorder(Path(record_path)).record],
        activity_executor=ThreadPoolExecutor(ACTIVITY_THREADS),
        max_concurrent_activities=ACTIVITY_THREADS,
        workflow_runner=SandboxedWorkflowRunner(restrictions=restrictions),
    )
    print("bare worker polling", flush=True)
    await worker.run()


# -- options -----------------------------------------------------------------------------------


@dataclass
class Options:
    n: int
    database_url: str | None
    lead: float | None
    gap: float | None
    timeout: float
    json_path: str | None
    py_spy: str | None

    def lead_s(self) -> float:
        return self.lead if self.lead is not None else 40 + 0.07 * self.n

    def gap_s(self) -> float:
        return self.gap if self.gap is not None else 30 + 0.03 * self.n


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.morning_burst",
        description="N reminders due at one instant vs N bare timers, on arflow run's pieces.",
    )
    p.add_argument("--n", type=int, default=10_000, help="invoices (and bare timers)")
    p.add_argument(
        "--database-url",
        default=None,
        help="default: a fresh SQLite file; postgresql://... gets a throwaway schema",
    )
    p.add_argument(
        "--lead",
        type=float,
        default=None,
        help="seconds from the start of the setup to the bare timers' instant T2 "
        "(default 40 + 0.07 n)",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=None,
        help="seconds from T2 to the reminders' instant T (default 30 + 0.03 n)",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds after an instant to wait")
    p.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    p.add_argument(
        "--py-spy",
        metavar="DIR",
        default=None,
        help="py-spy of the worker and the API during the reminders' burst (DIR/worker.txt)",
    )
    a = p.parse_args(argv)
    if a.n < 1:
        p.error("--n must be >= 1")
    return Options(a.n, a.database_url, a.lead, a.gap, a.timeout, a.json_path, a.py_spy)


# -- measurement -------------------------------------------------------------------------------


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def memory_kib(pid: int, key: str) -> int:
    """``VmRSS`` or ``VmHWM`` (the peak) of a live process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def lateness(values: list[float]) -> dict[str, float]:
    from bench.lifecycle import pct

    return {
        "p50_s": pct(values, 0.5),
        "p99_s": pct(values, 0.99),
        "max_s": max(values),
        "min_s": min(values),
    }


class BurstDeployment(Deployment):
    """The storm bench's deployment; on PostgreSQL in a throwaway schema (bench/databases.py)."""

    def database(self) -> str:
        if self.opts.database_url is None or self.opts.database_url.startswith("sqlite"):
            return super().database()
        from arflow.db import make_engine
        from arflow.migrate import upgrade
        from bench.databases import throwaway_schema

        self.label = "postgresql"
        url, drop = throwaway_schema(self.opts.database_url, f"arflow_burst_{self.run_id}")
        self.cleanups.append(drop)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.dep = BurstDeployment(
            DeploymentOptions(
                invoices=0,
                concurrency=1,
                baseline_seconds=0,
                database_url=opts.database_url,
                json_path=None,
                timeout=opts.timeout,
                py_spy=None,
            )
        )
        self.procs: list[subprocess.Popen[Any]] = []
        self.uptimes: dict[str, str] = {}
        self.records = self.dep.tmp / "bare-records.txt"
        self.bare_ids = [f"bare-{self.dep.run_id}-{i}" for i in range(opts.n)]
        self.bare_worker: subprocess.Popen[Any] | None = None
        self.invoice_ids: list[int] = []

    def say(self, text: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)

    async def watch(
        self,
        at: datetime,
        count: Callable[[], int],
        pids: dict[str, int],
        worker: str,
        until: float | None = None,
    ) -> dict[str, Any]:
        """From just before ``at`` until ``count()`` reaches n (or the timeout, or ``until``):
        CPU seconds of each process, how busy the machine was, the worker's largest RSS
        sample."""
        from bench.import_10k import machine_ticks, proc_cpu

        slack = at.timestamp() - time.time()
        await asyncio.sleep(max(0.0, slack - 1.0))
        self.uptimes[f"at {worker}'s instant"] = uptime()
        cpu0 = {name: proc_cpu(pid) for name, pid in pids.items()}
        m0 = machine_ticks()
        rss_max = 0
        seen, last_change = 0, time.time()
        deadline = min(at.timestamp() + self.opts.timeout, until or math.inf)
        while time.time() < deadline:
            rss_max = max(rss_max, memory_kib(pids[worker], "VmRSS"))
            now_seen = await asyncio.to_thread(count)
            if now_seen != seen:
                seen, last_change = now_seen, time.time()
            if seen >= self.opts.n:
                break
            await asyncio.sleep(0.5)
        m1 = machine_ticks()
        cpu = {name: round(proc_cpu(pid) - cpu0[name], 1) for name, pid in pids.items()}
        return {
            "slack_s": slack,
            "counted": seen,
            "watch_wall_s": last_change - at.timestamp(),
            "cpu_s": cpu,
            "machine_busy_pct": 100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
            "worker_rss_max_mib": rss_max / 1024,
        }

    # -- setup: the bare timers and the invoices, started together --------------------------

    async def start_bare(self, client: Client, address: str, at: datetime) -> dict[str, Any]:
        """The bare worker, then N ``BareTimer`` workflows due at ``at``, 32 starts in flight;
        until each has completed its first workflow task (its timer set)."""
        from bench.import_10k import first_tasks_done

        n = self.opts.n
        tq = f"burst-bare-{self.dep.run_id}"
        self.records.touch()
        log_path = self.dep.tmp / "bare-worker.log"
        log = log_path.open("w")
        self.dep.cleanups.append(log.close)
        args = [sys.executable, "-m", "bench.morning_burst", "--bare-worker", address, tq]
        self.bare_worker = subprocess.Popen(
            [*args, str(self.records)], env=self.dep.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(self.bare_worker)
        deadline = time.monotonic() + 60
        while "bare worker polling" not in log_path.read_text():
            if self.bare_worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare worker did not start:\n{log_path.read_text()}")
            await asyncio.sleep(0.1)
        self.say(f"bare: starting {n} BareTimer workflows, all due at {at:%H:%M:%S}")
        t0 = time.perf_counter()
        gate = asyncio.Semaphore(STARTS_IN_FLIGHT)

        async def start(wid: str) -> None:
            async with gate:
                await client.start_workflow("BareTimer", at.isoformat(), id=wid, task_queue=tq)

        await asyncio.gather(*(start(w) for w in self.bare_ids))
        started = time.perf_counter() - t0
        first, checked, _ = await first_tasks_done(client, tq, self.bare_ids, t0, lambda: None)
        self.say(
            f"bare: started in {started:.1f} s, first tasks done at {first:.1f} s (checked at "
            f"{checked:.1f} s), {at.timestamp() - time.time():.0f} s before the instant"
        )
        return {
            "setup_slack_s": at.timestamp() - time.time(),
            "start_wall_s": started,
            "first_tasks_done_s": first,
            "first_tasks_checked_s": checked,
        }

    def write_files(self, at: datetime, policy: str) -> tuple[Path, Path]:
        from bench.import_10k import ZONES

        n = self.opts.n
        customers = self.dep.tmp / "customers.csv"
        count = max(1, n // 5)
        with customers.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["external_id", "name", "email", "timezone", "locale", "segment"])
            for c in range(count):
                out.writerow(
                    [f"C-{c:06d}", f"Customer {c} Ltd", f"ap{c}@example.com", ZONES[c % 5]]
                    + ["en", "standard"]
                )
        invoices = self.dep.tmp / "invoices.csv"
        due = at.date()
        with invoices.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(
                ["external_id", "number", "customer_external_id", "currency", "amount_minor"]
                + ["issued_on", "due_date", "due_at", "policy_name"]
            )
            for i in range(n):
                out.writerow(
                    [f"INV-{i:06d}", f"B-{i:06d}", f"C-{i % count:06d}", "EUR", AMOUNT_MINOR]
                    + [(due - timedelta(days=30)).isoformat(), due.isoformat()]
                    + [at.isoformat(), policy]
                )
        return customers, invoices

    async def create_policy(self) -> str:
        """The burst's policy, through the API: one step at the due instant, nothing that
        could move it."""
        name = f"burst-{self.dep.run_id}"
        admin = {"Authorization": f"Bearer {self.dep.keys['admin']}"}
        async with httpx.AsyncClient(base_url=self.dep.api_url, timeout=60) as http:
            resp = await http.post(
                "/v1/policies",
                json={
                    "name": name,
                    "send_at": None,
                    "contact_window": None,
                    "skip_weekends": False,
                    "skip_holidays": False,
                    "max_messages_per_day": 0,
                    "consolidate": False,
                    "escalate_after": "P30D",
                    "steps": [{"key": "burst", "offset": "PT0S", "template": "reminder"}],
                },
                headers=admin,
            )
        if resp.status_code != 201:
            raise RuntimeError(f"POST /v1/policies: {resp.status_code} {resp.text}")
        return name

    async def import_invoices(self, client: Client, at: datetime, policy: str) -> dict[str, Any]:
        """``arflow import customers`` and ``arflow import invoices`` (processes of their own),
        every invoice due at ``at``; until each workflow has completed its first task."""
        from sqlmodel import Session, col, select

        from arflow.db import make_engine
        from bench.import_10k import first_tasks_done, run_process, table_values
        from models import Invoice

        n = self.opts.n
        customers, invoices = self.write_files(at, policy)
        env = self.dep.env | {"COLUMNS": "200"}
        cli = [sys.executable, "-m", "arflow.cli", "import"]
        self.say(f"reminders: importing {n} invoices, all due at {at:%H:%M:%S}")
        t0 = time.perf_counter()
        cust = await asyncio.to_thread(
            run_process, [*cli, "customers", str(customers)], env, self.dep.tmp / "customers.log"
        )
        if cust.status != 0:
            raise RuntimeError(f"customer import: exit {cust.status}\n{cust.output}")
        args = [*cli, "invoices", str(invoices), "--concurrency", str(STARTS_IN_FLIGHT)]
        run = await asyncio.to_thread(run_process, args, env, self.dep.tmp / "invoices.log")
        values = table_values(run.output)
        if run.status != 0 or values.get("workflows started") != str(n):
            raise RuntimeError(f"invoice import: exit {run.status}\n{run.output}")
        imported = time.perf_counter() - t0
        engine = make_engine(self.dep.url)
        with Session(engine) as session:
            self.invoice_ids = [
                i for i in session.exec(select(Invoice.id).order_by(col(Invoice.id))) if i
            ]
        engine.dispose()
        ids = [f"invoice-{i}" for i in self.invoice_ids]
        tq = self.dep.env["ARFLOW_TASK_QUEUE"]
        first, checked, _ = await first_tasks_done(client, tq, ids, t0, lambda: None)
        self.say(
            f"reminders: imported in {imported:.1f} s, first tasks done at {first:.1f} s "
            f"(checked at {checked:.1f} s), {at.timestamp() - time.time():.0f} s before the "
            "instant"
        )
        return {
            "setup_slack_s": at.timestamp() - time.time(),
            "import_wall_s": imported,
            "import_rows_per_s": n / run.wall_s,
            "first_tasks_done_s": first,
            "first_tasks_checked_s": checked,
        }

    # -- the bursts ------------------------------------------------------------------------------

    async def bare_burst(self, at: datetime, before: datetime) -> dict[str, Any]:
        """The bare timers' burst at ``at``, watched until all are recorded or a second before
        ``before`` (the reminders' instant): what is not recorded by then is not counted."""
        assert self.bare_worker is not None
        worker = self.bare_worker

        def count() -> int:
            with self.records.open() as f:
                return sum(1 for _ in f)

        pids = {"dev server": self.dep.pids["dev server"], "bare worker": worker.pid}
        burst = await self.watch(at, count, pids, "bare worker", before.timestamp() - 1)
        burst["worker_peak_rss_mib"] = memory_kib(worker.pid, "VmHWM") / 1024
        worker.terminate()
        times: dict[str, float] = {}
        for line in self.records.read_text().splitlines():
            wid, when = line.split()
            times.setdefault(wid, float(when))  # a retried activity records twice: the first
        late = [t - at.timestamp() for t in times.values()]
        return {
            "at": at.isoformat(),
            "recorded": len(times),
            "all_recorded": len(times) == self.opts.n and set(times) == set(self.bare_ids),
            "lateness": lateness(late) if late else {},
            "until_last_s": max(late) if late else float("nan"),
            "per_s": len(late) / max(late) if late and max(late) > 0 else float("nan"),
            **burst,
        }

    async def reminder_burst(self, at: datetime) -> dict[str, Any]:
        from sqlmodel import Session, func, select

        from arflow.db import make_engine
        from models import InvoiceEvent, OutboxMessage

        n = self.opts.n
        engine = make_engine(self.dep.url)

        def count() -> int:
            with Session(engine) as session:
                return int(session.exec(select(func.count()).select_from(OutboxMessage)).one())

        early = count()
        if early:
            raise RuntimeError(f"{early} outbox rows before the instant: the policy moved")
        stop_spy = self.dep.record(self.opts.py_spy) if self.opts.py_spy else None
        burst = await self.watch(at, count, dict(self.dep.pids), "worker")
        if stop_spy is not None:
            stop_spy()
        burst["worker_peak_rss_mib"] = memory_kib(self.dep.pids["worker"], "VmHWM") / 1024
        with Session(engine) as session:
            rows = session.exec(
                select(
                    OutboxMessage.invoice_id,
                    OutboxMessage.status,
                    OutboxMessage.created_at,
                    OutboxMessage.sent_at,
                )
            ).all()
            events = session.exec(
                select(func.count())
                .select_from(InvoiceEvent)
                .where(InvoiceEvent.kind == "reminder_sent")
            ).one()
        engine.dispose()
        sent = [r for r in rows if r[1] == "sent" and r[3] is not None]
        late = [(r[3] - at).total_seconds() for r in sent]
        decided = [(r[2] - at).total_seconds() for r in sent]
        return {
            "at": at.isoformat(),
            "recorded": len(sent),
            "outbox_rows": len(rows),
            "reminder_sent_events": events,
            "all_recorded": len(sent) == n
            and len(rows) == n
            and {r[0] for r in rows} == set(self.invoice_ids)
            and events == n,
            "lateness": lateness(late) if late else {},
            "decided_lateness": lateness(decided) if decided else {},
            "until_last_s": max(late) if late else float("nan"),
            "per_s": len(late) / max(late) if late and max(late) > 0 else float("nan"),
            **burst,
        }

    async def run(self) -> dict[str, Any]:
        self.uptimes["start"] = uptime()
        self.say(f"starting the deployment (load: {self.uptimes['start']})")
        await asyncio.to_thread(self.dep.start)
        address = self.dep.env["ARFLOW_TEMPORAL_ADDRESS"]
        client = await Client.connect(address)
        policy = await self.create_policy()
        t2 = datetime.fromtimestamp(math.ceil(time.time() + self.opts.lead_s()), UTC)
        t = t2 + timedelta(seconds=math.ceil(self.opts.gap_s()))
        setup_bare, setup_reminders = await asyncio.gather(
            self.start_bare(client, address, t2), self.import_invoices(client, t, policy)
        )
        bare = setup_bare | await self.bare_burst(t2, t)
        self.say(
            f"bare: {bare['recorded']} recorded, the last {bare['until_last_s']:.1f} s after "
            "the instant"
        )
        reminders = setup_reminders | await self.reminder_burst(t)
        self.say(
            f"reminders: {reminders['recorded']} recorded, the last "
            f"{reminders['until_last_s']:.1f} s after the instant"
        )
        self.uptimes["end"] = uptime()
        ratio = {
            key: reminders["lateness"][key] / bare["lateness"][key]
            for key in ("p50_s", "p99_s", "max_s")
            if reminders["lateness"] and bare["lateness"] and bare["lateness"][key] > 0
        }
        return {
            "config": {
                "n": self.opts.n,
                "database": self.dep.label,
                "temporal_store": "file store with FILE_STORE_ARGS (as arflow run)",
                "lead_s": self.opts.lead_s(),
                "gap_s": self.opts.gap_s(),
                "cpus": os.cpu_count(),
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            "uptime": self.uptimes,
            "bare": bare,
            "reminders": reminders,
            "ratio_reminders_over_bare": ratio,
            "target_met": reminders["all_recorded"] and reminders["until_last_s"] < TARGET_S,
        }

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.dep.close()


def print_report(r: dict[str, Any]) -> None:
    c, bare, rem = r["config"], r["bare"], r["reminders"]
    print()
    print(
        f"morning burst: n={c['n']}, db={c['database']}, Temporal dev server {c['temporal_store']}"
        f", {c['cpus']} CPUs, {c['date']}"
    )
    for when, text in r["uptime"].items():
        print(f"  uptime {when}: {text}")
    head = (
        f"{'':26} {'recorded':>9} {'last s':>7} {'p50 s':>6} {'p99 s':>6} {'max s':>6} "
        f"{'per s':>6} {'slack s':>7} {'busy':>5} {'RSS MiB peak/burst':>19}"
    )
    print(head)
    print("-" * len(head))
    for name, phase in (("bare timers (baseline)", bare), ("reminders", rem)):
        late = phase["lateness"] or dict.fromkeys(("p50_s", "p99_s", "max_s"), float("nan"))
        print(
            f"{name:26} {phase['recorded']:>9} {phase['until_last_s']:7.1f} "
            f"{late['p50_s']:6.1f} {late['p99_s']:6.1f} {late['max_s']:6.1f} "
            f"{phase['per_s']:6.0f} {phase['setup_slack_s']:7.0f} "
            f"{phase['machine_busy_pct']:4.0f}% "
            f"{phase['worker_peak_rss_mib']:10.0f} /{phase['worker_rss_max_mib']:7.0f}"
        )
    print("-" * len(head))
    ratio = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in r["ratio_reminders_over_bare"].items())
    print(f"ratio reminders / bare lateness: {ratio}")
    if rem["decided_lateness"]:
        d = rem["decided_lateness"]
        print(
            f"reminders: the workflow decided to send (outbox created_at, workflow.now()) "
            f"p50 {d['p50_s']:.1f} s, p99 {d['p99_s']:.1f} s, max {d['max_s']:.1f} s after T"
        )
    print(
        f"setup: bare started in {bare['start_wall_s']:.1f} s, first tasks done at "
        f"{bare['first_tasks_done_s']:.1f} s; import {rem['import_wall_s']:.1f} s "
        f"({rem['import_rows_per_s']:.0f} rows/s), first tasks done at "
        f"{rem['first_tasks_done_s']:.1f} s (checked {rem['first_tasks_checked_s']:.1f} s)"
    )
    for name, phase in (("bare", bare), ("reminders", rem)):
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in phase["cpu_s"].items())
        print(f"CPU seconds during the {name} burst: {cpu}")
        if phase["setup_slack_s"] < 0:
            print(f"WARNING: the {name} setup was not over at its instant; its figures include it")
    if not bare["all_recorded"]:
        print("WARNING: not every bare timer was recorded before T: a lower bound; raise --gap")
    print(
        f"checks: bare all recorded {bare['all_recorded']}; reminders all recorded "
        f"{rem['all_recorded']} ({rem['outbox_rows']} outbox rows, "
        f"{rem['reminder_sent_events']} reminder_sent events)"
    )
    print(
        f"target: all {c['n']} reminders recorded within {TARGET_S:.0f} s of T: "
        f"{'met' if r['target_met'] else 'NOT met'} ({rem['until_last_s']:.1f} s)"
    )


async def amain(opts: Options) -> dict[str, Any]:
    bench = Bench(opts)
    try:
        return await bench.run()
    except Exception:
        print(bench.dep.log_tail(), file=sys.stderr)
        raise
    finally:
        bench.close()  # in the main thread: the deployment's stop sets signal handlers


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv

    def body() -> int:
        if args[:1] == ["--bare-worker"]:
            asyncio.run(bare_worker(args[1], args[2], args[3]))
            return 0
        opts = parse_args(args)
        report = asyncio.run(amain(opts))
        print_report(report)
        write_json(opts.json_path, report)
        return 0

    exit_with(body)


if __name__ == "__main__":
    main()
