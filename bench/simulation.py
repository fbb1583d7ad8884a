"""Policy simulation on 10,000 past invoices (the target: under a minute on a 2-core box).

``.venv/bin/python -m bench.simulation [--n 10000]``: a SQLite file in a temp dir, 2,000
customers, invoices issued over one year, 70% paid at a random day around their due date,
three real reminders each; simulates the default policy over the year and prints the time
beside the target.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from arflow.db import make_engine
from arflow.migrate import upgrade
from arflow.policies import simulation as domain
from arflow.policies.service import ensure_default_policy
from models import Customer, Invoice
from models.invoice import InvoiceEvent
from models.policy import DEFAULT_POLICY
from workflows.schedule import default_due_at

TARGET_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        seed(engine, args.n)
        spec = domain.draft_spec(DEFAULT_POLICY)
        with Session(engine) as s:
            started = time.perf_counter()
            window = domain.SimulationWindow(date(2025, 1, 1), date(2025, 12, 31))
            ids = domain.select_invoices(s, window)
            results = domain.simulate(s, spec, ids, datetime(2026, 6, 1, tzinfo=UTC))
            totals = domain.totals(results)
            domain.csv_rows(results)
            took = time.perf_counter() - started
        engine.dispose()
    print(
        f"simulated {len(ids)} invoices in {took:.2f} s (target {TARGET_SECONDS:.0f} s): "
        f"{totals.sends} sends simulated, {totals.real_sends} real, "
        f"{totals.escalations} escalations"
    )


def seed(engine: Engine, n: int) -> None:
    rnd = random.Random(1)
    with Session(engine) as s:
        policy = ensure_default_policy(s)
        zones = ["Europe/Berlin", "America/New_York", "UTC"]
        customers = [
            Customer(
                external_id=f"C{i}",
                name="Customer",
                email="ap@example.com",
                timezone=rnd.choice(zones),
                locale="en",
                country="DE",
            )
            for i in range(max(1, n // 5))
        ]
        s.add_all(customers)
        s.commit()
        for c in customers:
            s.refresh(c)
        invoices = []
        for i in range(n):
            issued = date(2025, 1, 1) + timedelta(days=rnd.randrange(365))
            due = issued + timedelta(days=30)
            c = customers[i % len(customers)]
            invoices.append(
                Invoice(
                    external_id=f"I{i}",
                    number=f"N{i}",
                    currency="EUR",
                    issued_on=issued,
                    due_date=due,
                    due_at=default_due_at(due, c.timezone),
                    customer_id=c.id or 0,
                    policy_id=policy.id or 0,
                    amount_minor=100_000,
                    balance_minor=100_000,
                    request_hash="x" * 64,
                    created_at=datetime.combine(issued, clock(8), UTC),
                )
            )
        s.add_all(invoices)
        s.commit()
        for inv in invoices:
            s.refresh(inv)
            if rnd.random() < 0.7:
                at = inv.due_at + timedelta(days=rnd.randrange(-5, 40), hours=3)
                paid: dict[str, object] = {"payment_id": 0, "amount_minor": 100_000}
                s.add(
                    InvoiceEvent(
                        invoice_id=inv.id or 0,
                        at=at,
                        actor="workflow",
                        kind="payment_applied",
                        data=paid,
                    )
                )
            for k in range(3):
                sent: dict[str, object] = {"step": f"s{k}", "channel": "email"}
                at = inv.due_at + timedelta(days=7 * k)
                s.add(
                    InvoiceEvent(
                        invoice_id=inv.id or 0,
                        at=at,
                        actor="workflow",
                        kind="reminder_sent",
                        data=sent,
                    )
                )
        s.commit()


if __name__ == "__main__":
    main()
