"""Webhook storm benchmark (issue 16): 1,000 distinct payments in a burst, reads meanwhile,
with the API and the worker in processes of their own, as a deployment runs them.

``tests/faults/test_webhook_storm.py`` measures the same storm with the API, the worker and
the test on one event loop. Here ``arflow run``'s own pieces (``arflow.cli``) start the
Temporal dev server (file store, as ``arflow run``), one ``worker.py`` process and one uvicorn
API process on a fresh database; this process only sends requests, over real HTTP:

1. 200 invoices through ``POST /v1/invoices`` (amount 1,000.00 EUR, due in 30 days), then a
   wait until the worker and the dev server are idle (their first workflow tasks done).
2. **baseline**: a reader at a user's pace (``GET /v1/invoices?limit=50`` and
   ``GET /v1/invoices/{id}`` alternately, 50 ms between) for ``--baseline-seconds``.
3. **storm**: 1,000 distinct signed payment webhooks (5 per invoice, round by round, so no
   invoice's payments come together) with ``--concurrency`` in flight, the same reader running
   until all 1,000 payments are ``applied`` in the database.

The reader is a process of its own (its own interpreter and connection), so the sender's work
does not delay its clock. Checked afterwards: every response 200 ``accepted``, one
``payment_applied`` event per payment, every balance and status as the payments say.
Printed: one line with the figures, the storm p99 / baseline p99 ratio and whether p99 < 1 s.

Run from the project root::

    .venv/bin/python -m bench.storm                        # fresh SQLite file in a temp dir
    .venv/bin/python -m bench.storm --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
AMOUNT_MINOR = 100_000
PER_INVOICE = 5


@dataclass
class Options:
    invoices: int
    concurrency: int
    baseline_seconds: float
    database_url: str | None
    json_path: str | None
    timeout: float
    py_spy: str | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.storm",
        description="1,000 payment webhooks in a burst against a deployed API, reads meanwhile.",
    )
    p.add_argument("--invoices", type=int, default=200, help="invoices, 5 payments each")
    p.add_argument("--concurrency", type=int, default=32, help="webhooks in flight (default 32)")
    p.add_argument("--baseline-seconds", type=float, default=20.0, help="reads without a storm")
    p.add_argument(
        "--database-url",
        default=None,
        help="default: a fresh SQLite file; postgresql://.../db gets a fresh database beside "
        "db, dropped after",
    )
    p.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for applied")
    p.add_argument(
        "--py-spy",
        metavar="DIR",
        default=None,
        help="record the API and the worker with py-spy (in the venv) during the storm: "
        "DIR/api.txt and DIR/worker.txt, collapsed stacks by thread, idle time included",
    )
    a = p.parse_args(argv)
    if a.invoices < 1 or a.concurrency < 1:
        p.error("--invoices and --concurrency must be >= 1")
    return Options(
        a.invoices,
        a.concurrency,
        a.baseline_seconds,
        a.database_url,
        a.json_path,
        a.timeout,
        a.py_spy,
    )


# -- the reader: a process of its own ---------------------------------------------------------


def read_at_a_users_pace(
    base_url: str, key: str, ids: list[int], stop: Event, out: Connection
) -> None:
    """GET the list and one invoice alternately, 50 ms apart, until ``stop``; sends
    ``([(kind, seconds)], failures)`` over ``out``. Says ``"ready"`` after a first read."""
    latencies: list[tuple[str, float]] = []
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        http.get("/v1/invoices", params={"limit": 50}).raise_for_status()
        out.send("ready")
        n = 0
        while not stop.is_set():
            n += 1
            start = time.perf_counter()
            kind = "list" if n % 2 else "one"
            try:
                if kind == "list":
                    resp = http.get("/v1/invoices", params={"limit": 50})
                else:
                    resp = http.get(f"/v1/invoices/{ids[n % len(ids)]}")
                latencies.append((kind, time.perf_counter() - start))
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)
    out.send((latencies, failures))


class Reader:
    """The reader process, started and waited for; ``stop()`` returns its figures."""

    def __init__(self, base_url: str, key: str, ids: list[int]) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process running temporalio
        self.stop_event = ctx.Event()
        self.conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=read_at_a_users_pace,
            args=(base_url, key, ids, self.stop_event, child),
            daemon=True,
        )

    async def start(self) -> None:
        self.proc.start()
        if not await asyncio.to_thread(self.conn.poll, 60):
            raise RuntimeError("the reader did not start")
        assert self.conn.recv() == "ready"

    async def stop(self) -> tuple[list[tuple[str, float]], list[str]]:
        self.stop_event.set()
        if not await asyncio.to_thread(self.conn.poll, 120):
            raise RuntimeError("the reader did not report")
        latencies, failures = self.conn.recv()
        await asyncio.to_thread(self.proc.join, 10)
        return latencies, failures

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def pct(values: list[float], p: float) -> float:
    from bench.lifecycle import pct as interpolated

    return interpolated(values, p / 100)


def read_figures(reads: list[tuple[str, float]]) -> dict[str, Any]:
    """p50/p99/max of all reads, and p99/max of each kind (the list, one invoice)."""
    latencies = [s for _, s in reads]
    by_kind = {
        kind: {"p99_ms": 1000 * pct(ks, 99), "max_ms": 1000 * max(ks)}
        for kind in ("list", "one")
        if (ks := [s for k, s in reads if k == kind])
    }
    return {
        "reads": len(latencies),
        "p50_ms": 1000 * pct(latencies, 50),
        "p99_ms": 1000 * pct(latencies, 99),
        "max_ms": 1000 * max(latencies),
        "mean_ms": 1000 * statistics.fmean(latencies),
        "by_kind": by_kind,
    }


# -- the deployment: arflow run's pieces, on free ports ----------------------------------------


class Deployment:
    """Dev server (file store), worker and API as ``arflow run`` starts them, on a fresh
    database; ``close()`` stops them and removes the database on every way out."""

    def __init__(self, opts: Options) -> None:
        from arflow.cli import _Children
        from bench.lifecycle import API_KEYS, WEBHOOK_SECRET

        self.opts = opts
        self.keys = API_KEYS
        self.secret = WEBHOOK_SECRET
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix="arflow-storm-bench-"))
        self.children = _Children()
        self.cleanups: list[Callable[[], Any]] = []
        self.label = "sqlite"
        self.url = ""
        self.api_url = ""
        self.pids: dict[str, int] = {}
        self.env: dict[str, str] = {}  # the children's environment, once started

    def database(self) -> str:
        """A fresh, migrated database: a SQLite file, or a PostgreSQL database of its own."""
        import sqlalchemy as sa

        from arflow.db import make_engine, normalize_url
        from arflow.migrate import upgrade

        if self.opts.database_url is None or self.opts.database_url.startswith("sqlite"):
            url = f"sqlite:///{self.tmp / 'arflow.db'}"
        else:
            self.label = "postgresql"
            base = sa.make_url(normalize_url(self.opts.database_url))
            name = f"arflow_storm_{self.run_id}"
            admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'create database "{name}"'))

            def drop() -> None:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
                admin.dispose()

            self.cleanups.append(drop)
            url = base.set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url

    def start(self) -> None:
        from arflow.cli import _api_args, _temporal_args, _wait_for_http, _wait_for_temporal
        from arflow.db import make_engine
        from arflow.deployment import bind_temporal_store
        from arflow.ports import free_port

        self.url = self.database()
        data = self.tmp / "data"
        engine = make_engine(self.url)
        bind_temporal_store(engine, data)
        engine.dispose()
        temporal_port, ui_port, api_port = free_port(), free_port(), free_port()
        address = f"127.0.0.1:{temporal_port}"
        env = os.environ | {
            "ARFLOW_ENVIRONMENT": "test",
            "ARFLOW_DATABASE_URL": self.url,
            "ARFLOW_TEMPORAL_ADDRESS": address,
            "ARFLOW_TASK_QUEUE": f"storm-{self.run_id}",
            "ARFLOW_API_KEYS": ",".join(f"{k}:{r}" for r, k in self.keys.items()),
            "ARFLOW_WEBHOOK_SECRET": self.secret,
            "ARFLOW_DATA_DIR": str(data),
            "ARFLOW_WORKER_METRICS_PORT": "0",
            "PYTHONPATH": str(ROOT),
        }
        self.env = env
        log = (self.tmp / "children.log").open("ab")
        self.cleanups.append(log.close)
        server = self.children.start(
            "Temporal dev server", _temporal_args(temporal_port, ui_port, data), env, log
        )
        _wait_for_temporal(address, exited=self.children.exited)
        worker = self.children.start("worker", [sys.executable, str(ROOT / "worker.py")], env, log)
        self.api_url = f"http://127.0.0.1:{api_port}"
        api = self.children.start("API", _api_args("127.0.0.1", api_port), env, log)
        _wait_for_http(f"{self.api_url}/healthz", api, timeout=60)
        self.pids = {"dev server": server.pid, "worker": worker.pid, "API": api.pid}

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each child and of this process (the sender)."""
        from bench.import_10k import proc_cpu

        seconds = {name: proc_cpu(pid) for name, pid in self.pids.items()}
        return seconds | {"sender": time.process_time()}

    def record(self, folder: str) -> Callable[[], None]:
        """py-spy on the API and the worker until the returned function is called."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        spies = [
            subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
                + ["--idle", "--threads", "--format", "raw", "--rate", "50", "--output"]
                + [str(Path(folder) / f"{name.lower()}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in self.pids.items()
            if name in ("API", "worker")
        ]

        def stop() -> None:
            for spy in spies:
                if spy.poll() is None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            for spy in spies:
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    spy.kill()

        self.cleanups.append(stop)
        return stop

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the dev server, the worker and the API wrote."""
        log = self.tmp / "children.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self.children.stop()
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - keep cleaning up
                traceback.print_exc()
        shutil.rmtree(self.tmp, ignore_errors=True)


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 1) for name in before}


# -- the run ----------------------------------------------------------------------------------


class Storm:
    def __init__(self, opts: Options, dep: Deployment) -> None:
        from arflow.db import make_engine

        self.opts = opts
        self.dep = dep
        self.engine = make_engine(dep.url)
        self.readers: list[Reader] = []

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.dep.keys[role]}"}

    async def create_invoices(self, http: httpx.AsyncClient) -> list[int]:
        resp = await http.post(
            "/v1/customers",
            json={"external_id": "STORM-1", "name": "Storm Ltd", "email": "ap@storm.example.com"}
            | {"timezone": "UTC", "locale": "en"},
            headers=self.headers("specialist"),
        )
        resp.raise_for_status()
        customer = resp.json()["id"]
        gate = asyncio.Semaphore(self.opts.concurrency)
        today = date.today()

        async def one(i: int) -> int:
            body = {
                "external_id": f"STORM-{i:04d}",
                "number": f"S-{i:04d}",
                "customer_id": customer,
                "amount_minor": AMOUNT_MINOR,
                "currency": "EUR",
                "issued_on": today.isoformat(),
                "due_date": (today + timedelta(days=30)).isoformat(),
            }
            async with gate:
                r = await http.post("/v1/invoices", json=body, headers=self.headers("specialist"))
            if r.status_code != 201:
                raise RuntimeError(f"POST /v1/invoices: {r.status_code} {r.text}")
            return int(r.json()["id"])

        return list(await asyncio.gather(*(one(i) for i in range(self.opts.invoices))))

    async def settle(self, quiet: float = 0.05, limit: float = 120) -> float:
        """Until the worker and the dev server use less than ``quiet`` of a core for a second
        (the invoices' first workflow tasks are done); the seconds it took."""
        t0 = time.perf_counter()
        before = self.dep.cpu()
        while time.perf_counter() - t0 < limit:
            await asyncio.sleep(1)
            after = self.dep.cpu()
            if all(after[n] - before[n] < quiet for n in ("worker", "dev server")):
                break
            before = after
        return time.perf_counter() - t0

    async def reader(self, ids: list[int]) -> Reader:
        reader = Reader(self.dep.api_url, self.dep.keys["viewer"], ids)
        self.readers.append(reader)
        await reader.start()
        return reader

    def applied(self) -> int:
        from sqlmodel import Session, col, func, select

        from models import Payment

        with Session(self.engine) as s:
            stmt = select(func.count(col(Payment.id))).where(Payment.status == "applied")
            return int(s.exec(stmt).one())

    async def run(self) -> dict[str, Any]:
        from arflow.payments.signatures import sign

        async with httpx.AsyncClient(
            base_url=self.dep.api_url,
            timeout=120,
            limits=httpx.Limits(max_connections=self.opts.concurrency),
        ) as http:
            t0 = time.perf_counter()
            ids = await self.create_invoices(http)
            created_s = time.perf_counter() - t0
            settled_s = await self.settle()

            cpu0 = self.dep.cpu()
            reader = await self.reader(ids)
            await asyncio.sleep(self.opts.baseline_seconds)
            base_reads, base_failures = await reader.stop()
            cpu_base = cpu_used(cpu0, self.dep.cpu())

            # Every 4th invoice is paid in full by its five payments, the others by half.
            plan = {
                i: [AMOUNT_MINOR // PER_INVOICE if n % 4 == 0 else AMOUNT_MINOR // 10] * PER_INVOICE
                for n, i in enumerate(ids)
            }
            sends = [
                json.dumps(
                    {
                        "event_id": f"storm_{uuid.uuid4().hex}",
                        "invoice_id": i,
                        "amount_minor": amounts[k],
                        "currency": "EUR",
                        "paid_at": "2026-11-23T10:00:00Z",
                        "method": "card",
                    }
                ).encode()
                for k in range(PER_INVOICE)
                for i, amounts in plan.items()
            ]
            gate = asyncio.Semaphore(self.opts.concurrency)

            async def send(raw: bytes) -> httpx.Response:
                async with gate:
                    return await http.post(
                        "/v1/webhooks/payments",
                        content=raw,
                        headers={
                            "Arflow-Signature": sign(self.dep.secret, raw),
                            "Content-Type": "application/json",
                        },
                    )

            reader = await self.reader(ids)
            spying = self.dep.record(self.opts.py_spy) if self.opts.py_spy else None
            cpu1 = self.dep.cpu()
            started = time.perf_counter()
            responses = await asyncio.gather(*(send(raw) for raw in sends))
            posted_s = time.perf_counter() - started
            # A webhook refused (a 5xx) is not applied: the checks below report it.
            accepted = sum(r.status_code == 200 for r in responses)
            while (done := await asyncio.to_thread(self.applied)) < accepted:
                if time.perf_counter() - started > self.opts.timeout:
                    raise RuntimeError(f"{done} of {accepted} applied after the timeout")
                await asyncio.sleep(0.25)
            applied_s = time.perf_counter() - started
            storm_reads, storm_failures = await reader.stop()
            cpu_storm = cpu_used(cpu1, self.dep.cpu())
            if spying:
                spying()

        checks = self.check(plan, responses) + [
            f"read failed: {f}" for f in (base_failures + storm_failures)[:5]
        ]
        base, storm = read_figures(base_reads), read_figures(storm_reads)
        return {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "database": self.dep.label,
            "invoices": len(ids),
            "payments": len(sends),
            "concurrency": self.opts.concurrency,
            "invoices_created_s": round(created_s, 1),
            "settled_s": round(settled_s, 1),
            "baseline": base,
            "storm": storm,
            "posted_s": round(posted_s, 1),
            "applied_s": round(applied_s, 1),
            "p99_ratio": storm["p99_ms"] / base["p99_ms"],
            "p99_met": storm["p99_ms"] < 1000,
            "cpu_s": {"baseline": cpu_base, "storm": cpu_storm},
            "cores": os.cpu_count(),
            "problems": checks,
        }

    def check(self, plan: dict[int, list[int]], responses: list[httpx.Response]) -> list[str]:
        """What is wrong after the storm (nothing, when every payment was applied once)."""
        from sqlmodel import Session, select

        from models import Invoice, InvoiceEvent, Payment

        problems = [f"{r.status_code} {r.text[:200]}" for r in responses if r.status_code != 200]
        acks = sorted({r.json()["status"] for r in responses if r.status_code == 200})
        if acks != ["accepted"]:
            problems.append(f"acknowledgements {acks}, not only 'accepted'")
        with Session(self.engine) as s:
            payments = s.exec(select(Payment)).all()
            events = s.exec(
                select(InvoiceEvent).where(InvoiceEvent.kind == "payment_applied")
            ).all()
            invoices = {i.id: i for i in s.exec(select(Invoice)).all()}
        applied = [p.id or 0 for p in payments if p.status == "applied"]
        per_payment = [e.data["payment_id"] for e in events]
        if len(payments) != len(responses) or len(applied) != len(responses):
            problems.append(f"{len(payments)} payments stored, {len(applied)} applied")
        if sorted(per_payment) != sorted(applied):
            problems.append(f"{len(per_payment)} payment_applied events for {len(applied)}")
        for invoice_id, amounts in plan.items():
            inv = invoices[invoice_id]
            paid = sum(amounts)
            want = (AMOUNT_MINOR - paid, "paid" if paid == AMOUNT_MINOR else "open")
            if (inv.balance_minor, inv.status) != want:
                got = (inv.balance_minor, inv.status)
                problems.append(f"invoice {invoice_id}: {got}, not {want}")
        return problems

    def close(self) -> None:
        for reader in self.readers:
            reader.kill()
        self.engine.dispose()


def line(r: dict[str, Any]) -> str:
    b, s = r["baseline"], r["storm"]
    return (
        f"{r['date']} {r['database']}: {r['payments']} payments over {r['invoices']} invoices, "
        f"concurrency {r['concurrency']}, API and worker in processes of their own; "
        f"baseline {b['reads']} reads p50 {b['p50_ms']:.0f} ms p99 {b['p99_ms']:.0f} ms; "
        f"storm {s['reads']} reads p50 {s['p50_ms']:.0f} ms p99 {s['p99_ms']:.0f} ms "
        f"max {s['max_ms']:.0f} ms; posted in {r['posted_s']} s, all applied after "
        f"{r['applied_s']} s; p99 storm/baseline {r['p99_ratio']:.1f}; "
        f"p99 < 1 s {'met' if r['p99_met'] else 'NOT met'}; "
        f"checks {'ok' if not r['problems'] else 'FAILED'}"
    )


async def amain(opts: Options, dep: Deployment) -> dict[str, Any]:
    storm = Storm(opts, dep)
    try:
        return await storm.run()
    finally:
        storm.close()


def main(argv: Sequence[str] | None = None) -> None:
    from arflow.cli import _raise_stopped

    opts = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stopped)  # the finally below runs on these too
    status = 0
    dep = Deployment(opts)
    try:
        dep.start()
        report = asyncio.run(amain(opts, dep))
        print(f"cpu seconds by process: {report['cpu_s']}")
        for problem in report["problems"][:20]:
            print(f"problem: {problem}")
        print(line(report))
        if opts.json_path:
            Path(opts.json_path).write_text(json.dumps(report, indent=2) + "\n")
        status = 1 if report["problems"] else 0
    except BaseException:  # noqa: BLE001 - Ctrl-C too: report, then stop everything
        traceback.print_exc()
        print(f"the last lines of the dev server, worker and API:\n{dep.log_tail()}")
        status = 1
    finally:
        dep.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # temporalio can abort the interpreter at exit (sdk-python #300)


if __name__ == "__main__":
    # The importable twin: the reader process is spawned from bench.storm, not __main__.
    from bench.storm import main as _main

    _main()
