"""Bank statements in: parse, deduplicate, match, store, then deliver the payments.

``store_statement`` does all database work of one file in one transaction (so a file is never
half-applied) and returns what to deliver; ``deliver_all`` then signals the workflows. The API,
the CLI and the daily inbox schedule all go through here.

Deduplication: a line is known by the bank's transaction id when the file has one, else by a
hash of account, booking date, amount, currency, counterparty and reference text. Importing the
same file twice, or a statement overlapping an earlier one, takes each transaction once. (Two
genuinely separate transfers with the same date, amount, payer and text, in a file without
transaction ids, are taken as one: the bank gave nothing to tell them apart.)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.config import Settings
from arflow.db import insert_unique
from arflow.errors import Invalid, conflict, not_found, unprocessable
from arflow.payments.matching import Book, Decision, Item, Payer, Receipt, decide
from arflow.payments.service import Delivery, deliver_all, store_payment
from arflow.payments.statements import (
    CsvMapping,
    ParsedStatement,
    StatementError,
    StatementLine,
    parse_statement,
)
from models import CreditEntry, Customer, Invoice, Payment, ReceivedLine, StatementImport
from models.bank import APPLIED, DISMISSED, UNMATCHED, SavedCsvMapping
from models.types import MAX_ID, compact_iban, utcnow
from workflows.types import CLOSED_STATUSES

log = logging.getLogger("arflow.reconcile")


@dataclass
class ImportResult:
    import_id: int
    filename: str
    format: str
    counts: dict[str, int]
    errors: list[dict[str, Any]]
    lines: list[dict[str, Any]] = field(default_factory=list)
    payment_ids: list[int] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    """Per account of the file: statements, lines, matched, unmatched, duplicate, ignored,
    rejected and skipped (lines of an account that is not ours: reported, not applied)."""


def line_key(account: str | None, line: StatementLine) -> str:
    """How a bank transaction is recognised when it comes again."""
    account = account or "-"
    if line.bank_transaction_id:
        return f"bank:{account}:{line.bank_transaction_id}"[:200]
    parts = [
        account,
        line.booking_date.isoformat(),
        str(line.amount_minor),
        line.currency,
        line.counterparty_iban or "",
        line.structured_reference or "",
        " ".join(line.remittance.split()),
    ]
    return "bank:" + hashlib.sha256("|".join(parts).encode()).hexdigest()


def load_book(session: Session) -> Book:
    """Every invoice's matching facts (closed ones too: a receipt naming a paid invoice must
    say so, not match something else) and every customer's name and IBAN."""
    rows = session.execute(
        sa_select(
            Invoice.id,  # type: ignore[call-overload]
            Invoice.customer_id,
            Invoice.number,
            Invoice.currency,
            Invoice.balance_minor,
            Invoice.due_at,
            Invoice.status,
        )
    ).all()
    items = [Item(*row) for row in rows]
    payers = [
        Payer(i, name, iban)
        for i, name, iban in session.exec(select(Customer.id, Customer.name, Customer.iban)).all()
        if i is not None
    ]
    return Book(items, payers)


def get_mapping(session: Session, name: str | None) -> CsvMapping | None:
    if name is None:
        return None
    row = session.exec(select(SavedCsvMapping).where(SavedCsvMapping.name == name)).first()
    if row is None:
        raise unprocessable(f"unknown CSV mapping {name!r}")
    return CsvMapping.from_dict({**row.config, "name": row.name})


def parse(filename: str, content: bytes, mapping: CsvMapping | None) -> ParsedStatement:
    try:
        return parse_statement(content, filename=filename, mapping=mapping)
    except StatementError as exc:
        raise Invalid(str(exc), {"file": filename}, code="bad_statement") from None


def store_statement(
    session: Session,
    filename: str,
    content: bytes,
    *,
    mapping: str | None,
    source: str,
    actor: str,
    our_ibans: Collection[str] = (),
) -> ImportResult:
    """Parse, match and store one statement file in one transaction. Raises ApiError 422
    naming the file when it cannot be read at all; bad rows are reported, good rows kept.

    A file may hold statements of several accounts. Only lines of ours (``our_ibans``,
    ``Settings.our_ibans``) are applied; the others are counted per account as skipped.
    Without ``our_ibans`` a single-account file is taken as ours (a file of several is
    refused: which of them are ours cannot be told).
    """
    parsed = parse(filename, content, get_mapping(session, mapping))
    ours = _ours(parsed, {compact_iban(i) for i in our_ibans} - {None}, filename)
    counts = {"lines": 0, "matched": 0, "unmatched": 0, "duplicate": 0, "ignored": 0}
    counts["rejected"] = len(parsed.errors)
    errors = [{"file": filename, "line": e.line_no, "reason": e.reason} for e in parsed.errors]
    imp = _new_import(
        session, filename, content, parsed, compact_iban(parsed.account_iban), source, actor
    )
    assert imp.id is not None
    book = load_book(session)
    progress = _Progress(counts)
    accounts: dict[str, dict[str, Any]] = {}
    for statement, mine in zip(parsed.per_statement(), ours, strict=True):
        account = compact_iban(statement.account_iban)
        per = _account_report(accounts, account or statement.account_id or "-", account, mine)
        per["statements"] += 1
        if statement.statement_id:
            per["statement_ids"].append(statement.statement_id)
        per["lines"] += len(statement.lines)
        per["rejected"] += len(statement.errors)
        if not mine:
            per["skipped"] += len(statement.lines)
            progress.report += [
                {
                    "line": line.line_no,
                    "status": "skipped",
                    "amount_minor": line.amount_minor,
                    "reason": f"account {per['account']} is not ours",
                }
                for line in statement.lines
            ]
            continue
        before = dict(counts)
        keys = [line_key(account, line) for line in statement.lines]
        known = _known_lines(session, keys)
        fresh: list[_Fresh] = []
        for line, key in zip(statement.lines, keys, strict=True):
            counts["lines"] += 1
            if key in known:
                _store_fresh(session, fresh, progress)  # in order; and a line twice in a file
                _seen_again(session, known[key], line, progress)
                continue
            known[key] = _match(session, imp.id, key, line, book, progress, fresh)
        _store_fresh(session, fresh, progress)
        for name in ("matched", "unmatched", "duplicate", "ignored"):
            per[name] += counts[name] - before[name]
    imp.accounts = list(accounts.values())
    _finish_import(session, imp, filename, counts, errors)
    log.info("imported %s: %s", filename, counts)
    return ImportResult(
        imp.id,
        filename,
        parsed.format,
        counts,
        errors,
        progress.report,
        progress.payment_ids,
        list(accounts.values()),
    )


def _ours(parsed: ParsedStatement, our_ibans: set[str | None], filename: str) -> list[bool]:
    """For each statement of the file, whether its account is ours (its lines are applied).

    With ``our_ibans``: an account with one of them is ours, one with another IBAN is not; an
    account the file names without an IBAN (a ``BLZ/account number``) is ours only as the
    file's one account. Without: a file of one account is ours, one of several is refused.
    """
    several = len(parsed.accounts) > 1
    if not our_ibans:
        if several:
            raise Invalid(
                f"{filename}: holds statements of {len(parsed.accounts)} accounts "
                f"({', '.join(parsed.accounts)}); set ARFLOW_BANK_ACCOUNTS (or "
                "ARFLOW_COMPANY_IBAN) to our accounts so that their lines are applied and the "
                "others' reported",
                {"file": filename, "accounts": parsed.accounts},
                code="bad_statement",
            )
        return [True for _ in parsed.per_statement()]
    return [
        not several if iban is None else iban in our_ibans
        for iban in (compact_iban(s.account_iban) for s in parsed.per_statement())
    ]


def _account_report(
    accounts: dict[str, dict[str, Any]], label: str, iban: str | None, ours: bool
) -> dict[str, Any]:
    names = ("statements", "lines", "matched", "unmatched", "duplicate", "ignored", "rejected")
    return accounts.setdefault(
        label,
        {
            "account": label,
            "account_iban": iban,
            "ours": ours,
            **dict.fromkeys(names, 0),
            "skipped": 0,
            "statement_ids": [],
        },
    )


@dataclass
class _Progress:
    """What one statement file has done so far: counts, the per-line report, the payments."""

    counts: dict[str, int]
    report: list[dict[str, Any]] = field(default_factory=list)
    payment_ids: list[int] = field(default_factory=list)


def _new_import(
    session: Session,
    filename: str,
    content: bytes,
    parsed: ParsedStatement,
    account: str | None,
    source: str,
    actor: str,
) -> StatementImport:
    imp = StatementImport(
        filename=filename[:300],
        sha256=hashlib.sha256(content).hexdigest(),
        format=parsed.format,
        account_iban=account,
        statement_id=(parsed.statement_id or "")[:100] or None,
        source=source,
        actor=actor,
    )
    session.add(imp)
    session.flush()
    return imp


def _seen_again(
    session: Session, known: ReceivedLine, line: StatementLine, progress: _Progress
) -> None:
    progress.counts["duplicate"] += 1
    progress.report.append({"line": line.line_no, "status": "duplicate", "id": known.id})
    # A payment stored earlier but never delivered is delivered now.
    progress.payment_ids += [
        i for i in _undelivered(session, known) if i not in progress.payment_ids
    ]


@dataclass
class _Fresh:
    """A new line decided and added to the session, its row and payments not written yet."""

    row: ReceivedLine
    line: StatementLine
    decision: Decision
    entry: dict[str, Any]  # its line of the report, completed once the row has its id


def _known_lines(session: Session, keys: list[str]) -> dict[str, ReceivedLine]:
    """The lines among ``keys`` received before (one query per 500 keys)."""
    known: dict[str, ReceivedLine] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        stmt = select(ReceivedLine).where(col(ReceivedLine.dedupe_key).in_(chunk))
        known |= {row.dedupe_key: row for row in session.exec(stmt).all()}
    return known


def _match(
    session: Session,
    import_id: int,
    key: str,
    line: StatementLine,
    book: Book,
    progress: _Progress,
    fresh: list[_Fresh],
) -> ReceivedLine:
    """A new line: decide where its money goes (the book takes it at once, so the next line
    cannot take the same balance) and keep the line; its row and payments are written in
    batches by ``_store_fresh``."""
    decision = decide(_receipt(line), book)
    book.take(decision)
    row = _received(key, import_id, line, decision)
    session.add(row)
    progress.counts[decision.status] += 1
    entry: dict[str, Any] = {
        "line": line.line_no,
        "status": decision.status,
        "id": None,
        "amount_minor": line.amount_minor,
        "invoices": [a.invoice_id for a in decision.allocations],
        **({"reason": decision.reason} if decision.reason else {}),
    }
    progress.report.append(entry)
    fresh.append(_Fresh(row, line, decision, entry))
    return row


def _store_fresh(session: Session, fresh: list[_Fresh], progress: _Progress) -> None:
    """Write the new lines decided so far and then their payments: two batched flushes, not
    two round trips per line. A fresh line's payments are new by construction (their event
    ids carry the line's new id), so none is looked up first."""
    if not fresh:
        return
    session.flush()
    payments: list[Payment] = []
    for f in fresh:
        assert f.row.id is not None
        f.entry["id"] = f.row.id
        for alloc in f.decision.allocations:
            payment = Payment(
                event_id=f"line:{f.row.id}:{alloc.invoice_id}",
                invoice_id=alloc.invoice_id,
                amount_minor=alloc.amount_minor * (1 if f.decision.kind == "payment" else -1),
                currency=f.line.currency,
                paid_at=booked_at(f.line.value_date or f.line.booking_date),
                method="bank_transfer",
                kind=f.decision.kind,
                source="bank",
                line_id=f.row.id,
            )
            session.add(payment)
            payments.append(payment)
    session.flush()
    progress.payment_ids += [p.id for p in payments if p.id is not None]
    fresh.clear()


def _finish_import(
    session: Session,
    imp: StatementImport,
    filename: str,
    counts: dict[str, int],
    errors: list[dict[str, Any]],
) -> None:
    imp.counts = counts
    imp.errors = errors
    session.add(imp)
    try:
        session.commit()
    except IntegrityError:
        # The same file imported at the same moment by someone else: theirs counts.
        session.rollback()
        raise conflict(f"{filename} is being imported concurrently; import it again") from None


def booked_at(day: date) -> datetime:
    """A bank books by day: the payment counts as made at the start of that day (UTC), which
    is what the early-payment discount window is compared with."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def _receipt(line: StatementLine) -> Receipt:
    return Receipt(
        amount_minor=line.amount_minor,
        currency=line.currency,
        # Invoice numbers the payer listed as referred documents count as remittance text.
        remittance=" ".join([line.remittance, *line.document_numbers]).strip(),
        structured_reference=line.structured_reference,
        counterparty_name=line.counterparty_name,
        counterparty_iban=compact_iban(line.counterparty_iban),
    )


def _received(key: str, import_id: int, line: StatementLine, decision: Decision) -> ReceivedLine:
    return ReceivedLine(
        dedupe_key=key,
        source="bank",
        import_id=import_id,
        line_no=line.line_no,
        bank_transaction_id=(line.bank_transaction_id or "")[:120] or None,
        booking_date=line.booking_date,
        amount_minor=line.amount_minor,
        currency=line.currency,
        counterparty_name=(line.counterparty_name or "")[:200] or None,
        counterparty_iban=compact_iban(line.counterparty_iban),
        remittance=line.remittance,
        structured_reference=(line.structured_reference or "")[:100] or None,
        status=decision.status,
        rule=decision.rule,
        reason=(decision.reason or "")[:500] or None,
        customer_id=decision.customer_id,
        candidates=decision.candidates,
    )


def _undelivered(session: Session, line: ReceivedLine) -> list[int]:
    rows = session.exec(
        select(Payment.id).where(Payment.line_id == line.id, Payment.status == "received")
    ).all()
    return [i for i in rows if i is not None]


async def import_statement(
    session: Session,
    client: Client,
    settings: Settings,
    filename: str,
    content: bytes,
    *,
    mapping: str | None,
    source: str,
    actor: str,
) -> tuple[ImportResult, list[Delivery]]:
    result = store_statement(
        session,
        filename,
        content,
        mapping=mapping,
        source=source,
        actor=actor,
        our_ibans=settings.our_ibans,
    )
    return result, await deliver_all(session, client, settings, result.payment_ids)


def list_imports(session: Session, limit: int, offset: int) -> list[StatementImport]:
    """The statement imports, newest first."""
    stmt = (
        select(StatementImport).order_by(col(StatementImport.id).desc()).offset(offset).limit(limit)
    )
    return list(session.exec(stmt).all())


# -- saved CSV mappings ---------------------------------------------------------------------


def save_mapping(session: Session, name: str, columns: dict[str, Any]) -> SavedCsvMapping:
    """Save how one bank's CSV export reads (checked now, used by name on import)."""
    try:
        CsvMapping.from_dict({**columns, "name": name})
    except ValueError as exc:
        raise unprocessable(f"mapping {name!r}: {exc}") from None
    row = SavedCsvMapping(name=name, config=columns)
    return insert_unique(session, row, f"CSV mapping {name!r} already exists")


def list_mappings(session: Session) -> list[SavedCsvMapping]:
    return list(session.exec(select(SavedCsvMapping).order_by(col(SavedCsvMapping.name))).all())


# -- the unmatched queue --------------------------------------------------------------------


def queued_line(session: Session, line_id: int) -> ReceivedLine:
    line = session.get(ReceivedLine, line_id)
    if line is None:
        raise not_found("unmatched payment", line_id)
    if line.status != UNMATCHED:
        raise conflict(f"unmatched payment {line_id} is already {line.status}")
    return line


def apply_line(
    session: Session,
    line_id: int,
    allocations: list[tuple[int, int]],
    credit_customer_id: int | None,
    note: str | None,
    actor: str,
) -> list[int]:
    """A specialist's decision for a queued receipt: amounts to invoices, the rest (if any) to
    a customer's credit. Stores everything in one transaction; returns payments to deliver."""
    line = queued_line(session, line_id)
    assert line.id is not None
    kind = "payment" if line.amount_minor > 0 else "refund"
    rest = _unallocated_rest(line, allocations, kind, credit_customer_id)
    invoices = _invoices_to_apply(session, line, allocations, kind)
    if (
        rest
        and credit_customer_id is not None
        and session.get(Customer, credit_customer_id) is None
    ):
        raise unprocessable(f"unknown customer {credit_customer_id}")
    payment_ids = []
    for (invoice_id, amount), invoice in zip(allocations, invoices, strict=True):
        payment, _ = store_payment(
            session,
            Payment(
                event_id=f"line:{line.id}:{invoice_id}",
                invoice_id=invoice_id,
                amount_minor=amount if kind == "payment" else -amount,
                currency=line.currency,
                paid_at=booked_at(line.booking_date),
                method="bank_transfer" if line.source == "bank" else "webhook",
                kind=kind,
                source=line.source,
                line_id=line.id,
            ),
        )
        assert payment.id is not None
        payment_ids.append(payment.id)
        line.customer_id = line.customer_id or invoice.customer_id
    if rest and credit_customer_id is not None:
        _credit_rest(session, line, rest, credit_customer_id, actor, note)
    _resolve(line, APPLIED, actor, note)
    session.add(line)
    session.commit()
    return payment_ids


def _unallocated_rest(
    line: ReceivedLine,
    allocations: list[tuple[int, int]],
    kind: str,
    credit_customer_id: int | None,
) -> int:
    """What the allocations leave of the receipt, once they are checked to add up."""
    total = sum(amount for _, amount in allocations)
    magnitude = abs(line.amount_minor)
    if len({invoice_id for invoice_id, _ in allocations}) != len(allocations):
        raise unprocessable("each invoice may appear once in allocations")
    if total > magnitude:
        raise unprocessable(f"allocations sum to {total}, more than the received {magnitude}")
    rest = magnitude - total
    if kind == "refund" and (rest or len(allocations) != 1):
        raise unprocessable("a debit (refund, chargeback) is applied whole to one invoice")
    if rest and credit_customer_id is None:
        raise unprocessable(
            f"{rest} of {magnitude} is not allocated: allocate it or name credit_customer_id"
        )
    return rest


def _invoices_to_apply(
    session: Session, line: ReceivedLine, allocations: list[tuple[int, int]], kind: str
) -> list[Invoice]:
    """The allocated invoices, each known, in the receipt's currency and (for a payment) open."""
    invoices = []
    for invoice_id, _ in allocations:
        invoice = session.get(Invoice, invoice_id)
        if invoice is None:
            raise unprocessable(f"unknown invoice {invoice_id}")
        if invoice.currency != line.currency:
            raise unprocessable(
                f"invoice {invoice.number} is in {invoice.currency}, the receipt in {line.currency}"
            )
        if kind == "payment" and invoice.status in CLOSED_STATUSES:
            raise conflict(
                f"invoice {invoice.number} is {invoice.status}; put the money on the "
                "customer's credit instead"
            )
        invoices.append(invoice)
    return invoices


def _credit_rest(
    session: Session,
    line: ReceivedLine,
    rest: int,
    customer_id: int,
    actor: str,
    note: str | None,
) -> None:
    session.add(
        CreditEntry(
            dedupe_key=f"unallocated:{line.id}",
            customer_id=customer_id,
            currency=line.currency,
            amount_minor=rest,
            kind="unallocated",
            line_id=line.id,
            actor=actor,
            note=note,
        )
    )


async def apply_and_deliver(
    session: Session,
    client: Client,
    settings: Settings,
    line_id: int,
    allocations: list[tuple[int, int]],
    credit_customer_id: int | None,
    note: str | None,
    actor: str,
) -> tuple[ReceivedLine | None, list[Delivery]]:
    """``apply_line``, then its payments delivered to their workflows; the line as it is now."""
    payment_ids = apply_line(session, line_id, allocations, credit_customer_id, note, actor)
    deliveries = await deliver_all(session, client, settings, payment_ids)
    return session.get(ReceivedLine, line_id), deliveries


def dismiss_line(session: Session, line_id: int, note: str, actor: str) -> ReceivedLine:
    line = queued_line(session, line_id)
    _resolve(line, DISMISSED, actor, note)
    session.add(line)
    session.commit()
    session.refresh(line)
    return line


def _resolve(line: ReceivedLine, status: str, actor: str, note: str | None) -> None:
    line.status = status
    line.resolved_by = actor
    line.resolved_at = utcnow()
    line.note = note


def invoices_to_choose(session: Session, line: ReceivedLine, limit: int = 20) -> list[Invoice]:
    """The invoices a specialist is likely to apply ``line`` to: the matcher's candidates, then
    the open invoices of the payer it recognised, in the receipt's currency, oldest due first."""
    chosen: dict[int, Invoice] = {}
    if line.candidates:
        for invoice in session.exec(
            select(Invoice).where(col(Invoice.id).in_(line.candidates[:limit]))
        ).all():
            if invoice.id is not None and invoice.currency == line.currency:
                chosen[invoice.id] = invoice
    if line.customer_id is not None:
        stmt = (
            select(Invoice)
            .where(
                Invoice.customer_id == line.customer_id,
                Invoice.currency == line.currency,
                col(Invoice.status).not_in(CLOSED_STATUSES),
            )
            .order_by(col(Invoice.due_at), col(Invoice.id))
            .limit(limit)
        )
        for invoice in session.exec(stmt).all():
            if invoice.id is not None:
                chosen.setdefault(invoice.id, invoice)
    return list(chosen.values())[:limit]


def invoice_named(session: Session, text: str) -> Invoice:
    """The invoice a specialist typed: its number (when one invoice has it), else its id."""
    text = text.strip()
    found = session.exec(select(Invoice).where(Invoice.number == text).limit(2)).all()
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise unprocessable(f"several invoices are numbered {text!r}: give the invoice's id")
    if text.isdigit() and 0 < int(text) <= MAX_ID:
        invoice = session.get(Invoice, int(text))
        if invoice is not None:
            return invoice
    raise unprocessable(f"unknown invoice {text!r}")


def lines_of(session: Session, status: str, limit: int, offset: int) -> list[ReceivedLine]:
    stmt = (
        select(ReceivedLine)
        .where(ReceivedLine.status == status)
        .order_by(col(ReceivedLine.id))
        .offset(offset)
        .limit(limit)
    )
    return list(session.exec(stmt).all())


def count_lines(session: Session, status: str) -> int:
    return len(session.exec(select(ReceivedLine.id).where(ReceivedLine.status == status)).all())
