"""Policy simulation benchmark: a draft policy on 10,000 past invoices, timed.

One run, one fresh database (a SQLite file by default, ``--database-url`` for PostgreSQL):

1. **seed** (not a figure): N past invoices of ``--customers`` customers written straight to
   the database, with the timelines the simulation reads: payments at various delays (some in
   two parts), disputes (upheld with a credit, or rejected and paid later), promises (kept or
   broken), payment plans paid by instalment, pauses, some never paid; and the reminders the
   default policy really sent before each invoice closed (``reminder_sent`` events).
2. **baseline: load**: the engine's own bulk load of those invoices and their facts
   (``arflow.policies.simulation.load``, batches of 500): the database part alone.
3. **engine**: ``select_invoices`` + ``simulate`` of all of them under a draft policy (the
   default with an SMS step, a contact window, weekends and a daily cap) in batches of 500 as
   the job runs them, + ``totals`` + ``csv_rows``: the figure the issue's target is about
   (10,000 invoices in under a minute).
4. **job** (unless ``--no-job``): the same through the job path without Temporal: the job
   and its run stored (``simulation_jobs.store``), then the ``run_simulation_job`` activity in
   Temporal's ``ActivityEnvironment`` (batches, result rows written, progress, totals), then
   the CSV streamed from the stored rows. The workflow around it adds one activity task.

Run from the project root::

    .venv/bin/python -m bench.simulate_10k
    .venv/bin/python -m bench.simulate_10k --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC", "Australia/Sydney")
COUNTRIES = {
    "Europe/Berlin": "DE",
    "America/New_York": "US",
    "Asia/Kolkata": "IN",
    "UTC": "GB",
    "Australia/Sydney": "AU",
}
SEGMENTS = ("standard", "smb", "enterprise")
STEP_OFFSETS = (
    ("before_due", -3),
    ("first_late_day", 1),
    ("late_7", 7),
    ("late_14", 14),
    ("final_notice", 30),
)  # the default policy's, in days
ESCALATE_DAYS = 45


@dataclass
class Seeded:
    """What ``seed`` wrote: the window and how many invoices of each story."""

    issued_from: date
    issued_to: date
    invoices: int
    stories: dict[str, int] = field(default_factory=dict)
    events: int = 0


def _at(day: date, zone: str, hour: int = 9) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime.combine(day, dtime(hour), ZoneInfo(zone)).astimezone(UTC)


def seed(
    engine: Engine,
    n: int = 10_000,
    customers: int = 800,
    today: date | None = None,
    rng: random.Random | None = None,
) -> Seeded:
    """Write ``n`` past invoices with realistic timelines straight to the database (see the
    module). Invoices are issued over the year before ``today`` - 60 days, due 30 days later,
    under the stored ``default`` policy (created if missing)."""
    import models  # noqa: F401 - the tables are registered
    from arflow.policies import service as policies
    from workflows.schedule import default_due_at

    rng = rng or random.Random(20261204)
    today = today or datetime.now(UTC).date()
    issued_to = today - timedelta(days=60)
    issued_from = issued_to - timedelta(days=365)
    with Session(engine) as session:
        policy_id = policies.ensure_default_policy(session).id
        first_customer = _next_id(session, "customers")
        first_invoice = _next_id(session, "invoices")
        first_payment = _next_id(session, "payments")
        first_plan = _next_id(session, "payment_plans")
    tag = uuid.uuid4().hex[:6]
    cust_rows: list[dict[str, Any]] = []
    zones: dict[int, str] = {}
    for k in range(customers):
        cid = first_customer + k
        zone = ZONES[k % len(ZONES)]
        zones[cid] = zone
        cust_rows.append(
            {
                "id": cid,
                "external_id": f"SIM-{tag}-C{k}",
                "name": f"Customer {k}",
                "email": f"ap{k}@example.com",
                "timezone": zone,
                "locale": "en",
                "segment": SEGMENTS[k % len(SEGMENTS)],
                "country": COUNTRIES[zone],
                "broken_promises": 0,
                "broken_plans": 0,
                "key_account": False,
                "credit_hold": False,
                "created_at": _at(issued_from - timedelta(days=30), "UTC"),
            }
        )
    invoices: list[dict[str, Any]] = []
    payments: list[dict[str, Any]] = []
    plans: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    stories: dict[str, int] = {}
    payment_id, plan_id = first_payment, first_plan

    def event(invoice_id: int, at: datetime, kind: str, data: dict[str, Any], actor: str) -> None:
        events.append(
            {"invoice_id": invoice_id, "at": at, "actor": actor, "kind": kind, "data": data}
        )

    for k in range(n):
        iid = first_invoice + k
        cid = first_customer + rng.randrange(customers)
        zone = zones[cid]
        issued = issued_from + timedelta(days=rng.randrange(366))
        due = issued + timedelta(days=30)
        due_at = default_due_at(due, zone)
        amount = rng.randrange(5_000, 2_000_000, 100)
        story = rng.choices(
            (
                "paid",
                "paid_in_two",
                "dispute_upheld",
                "dispute_rejected",
                "promise_kept",
                "promise_broken",
                "plan",
                "paused",
                "never_paid",
            ),
            weights=(45, 8, 4, 4, 6, 4, 5, 6, 18),
        )[0]
        stories[story] = stories.get(story, 0) + 1
        closed_at: datetime | None = None
        status = "open"
        balance = amount

        def pay(at: datetime, part: int) -> None:
            nonlocal payment_id, balance
            payments.append(
                {
                    "id": payment_id,
                    "event_id": f"sim-{tag}-{payment_id}",
                    "invoice_id": iid,  # noqa: B023 - used at once
                    "amount_minor": part,
                    "currency": "EUR",
                    "paid_at": at,
                    "method": "bank_transfer",
                    "kind": "payment",
                    "source": "bank",
                    "status": "applied",
                    "received_at": at,
                    "applied_at": at,
                }
            )
            event(
                iid,  # noqa: B023
                at,
                "payment_applied",
                {
                    "payment_id": payment_id,
                    "amount_minor": part,
                    "balance_before": balance,
                    "balance_after": balance - part,
                },
                "workflow",
            )
            balance -= part
            payment_id += 1

        def day(offset: int, hour: int = 11) -> datetime:
            return _at(due + timedelta(days=offset), zone, hour)  # noqa: B023

        if story == "paid":
            closed_at = day(rng.randint(-10, 40))
            pay(closed_at, amount)
        elif story == "paid_in_two":
            first = rng.randint(-5, 20)
            pay(day(first), amount // 2)
            closed_at = day(first + rng.randint(5, 30))
            pay(closed_at, amount - amount // 2)
        elif story in ("dispute_upheld", "dispute_rejected"):
            opened = rng.randint(2, 15)
            event(
                iid,
                day(opened),
                "dispute_opened",
                {"dispute_id": k, "amount_minor": amount},
                "specialist:bench",
            )
            resolved = day(opened + rng.randint(3, 20))
            if story == "dispute_upheld":
                event(iid, resolved, "dispute_upheld", {"credit_minor": amount}, "specialist:bench")
                closed_at, balance = resolved, 0
                status = "credited"
            else:
                event(iid, resolved, "dispute_rejected", {"credit_minor": 0}, "specialist:bench")
                closed_at = resolved + timedelta(days=rng.randint(2, 25))
                pay(closed_at, amount)
        elif story in ("promise_kept", "promise_broken"):
            made = rng.randint(2, 12)
            promised = due + timedelta(days=made + 7)
            event(
                iid,
                day(made),
                "promise_to_pay",
                {"promised_date": promised.isoformat(), "amount_minor": amount},
                "specialist:bench",
            )
            if story == "promise_kept":
                closed_at = _at(promised, zone, 15)
                pay(closed_at, amount)
            elif rng.random() < 0.5:
                closed_at = _at(promised + timedelta(days=rng.randint(10, 40)), zone, 15)
                pay(closed_at, amount)
        elif story == "plan":
            agreed = rng.randint(3, 12)
            parts = [amount // 3, amount // 3, amount - 2 * (amount // 3)]
            dues = [due + timedelta(days=agreed + 14 + 30 * j) for j in range(3)]
            plans.append(
                {
                    "id": plan_id,
                    "invoice_id": iid,
                    "status": "completed",
                    "installments": [
                        {"due_date": d.isoformat(), "amount_minor": p}
                        for d, p in zip(dues, parts, strict=True)
                    ],
                    "note": "",
                    "created_by": "specialist:bench",
                    "created_at": day(agreed),
                    "updated_at": day(agreed),
                }
            )
            event(iid, day(agreed), "plan_agreed", {"plan_id": plan_id}, "specialist:bench")
            plan_id += 1
            for d, p in zip(dues, parts, strict=True):
                pay(_at(d, zone, 12), p)
            closed_at = _at(dues[-1], zone, 12)
        elif story == "paused":
            paused = rng.randint(1, 10)
            until = due + timedelta(days=paused + 14)
            event(
                iid,
                day(paused),
                "paused",
                {"until": until.isoformat(), "reason": "talking"},
                "specialist:bench",
            )
            closed_at = _at(until + timedelta(days=rng.randint(0, 20)), zone, 10)
            pay(closed_at, amount)
        if balance == 0 and status == "open":
            status = "paid"
        if status == "open" and due + timedelta(days=ESCALATE_DAYS) < today:
            status = "escalated"
        # What the default policy really sent: each step before the invoice closed (and not
        # while a dispute was open: good enough for a baseline of the "really sent" side).
        end = closed_at or _at(today, "UTC")
        for key, offset in STEP_OFFSETS:
            at = _at(due + timedelta(days=offset), zone)
            if at < end:
                event(iid, at, "reminder_sent", {"step": key, "channel": "email"}, "workflow")
        invoices.append(
            {
                "id": iid,
                "external_id": f"SIM-{tag}-I{k}",
                "number": f"S{tag}-{k:06d}",
                "currency": "EUR",
                "issued_on": issued,
                "due_date": due,
                "customer_id": cid,
                "policy_id": policy_id,
                "amount_minor": amount,
                "balance_minor": max(balance, 0),
                "due_at": due_at,
                "status": status,
                "discount_minor": 0,
                "discount_taken_minor": 0,
                "lines": [],
                "request_hash": "0" * 64,
                "created_at": _at(issued, "UTC", 10),
                "updated_at": closed_at or _at(today, "UTC"),
                "closed_at": closed_at if status in ("paid", "credited") else None,
            }
        )
    with engine.begin() as conn:
        for table, rows in (
            (SQLModel.metadata.tables["customers"], cust_rows),
            (SQLModel.metadata.tables["invoices"], invoices),
            (SQLModel.metadata.tables["payments"], payments),
            (SQLModel.metadata.tables["payment_plans"], plans),
            (SQLModel.metadata.tables["invoice_events"], events),
        ):
            for i in range(0, len(rows), 2_000):
                conn.execute(sa.insert(table), rows[i : i + 2_000])
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for name in ("customers", "invoices", "payments", "payment_plans"):
                conn.execute(
                    sa.text(
                        f"select setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(select max(id) from {name}))"
                    )
                )
    return Seeded(issued_from, issued_to, n, stories, len(events))


def _next_id(session: Session, table: str) -> int:
    found = session.execute(sa.text(f"select max(id) from {table}")).scalar()
    return int(found or 0) + 1


# -- the benchmark -----------------------------------------------------------------------------


def draft_body(seeded: Seeded) -> Any:
    """The simulated draft: the default policy with an SMS step, a contact window, weekends
    off and a daily cap of two messages."""
    from models.policy import DEFAULT_POLICY
    from models.simulation import SimulationRequest

    draft = DEFAULT_POLICY.model_dump(mode="json") | {
        "name": "bench draft",
        "contact_window": "09:00-18:00",
        "skip_weekends": True,
        "max_messages_per_day": 2,
    }
    draft["steps"] = [
        *draft["steps"][:2],
        {"key": "sms_5", "offset": "P5D", "channel": "sms", "template": "reminder_overdue"},
        *draft["steps"][2:],
    ]
    return SimulationRequest.model_validate(
        {
            "policy": draft,
            "issued_from": seeded.issued_from.isoformat(),
            "issued_to": seeded.issued_to.isoformat(),
        }
    )


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.simulate_10k", description=__doc__)
    p.add_argument("--n", type=int, default=10_000, help="past invoices (default 10,000)")
    p.add_argument("--customers", type=int, default=800)
    p.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    p.add_argument("--batch", type=int, default=500, help="invoices per batch (the job's)")
    p.add_argument("--no-job", action="store_true", help="skip the job path")
    p.add_argument("--json", dest="json_path", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    from pydantic import TypeAdapter
    from temporalio.testing import ActivityEnvironment

    from activities.simulation import SimulationActivities
    from arflow.db import make_engine, session_factory
    from arflow.migrate import upgrade
    from arflow.policies import simulation as engine_mod
    from arflow.policies import simulation_jobs
    from models.types import utcnow

    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'sim.db'}"
    schema = None
    if url.startswith("postgresql"):  # a schema of its own, dropped afterwards
        schema = f"bench_sim_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'create schema "{schema}"'))
        url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    db = make_engine(url)
    figures: dict[str, Any] = {"n": args.n, "database": db.dialect.name, "batch": args.batch}
    try:
        upgrade(db)
        t = time.perf_counter()
        seeded = seed(db, args.n, args.customers)
        figures["seed_s"] = round(time.perf_counter() - t, 2)
        figures["stories"] = seeded.stories
        figures["events"] = seeded.events
        body = draft_body(seeded)
        now = utcnow()

        with Session(db) as session:
            window = engine_mod.SimulationWindow(body.issued_from, body.issued_to)
            ids = engine_mod.select_invoices(session, window)
            spec = engine_mod.requested_spec(session, body)
            batches = simulation_jobs.batches(session, ids, args.batch)
        figures["selected"] = len(ids)

        t = time.perf_counter()
        with Session(db) as session:
            loaded = sum(len(engine_mod.load(session, b)) for b in batches)
        figures["baseline_load_s"] = round(time.perf_counter() - t, 2)
        figures["loaded"] = loaded

        t = time.perf_counter()
        with Session(db) as session:
            ids = engine_mod.select_invoices(session, window)
            results = []
            for b in simulation_jobs.batches(session, ids, args.batch):
                results += engine_mod.simulate(session, spec, b, now)
        simulated = time.perf_counter() - t
        totals = engine_mod.totals(results)
        rows = engine_mod.csv_rows(results)
        figures["engine_s"] = round(time.perf_counter() - t, 2)
        figures["engine_simulate_s"] = round(simulated, 2)
        figures["engine_per_s"] = round(len(results) / max(figures["engine_s"], 1e-9))
        figures["csv_rows"] = len(rows) - 1
        dumped = TypeAdapter(engine_mod.SimulationTotals).dump_python(totals, mode="json")
        figures["totals"] = {
            k: dumped[k]
            for k in (
                "invoices",
                "sends",
                "sends_by_channel",
                "real_sends",
                "escalations",
                "escalations_before_payment",
                "paid",
                "moved_by",
            )
        }

        if not args.no_job:
            sessions = session_factory(db)
            t = time.perf_counter()
            with Session(db) as session:
                spec_, ids_ = simulation_jobs.selection(session, body)
                job_id = simulation_jobs.store(session, body, spec_, ids_, "admin:bench").id
            assert job_id is not None
            ActivityEnvironment().run(
                SimulationActivities(sessions, args.batch).run_simulation_job, job_id
            )
            figures["job_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            size = sum(len(chunk.encode()) for chunk in simulation_jobs.csv_text(sessions, job_id))
            figures["job_csv_s"] = round(time.perf_counter() - t, 2)
            figures["job_csv_bytes"] = size
            with Session(db) as session:
                shown = simulation_jobs.public(session, job_id)
            figures["job_totals_match_engine"] = shown.totals == dumped
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(figures, indent=1))
    finally:
        db.dispose()
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f'drop schema "{schema}" cascade'))
            admin.dispose()
        tmp.cleanup()
    return figures


def report(f: dict[str, Any]) -> str:
    lines = [
        f"policy simulation of {f['n']:,} past invoices ({f['database']}, batches of {f['batch']})",
        f"  seed (not timed as a figure): {f['seed_s']} s, {f['events']:,} timeline events; "
        f"stories {f['stories']}",
        f"  baseline, load invoices and facts only: {f['baseline_load_s']} s",
        f"  engine (select + simulate + totals + CSV rows): {f['engine_s']} s "
        f"({f['engine_per_s']:,} invoices/s; simulate alone {f['engine_simulate_s']} s); "
        f"engine/baseline = {f['engine_s'] / max(f['baseline_load_s'], 1e-9):.1f}",
    ]
    if "job_s" in f:
        lines.append(
            f"  job path (store + activity: batches, rows, progress, totals): {f['job_s']} s; "
            f"CSV from the stored rows {f['job_csv_s']} s ({f['job_csv_bytes']:,} bytes); "
            f"job totals == engine totals: {f['job_totals_match_engine']}"
        )
    lines.append(f"  totals: {json.dumps(f['totals'])}")
    return "\n".join(lines)


def main() -> None:
    figures = run(sys.argv[1:])
    print(report(figures))
    sys.stdout.flush()
    os._exit(0)  # temporalio can abort the interpreter at exit (sdk-python #300)


if __name__ == "__main__":
    main()
