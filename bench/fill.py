"""A large book written straight into a migrated database (no workflows): customers, invoices
with their ``created`` events, and the payments of the paid ones. For benchmarks of what reads
the database (statement matching, the API's lists, pages and reports) at 100,000 invoices
without starting 100,000 workflows first."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from schwifty import IBAN
from sqlmodel import Session

from arflow.policies.service import ensure_default_policy
from models import Customer, Invoice, InvoiceEvent, Payment

SEGMENTS = ("standard", "standard", "standard", "key_account", "high_risk")
COLLECTORS = (None, "anna", "ben", "chloe")
# Of every 20 invoices: 14 open, 4 paid, 1 disputed, 1 escalated.
STATUSES = ("open",) * 14 + ("paid",) * 4 + ("disputed", "escalated")


@dataclass
class Book:
    """What was written: each invoice's number, balance and status; each customer's invoices."""

    invoices: dict[int, tuple[str, int, str]] = field(default_factory=dict)
    by_customer: dict[int, list[int]] = field(default_factory=dict)

    def open_ids(self) -> list[int]:
        return [i for i, (_, _, status) in self.invoices.items() if status != "paid"]


def iban(i: int) -> str:
    """Customer ``i``'s (the i-th created, from 0) IBAN."""
    return str(IBAN.generate("DE", bank_code="37040044", account_code=str(10_000 + i)))


def fill(
    engine: sa.Engine, n: int, rng: random.Random, statuses: tuple[str, ...] = ("open",)
) -> Book:
    """n/5 customers (every other one with an IBAN; segments and collectors mixed) and n
    invoices due over the last and next 45 days, each with its ``created`` event; ``statuses``
    cycles the invoices' statuses (``STATUSES``: some paid, with a payment each)."""
    customers = max(1, n // 5)
    now = datetime.now(UTC)
    with Session(engine) as session:
        policy_id = ensure_default_policy(session).id
        rows = [
            Customer(
                external_id=f"C{i}",
                name=f"Kunde {i} GmbH",
                timezone="Europe/Berlin",
                country="DE",
                iban=iban(i) if i % 2 == 0 else None,
                segment=SEGMENTS[i % len(SEGMENTS)],
                assigned_collector=COLLECTORS[i % len(COLLECTORS)],
                created_at=now,
            ).model_dump(exclude={"id"})
            for i in range(customers)
        ]
        session.execute(sa.insert(Customer), rows)
        session.commit()
        ids = list(session.execute(sa.text("SELECT id FROM customers ORDER BY id")).scalars())
    today = date.today()
    with Session(engine) as session:
        for chunk in range(0, n, 10_000):
            batch = []
            for k in range(chunk, min(n, chunk + 10_000)):
                due = today + timedelta(days=rng.randint(-45, 45))
                amount = rng.randint(100, 500_000) * 10 + k % 10
                status = statuses[k % len(statuses)]
                batch.append(
                    {
                        "external_id": f"I{k}",
                        "number": f"INV-{k:07d}",
                        "currency": "EUR",
                        "issued_on": due - timedelta(days=30),
                        "due_date": due,
                        "due_at": datetime(due.year, due.month, due.day, 22, 59, tzinfo=UTC),
                        "customer_id": ids[k % customers],
                        "collector": COLLECTORS[(k % customers) % len(COLLECTORS)],
                        "policy_id": policy_id,
                        "policy_version": 1,
                        "amount_minor": amount,
                        "balance_minor": 0 if status == "paid" else amount,
                        "status": status,
                        "stage": "first_late_day" if due < today else None,
                        "discount_minor": 0,
                        "discount_taken_minor": 0,
                        "lines": [],
                        "request_hash": "x" * 64,
                        "created_at": now,
                        "updated_at": now,
                        "closed_at": now if status == "paid" else None,
                    }
                )
            session.execute(sa.insert(Invoice), batch)
            session.commit()
        book = Book()
        rows2 = session.execute(
            sa.text(
                "SELECT id, number, balance_minor, status, customer_id, amount_minor, due_date"
                " FROM invoices ORDER BY id"
            )
        ).all()
        events, payments = [], []
        for invoice_id, number, balance, status, customer_id, amount, due in rows2:
            book.invoices[invoice_id] = (number, balance, status)
            book.by_customer.setdefault(customer_id, []).append(invoice_id)
            events.append(
                {
                    "invoice_id": invoice_id,
                    "at": now,
                    "actor": "bench",
                    "kind": "created",
                    "data": {"amount_minor": amount, "currency": "EUR"},
                    "dedupe_key": "created",
                }
            )
            if status == "paid":
                due_day = due if isinstance(due, date) else date.fromisoformat(due)
                paid = datetime.combine(due_day, datetime.min.time(), UTC) + timedelta(
                    days=rng.randint(-10, 30)
                )
                payments.append(
                    {
                        "event_id": f"bench-{invoice_id}",
                        "invoice_id": invoice_id,
                        "amount_minor": amount,
                        "currency": "EUR",
                        "paid_at": min(paid, now),
                        "method": "bank_transfer",
                        "kind": "payment",
                        "source": "bank",
                        "status": "applied",
                        "received_at": now,
                        "applied_at": now,
                    }
                )
        for start in range(0, len(events), 10_000):
            session.execute(sa.insert(InvoiceEvent), events[start : start + 10_000])
        for start in range(0, len(payments), 10_000):
            session.execute(sa.insert(Payment), payments[start : start + 10_000])
        session.commit()
    if engine.dialect.name == "postgresql":
        # The statistics autovacuum gathers within a minute or so of a bulk load; without them
        # the first plans take the tables for empty (the segment list's 4.7 s nested loop).
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    return book
