"""Matching one bank statement against a large book: 5,000 lines against 100,000 open invoices.

``arflow.payments.reconcile.store_statement`` (what ``POST /v1/payments/statements`` and the
inbox run) parses the file, loads the book (every invoice's matching facts and every customer's
name and IBAN: once per statement), then for each line looks for a line seen before, decides
where it goes (``arflow.payments.matching.decide``) and stores the line and its payments, in
one transaction. No Temporal: the payments are handed to the workflows after the commit.

The database is filled directly (``bench/fill.py``: customers, invoices; no workflows), so
the book is large without importing 100,000 invoices through the engine. The statement (the
German bank CSV of tests/data/statements, with its saved column mapping) has lines of every
kind: an invoice number in the text, our RF reference, a known IBAN with the exact amount of
one of that customer's invoices, two invoice numbers whose balances add up to the amount, and
lines naming nothing we know.

Reported, all from the same run: the whole ``store_statement``; within it the book's load (the
baseline: reading the invoices is the least any matching of the whole book costs) and the
matching of every line (``decide`` on the loaded book, timed again on its own); and the
number search as it was before the Aho-Corasick automaton (each invoice number searched in
the text in turn), timed on a sample of lines and scaled to the statement.

    .venv/bin/python -m bench.match_statement                  # SQLite file in a temp dir
    .venv/bin/python -m bench.match_statement --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from arflow.db import make_engine
from arflow.migrate import upgrade
from arflow.payments import reconcile
from arflow.payments.matching import Book, Receipt, decide, normalize
from bench.databases import throwaway_schema
from bench.fill import fill
from bench.fill import iban as fill_iban
from models import SavedCsvMapping
from models.reference import payment_reference, references_in

MAPPING = json.loads(
    (Path(__file__).parent.parent / "tests/data/statements/bank_export.mapping.json").read_text()
)
HEADER = (
    "Buchungstag;Wertstellung;Buchungstext;Auftraggeber / Empfänger;IBAN;Verwendungszweck;"
    "Kundenreferenz;Buchungsreferenz;Betrag (EUR)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=5_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scan-sample", type=int, default=50, help="lines for the old search")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        url, drop = _database(args.database_url, tmp)
        engine = make_engine(url)
        try:
            upgrade(engine)
            started = time.perf_counter()
            book = fill(engine, args.invoices, rng)
            with Session(engine) as session:
                session.add(SavedCsvMapping(name=MAPPING["name"], config=MAPPING))
                session.commit()
            numbers = {i: (number, bal) for i, (number, bal, _) in book.invoices.items()}
            by_customer = book.by_customer
            fill_s = time.perf_counter() - started
            content = _statement(args.lines, numbers, by_customer, rng)
            figures = _measure(engine, content, args.scan_sample)
        finally:
            engine.dispose()
            drop()
    figures |= {
        "invoices": args.invoices,
        "lines": args.lines,
        "database": "postgresql" if args.database_url else "sqlite",
        "fill_s": round(fill_s, 1),
    }
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def _database(url: str | None, tmp: str) -> tuple[str, Callable[[], None]]:
    if url is None:
        return f"sqlite:///{tmp}/match.db", lambda: None
    return throwaway_schema(url, f"arflow_match_{uuid.uuid4().hex[:8]}")


def _statement(
    lines: int,
    numbers: dict[int, tuple[str, int]],
    by_customer: dict[int, list[int]],
    rng: random.Random,
) -> bytes:
    invoice_ids = list(numbers)
    rng.shuffle(invoice_ids)
    pool = iter(invoice_ids)
    out = [HEADER]
    day = date.today().strftime("%d.%m.%Y")
    customers = sorted(by_customer)
    for k in range(lines):
        kind = k % 10
        name, iban, text = f"Zahler {k}", "", f"Zahlung {k}"
        if kind < 4:  # an invoice number in the text
            invoice_id = next(pool)
            number, amount = numbers[invoice_id]
            text = f"Rechnung {number} vielen Dank"
        elif kind < 6:  # our RF reference
            invoice_id = next(pool)
            amount = numbers[invoice_id][1]
            text = f"{payment_reference(invoice_id)}"
        elif kind < 8:  # a known IBAN and the exact amount of one of the customer's invoices
            customer_id = rng.choice([c for c in customers[:2000] if (c - 1) % 2 == 0])
            invoice_id = rng.choice(by_customer[customer_id])
            amount = numbers[invoice_id][1]
            iban = fill_iban(customer_id - 1)
            name = f"Kunde {customer_id - 1} GmbH"
            text = "Sammelzahlung"
        elif kind < 9:  # two invoice numbers, the sum of both
            a, b = next(pool), next(pool)
            amount = numbers[a][1] + numbers[b][1]
            text = f"{numbers[a][0]} und {numbers[b][0]}"
        else:  # nothing we know
            amount = rng.randint(100, 100_000)
        euros, cents = divmod(amount, 100)
        out.append(
            f"{day};{day};Gutschrift;{name};{iban};{text};;B-{k};{euros:,}".replace(",", ".")
            + f",{cents:02d}"
        )
    return ("\n".join(out) + "\n").encode("utf-8")


def _measure(engine: sa.Engine, content: bytes, scan_sample: int) -> dict[str, Any]:
    with Session(engine) as session:
        mapping = reconcile.get_mapping(session, MAPPING["name"])
    parsed = reconcile.parse("statement.csv", content, mapping)
    receipts = [
        Receipt(
            line.amount_minor,
            line.currency,
            line.remittance,
            line.structured_reference,
            line.counterparty_name,
            line.counterparty_iban,
        )
        for line in parsed.lines
    ]
    with Session(engine) as session:
        started = time.perf_counter()
        book = reconcile.load_book(session)
        load_s = time.perf_counter() - started
    started = time.perf_counter()
    decisions = [decide(r, book) for r in receipts]
    decide_s = time.perf_counter() - started
    started = time.perf_counter()
    sample = receipts[:scan_sample]
    for r in sample:
        _scan(book, " ".join(filter(None, [r.structured_reference, r.remittance])))
    scan_s = (time.perf_counter() - started) * len(receipts) / max(1, len(sample))
    with Session(engine) as session:
        started = time.perf_counter()
        result = reconcile.store_statement(
            session,
            "statement.csv",
            content,
            mapping=MAPPING["name"],
            source="bench",
            actor="bench",
        )
        store_s = time.perf_counter() - started
    by_status: dict[str, int] = {}
    for d in decisions:
        by_status[d.status] = by_status.get(d.status, 0) + 1
    return {
        "store_statement_s": round(store_s, 2),
        "book_load_s": round(load_s, 2),
        "decide_all_s": round(decide_s, 2),
        "old_number_search_s_scaled": round(scan_s, 1),
        "ratio_store_to_book_load": round(store_s / load_s, 2),
        "decisions": by_status,
        "counts": result.counts,
    }


def _scan(book: Book, text: str) -> list[int]:
    """The number search before the automaton (each number of the book searched in turn)."""
    found = [i for i in references_in(text) if i in book.items]
    flat = normalize(text)
    for item in sorted(book.items.values(), key=lambda i: -len(i.number)):
        key = normalize(item.number)
        if len(key) >= 3 and flat.find(key) >= 0 and item.invoice_id not in found:
            found.append(item.invoice_id)
    return found


def _print(f: dict[str, Any]) -> None:
    print(
        f"\nmatch one statement: {f['lines']} lines against {f['invoices']} open invoices "
        f"({f['database']}; filled in {f['fill_s']} s)\n"
        f"  store_statement (parse, book, match, store):  {f['store_statement_s']:8.2f} s"
        f"   target < 30 s: {'met' if f['store_statement_s'] < 30 else 'NOT met'}\n"
        f"  baseline: load the book once:                   {f['book_load_s']:8.2f} s"
        f"   ratio store/load {f['ratio_store_to_book_load']}\n"
        f"  decide() for every line on the loaded book:     {f['decide_all_s']:8.2f} s\n"
        f"  the number search before (scan per number), scaled: "
        f"{f['old_number_search_s_scaled']:8.1f} s\n"
        f"  decisions: {f['decisions']}   stored: {f['counts']}"
    )


if __name__ == "__main__":
    main()
