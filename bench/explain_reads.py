"""The query plans behind ``bench/reads_100k.py``'s reads: each kind of request is sent once
in-process (the API app on the database, no Temporal), every SQL statement it runs is caught,
and each is EXPLAINed on the same database: ``EXPLAIN ANALYZE`` on PostgreSQL (with its
execution time), ``EXPLAIN QUERY PLAN`` on SQLite. Full scans of a table (PostgreSQL ``Seq
Scan``, SQLite ``SCAN`` without an index) are marked.

The database is filled by ``bench/fill.py`` (the same book as the reads bench) unless
``--filled`` says it already is::

    .venv/bin/python -m bench.explain_reads --database-url sqlite:////tmp/reads.db
    .venv/bin/python -m bench.explain_reads \\
        --database-url 'postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dmine'
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from typing import Any

import anyio
import httpx
import sqlalchemy as sa

from bench.fill import STATUSES, fill
from bench.reads_100k import requests, signed_in

SCAN = re.compile(r"Seq Scan on (\w+)|^\s*SCAN (\w+)(?!.*USING)", re.M)
SKIP = ("EXPLAIN", "PRAGMA", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SHOW", "SET")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--filled", action="store_true", help="the database is filled already")
    parser.add_argument("--only", default=None, help="kinds whose name contains this")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--all", action="store_true", help="every plan, not only the scans")
    args = parser.parse_args()

    from arflow.db import make_engine
    from arflow.migrate import upgrade

    engine = make_engine(args.database_url)
    if not args.filled:
        upgrade(engine)
        fill(engine, args.invoices, random.Random(args.seed), STATUSES)
    with engine.connect() as conn:
        ids = list(conn.execute(sa.text("SELECT id FROM invoices ORDER BY id")).scalars())
        customers = list(conn.execute(sa.text("SELECT id FROM customers ORDER BY id")).scalars())
    anyio.run(_explain_all, engine, ids, customers, args)


async def _explain_all(engine: sa.Engine, ids: list[int], customers: list[int], args: Any) -> None:
    from api.app import create_app
    from arflow.config import Settings
    from bench.lifecycle import API_KEYS, WEBHOOK_SECRET

    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{role}" for role, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=tempfile.mkdtemp(prefix="arflow-explain-"),
    )
    # The list route asks for a client it does not use for source=database.
    app = create_app(settings, engine=engine, temporal=object())  # type: ignore[arg-type]
    caught: list[tuple[str, Any]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(SKIP):
            caught.append((statement, parameters))

    transport = httpx.ASGITransport(app=app)
    base = "http://arflow.test"
    headers = {"Authorization": f"Bearer {API_KEYS['viewer']}"}
    async with (
        httpx.AsyncClient(transport=transport, base_url=base, headers=headers) as http,
        httpx.AsyncClient(transport=transport, base_url=base) as web,
    ):
        sync_http, sync_web = _Sync(http), _Sync(web)
        await anyio.to_thread.run_sync(signed_in, sync_web, API_KEYS["admin"])  # type: ignore[arg-type]
        kinds = requests(sync_http, sync_web, ids, customers, 1, random.Random(args.seed))  # type: ignore[arg-type]
        for name, (call, _) in kinds.items():
            if args.only and args.only not in name:
                continue
            caught.clear()
            started = time.perf_counter()
            resp = await anyio.to_thread.run_sync(call)
            took = (time.perf_counter() - started) * 1000
            statements = list(caught)
            print(f"\n=== {name}: {resp.status_code}, {took:.0f} ms, {len(statements)} statements")
            for statement, parameters in statements:
                _explain(engine, statement, parameters, args.all)


class _Sync:
    """The requests' calls (``get``) made from a worker thread on the async client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return anyio.from_thread.run(lambda: self.client.get(url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return anyio.from_thread.run(lambda: self.client.post(url, **kwargs))


def _explain(engine: sa.Engine, statement: str, parameters: Any, show_all: bool) -> None:
    pg = engine.dialect.name == "postgresql"
    prefix = "EXPLAIN ANALYZE " if pg else "EXPLAIN QUERY PLAN "
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        started = time.perf_counter()
        cursor.execute(statement, parameters)
        cursor.fetchall()
        ran = (time.perf_counter() - started) * 1000
        cursor.execute(prefix + statement, parameters)
        rows = cursor.fetchall()
        conn.rollback()
    plan = "\n".join(str(r[0]) if pg else str(r[-1]) for r in rows)
    scans = sorted({a or b for a, b in SCAN.findall(plan)})
    took = next((line for line in plan.splitlines() if "Execution Time" in line), "")
    one_line = " ".join(statement.split())
    mark = f"SCAN {', '.join(scans)}" if scans else "indexed"
    print(f"- [{mark}] ran in {ran:.1f} ms {took.strip()} :: {one_line[:220]}")
    if show_all or scans:
        for line in plan.splitlines():
            print("      " + line)


if __name__ == "__main__":
    main()
