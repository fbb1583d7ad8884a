"""Reads at 100,000 invoices: the invoice list filtered and paged, the invoice (API and
dashboard page) and the aging / KPI / forecast reports, p50 and p99 over real HTTP.

The deployment is the one ``arflow run`` starts (``bench/storm.py``'s ``Deployment``: the
Temporal dev server with its file store, ``worker.py`` and a uvicorn API process) on a fresh
database that ``bench/fill.py`` fills before the API starts: n invoices (14 of 20 open, 4 paid
with a payment each, 1 disputed, 1 escalated) of n/5 customers, due over the last and next 45
days, each with its ``created`` event. No workflows run for them: every read here comes from
the database, which is what is measured.

One reader, one request at a time (a user's pace, no think time). The baseline, measured in
the same run against the same process: ``GET /healthz`` (routing, the middleware and the
access log; no database). Target (issue 19): p99 < 300 ms for the list, the invoice page and
the reports.

    .venv/bin/python -m bench.reads_100k                     # fresh SQLite file
    .venv/bin/python -m bench.reads_100k --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.fill import COLLECTORS, STATUSES, fill
from bench.storm import Deployment, Options

CSRF_IN_FORM = re.compile(r'name="csrf_token" value="([^"]+)"')
TARGET_MS = 300.0


class FilledDeployment(Deployment):
    """The storm bench's deployment on a database filled before the API starts."""

    def __init__(self, opts: Options, invoices: int, seed: int) -> None:
        super().__init__(opts)
        self.invoices, self.seed = invoices, seed
        self.fill_s = 0.0
        self.customers: list[int] = []
        self.ids: list[int] = []

    def database(self) -> str:
        from arflow.db import make_engine

        url = super().database()
        engine = make_engine(url)
        started = time.perf_counter()
        book = fill(engine, self.invoices, random.Random(self.seed), STATUSES)
        self.fill_s = time.perf_counter() - started
        engine.dispose()
        self.customers = sorted(book.by_customer)
        self.ids = list(book.invoices)
        return url


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="per endpoint (reports: /4)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--skip", action="append", default=[], help="leave out the kinds whose name has this"
    )
    args = parser.parse_args()
    opts = Options(
        invoices=0,
        concurrency=1,
        baseline_seconds=0,
        database_url=args.database_url,
        json_path=None,
        timeout=600,
        py_spy=None,
    )
    dep = FilledDeployment(opts, args.invoices, args.seed)
    loads = [[round(x, 2) for x in os.getloadavg()]]  # 1, 5, 15 minutes: the machine is shared
    try:
        dep.start()
        figures = measure(dep, args.requests, random.Random(args.seed), tuple(args.skip))
    finally:
        dep.close()
    figures |= {"invoices": args.invoices, "database": dep.label, "fill_s": round(dep.fill_s, 1)}
    figures["load"] = {"before": loads[0], "after": [round(x, 2) for x in os.getloadavg()]}
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def requests(
    http: httpx.Client,
    web: httpx.Client,
    ids: list[int],
    customers: list[int],
    n: int,
    rng: random.Random,
) -> dict[str, tuple[Callable[[], httpx.Response], int]]:
    """Each kind of read the bench times: its request and how many times (``bench/
    explain_reads.py`` runs the same requests in-process to EXPLAIN their statements)."""
    open_pages = max(1, int(len(ids) * 0.7) // 50)
    return {
        "baseline: GET /healthz": (lambda: http.get("/healthz"), n),
        "list: status=open, page of 50 at a random offset": (
            lambda: http.get(
                "/v1/invoices",
                params={"status": "open", "limit": 50, "offset": 50 * rng.randrange(open_pages)},
            ),
            n,
        ),
        "list: one customer's invoices": (
            lambda: http.get(
                "/v1/invoices", params={"customer_id": rng.choice(customers), "limit": 50}
            ),
            n,
        ),
        "list: overdue, one collector, page 1-20": (
            lambda: http.get(
                "/v1/invoices",
                params={
                    "overdue": "true",
                    "collector": rng.choice([c for c in COLLECTORS if c]),
                    "limit": 50,
                    "offset": 50 * rng.randrange(20),
                },
            ),
            n,
        ),
        "list: segment high_risk, status disputed": (
            lambda: http.get(
                "/v1/invoices",
                params={"segment": "high_risk", "status": "disputed", "limit": 50},
            ),
            n,
        ),
        "invoice: GET /v1/invoices/{id}": (lambda: http.get(f"/v1/invoices/{rng.choice(ids)}"), n),
        "invoice page: /app/invoices/{id}": (
            lambda: web.get(f"/app/invoices/{rng.choice(ids)}"),
            n,
        ),
        "report: aging": (lambda: http.get("/v1/reports/aging"), max(5, n // 4)),
        "report: KPIs (30 days)": (lambda: http.get("/v1/reports/kpis"), max(5, n // 4)),
        "report: forecast (12 weeks)": (lambda: http.get("/v1/reports/forecast"), max(5, n // 4)),
    }


def measure(
    dep: FilledDeployment, n: int, rng: random.Random, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {dep.keys['viewer']}"}
    with httpx.Client(base_url=dep.api_url, headers=headers, timeout=60) as http:
        web = signed_in(httpx.Client(base_url=dep.api_url, timeout=60), dep.keys["admin"])
        kinds = requests(http, web, dep.ids, dep.customers, n, rng)
        out: dict[str, Any] = {}
        for name, (call, count) in kinds.items():
            if any(word in name for word in skip):
                continue
            call()  # warm: the first request of a kind pays its imports and query plans
            times, errors = [], []
            for _ in range(count):
                started = time.perf_counter()
                resp = call()
                times.append((time.perf_counter() - started) * 1000)
                if resp.status_code != 200:  # counted and shown, the other kinds still run
                    errors.append(f"{resp.status_code} {resp.text[:200]}")
            out[name] = {
                "n": count,
                "p50_ms": round(percentile(times, 0.5), 1),
                "p99_ms": round(percentile(times, 0.99), 1),
                "max_ms": round(max(times), 1),
                "errors": len(errors),
            }
            if errors:
                print(f"{name}: {len(errors)} errors, the first: {errors[0]}", flush=True)
        web.close()
    base = out["baseline: GET /healthz"]["p99_ms"]
    for row in out.values():
        row["p99_ratio"] = round(row["p99_ms"] / base, 1) if base else None
    return {"reads": out}


def signed_in(web: httpx.Client, admin_key: str) -> httpx.Client:
    """``web`` with a dashboard session (the admin's key through the sign-in form)."""
    form = web.get("/app/login")
    token = CSRF_IN_FORM.search(form.text)
    assert token, form.text[:500]
    resp = web.post(
        "/app/login",
        data={"api_key": admin_key, "csrf_token": token[1], "next": "/app"},
    )
    assert resp.status_code == 303, resp.text[:500]
    return web


def report(f: dict[str, Any]) -> None:
    print(
        f"\nreads at {f['invoices']} invoices ({f['database']}, filled in {f['fill_s']} s), "
        f"one request at a time over HTTP; load average {f['load']['before']} before, "
        f"{f['load']['after']} after"
    )
    print(f"{'':52} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99/base':>8}  <300 ms")
    for name, row in f["reads"].items():
        met = "" if name.startswith("baseline") else ("met" if row["p99_ms"] < TARGET_MS else "NO")
        met += f" ({row['errors']} errors)" if row.get("errors") else ""
        print(
            f"{name:52} {row['n']:>4} {row['p50_ms']:>8} {row['p99_ms']:>8} {row['max_ms']:>8}"
            f" {row['p99_ratio']:>8}  {met}"
        )


if __name__ == "__main__":
    main()
