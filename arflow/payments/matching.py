"""Which invoices a bank receipt pays: a pure function over a snapshot of the books.

Rules, in order (the first that decides wins):

1. **Reference.** Our ISO 11649 payment references and invoice numbers found in the structured
   reference or the remittance text (spaces, case and punctuation ignored). One open invoice:
   it gets the whole amount (an overpayment becomes the customer's credit in the workflow).
   Several: the amount must equal the sum of their open balances.
2. **Customer + exact amount.** The payer found by IBAN, else by name; exactly one of their
   open invoices in the receipt's currency has this open balance.
3. **Customer + sum.** Exactly one combination of that customer's open invoices adds up to the
   amount (searched among at most ``MAX_SUBSET`` invoices, oldest first).

Anything else (no candidate, several equally good ones, another currency, an invoice already
closed) goes to the unmatched queue with the reason and the candidates it saw. A debit is a
refund or chargeback when it names exactly one invoice; other debits are not receipts and are
ignored. Ambiguity is never resolved by guessing: a wrong match dunns a customer who paid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations

import ahocorasick

from models.reference import references_in

MAX_SUBSET = 16  # 2^16 combinations at most per receipt
_NOT_ALNUM = re.compile(r"[^0-9A-Z]+")


def normalize(text: str) -> str:
    """Upper case letters and digits only: ``inv 2026/0042`` -> ``INV20260042``."""
    return _NOT_ALNUM.sub("", text.upper())


@dataclass(frozen=True)
class Item:
    """What matching needs to know of one invoice."""

    invoice_id: int
    customer_id: int
    number: str
    currency: str
    balance_minor: int
    due_at: datetime
    status: str

    @property
    def open(self) -> bool:
        return self.status in ("open", "disputed", "escalated")


@dataclass(frozen=True)
class Payer:
    customer_id: int
    name: str
    iban: str | None


@dataclass(frozen=True)
class Receipt:
    amount_minor: int  # signed: money in is positive
    currency: str
    remittance: str
    structured_reference: str | None = None
    counterparty_name: str | None = None
    counterparty_iban: str | None = None


@dataclass(frozen=True)
class Allocation:
    invoice_id: int
    amount_minor: int  # positive; the receipt's sign is in Decision.kind


@dataclass
class Decision:
    status: str  # matched, unmatched or ignored
    rule: str | None = None  # reference, amount, sum
    kind: str = "payment"  # payment or refund
    allocations: list[Allocation] = field(default_factory=list)
    reason: str | None = None
    customer_id: int | None = None
    candidates: list[int] = field(default_factory=list)


class Book:
    """A snapshot of invoices and customers, updated as receipts are matched, so two lines
    of one statement cannot both take the same open balance."""

    def __init__(self, items: Iterable[Item], payers: Iterable[Payer]) -> None:
        self.items = {i.invoice_id: i for i in items}
        self._numbers = _number_automaton(self.items.values())
        self.by_customer: dict[int, list[int]] = {}
        for item in sorted(self.items.values(), key=lambda i: (i.due_at, i.invoice_id)):
            self.by_customer.setdefault(item.customer_id, []).append(item.invoice_id)
        self.by_iban: dict[str, int] = {}
        self.by_name: dict[str, list[int]] = {}
        for payer in payers:
            if payer.iban:
                self.by_iban[payer.iban] = payer.customer_id
            self.by_name.setdefault(normalize(payer.name), []).append(payer.customer_id)

    def take(self, decision: Decision) -> None:
        """Lower the snapshot's balances by what a decision applied."""
        if decision.kind != "payment":
            return
        for alloc in decision.allocations:
            item = self.items[alloc.invoice_id]
            left = max(0, item.balance_minor - alloc.amount_minor)
            self.items[alloc.invoice_id] = Item(
                item.invoice_id,
                item.customer_id,
                item.number,
                item.currency,
                left,
                item.due_at,
                "paid" if left == 0 else item.status,
            )

    def referenced(self, text: str) -> list[int]:
        """Invoices named in ``text`` by our reference or by number, in order of appearance.

        Numbers are found by one Aho-Corasick pass over the text (every occurrence of every
        invoice number at once, whatever the size of the book), then taken longest number
        first, earlier occurrence first, never overlapping one already taken nor glued to more
        digits; an invoice number several invoices share names the first of them."""
        found = [i for i in references_in(text) if i in self.items]
        flat = normalize(text)
        hits: list[tuple[int, int]] = []
        taken: list[tuple[int, int]] = []
        if self._numbers is not None:
            occurrences = sorted(
                (rank, end - length + 1, length, invoice_id)
                for end, (rank, length, invoice_id) in self._numbers.iter(flat)
            )
            for _, start, length, invoice_id in occurrences:
                end = start + length
                if _glued(flat, start, end) or any(a < end and start < b for a, b in taken):
                    continue
                taken.append((start, end))
                hits.append((start, invoice_id))
        for _, invoice_id in sorted(hits):
            if invoice_id not in found:
                found.append(invoice_id)
        return found

    def payer_of(self, receipt: Receipt) -> int | None:
        if receipt.counterparty_iban and receipt.counterparty_iban in self.by_iban:
            return self.by_iban[receipt.counterparty_iban]
        if receipt.counterparty_name:
            named = self.by_name.get(normalize(receipt.counterparty_name), [])
            if len(named) == 1:
                return named[0]
        return None

    def open_items(self, customer_id: int, currency: str) -> list[Item]:
        items = (self.items[i] for i in self.by_customer.get(customer_id, []))
        return [i for i in items if i.open and i.currency == currency and i.balance_minor > 0]


def _number_automaton(items: Iterable[Item]) -> ahocorasick.Automaton | None:
    """Every invoice number of at least 3 letters or digits (normalized), each with its rank
    (longer numbers first; among equal lengths the book's order), its length and the first
    invoice that has it; None when there is none."""
    ranked = sorted(
        ((normalize(i.number), i.invoice_id) for i in items), key=lambda pair: -len(pair[0])
    )
    automaton = ahocorasick.Automaton()
    for rank, (key, invoice_id) in enumerate(ranked):
        if len(key) >= 3 and key not in automaton:
            automaton.add_word(key, (rank, len(key), invoice_id))
    if len(automaton) == 0:
        return None
    automaton.make_automaton()
    return automaton


def _glued(text: str, start: int, end: int) -> bool:
    """A number running on into more digits is another number (INV42 inside INV421)."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return (text[start].isdigit() and before.isdigit()) or (
        text[end - 1].isdigit() and after.isdigit()
    )


def decide(receipt: Receipt, book: Book) -> Decision:
    """Where ``receipt`` goes; see the module docstring for the rules."""
    if receipt.amount_minor == 0:
        return Decision("ignored", reason="zero amount")
    text = " ".join(filter(None, [receipt.structured_reference, receipt.remittance]))
    named = book.referenced(text)
    if named:
        return _by_reference(receipt, book, named)
    if receipt.amount_minor < 0:
        return Decision("ignored", reason="a debit that names none of our invoices")
    customer_id = book.payer_of(receipt)
    if customer_id is None:
        return Decision(
            "unmatched", reason="no invoice reference, and the payer is not a known customer"
        )
    return _by_amount(receipt, book, customer_id)


def _by_reference(receipt: Receipt, book: Book, named: list[int]) -> Decision:
    items = [book.items[i] for i in named]
    customer_ids = {i.customer_id for i in items}
    customer_id = customer_ids.pop() if len(customer_ids) == 1 else None

    def unmatched(reason: str) -> Decision:
        return Decision(
            "unmatched", rule="reference", reason=reason, customer_id=customer_id, candidates=named
        )

    numbers = ", ".join(i.number for i in items)
    other = [i for i in items if i.currency != receipt.currency]
    if other:
        return unmatched(
            f"paid in {receipt.currency}, invoice {other[0].number} is in {other[0].currency}"
        )
    if receipt.amount_minor < 0:
        if len(items) != 1:
            return unmatched(f"a debit naming several invoices ({numbers})")
        return Decision(
            "matched",
            rule="reference",
            kind="refund",
            allocations=[Allocation(items[0].invoice_id, -receipt.amount_minor)],
            customer_id=customer_id,
            candidates=named,
        )
    closed = [i for i in items if not i.open]
    if closed:
        return unmatched(f"invoice {closed[0].number} is already {closed[0].status}")
    if len(items) == 1:
        return Decision(
            "matched",
            rule="reference",
            allocations=[Allocation(items[0].invoice_id, receipt.amount_minor)],
            customer_id=customer_id,
            candidates=named,
        )
    total = sum(i.balance_minor for i in items)
    if total != receipt.amount_minor:
        return unmatched(
            f"names invoices {numbers}, whose open balances sum to {total}, "
            f"not {receipt.amount_minor}"
        )
    return Decision(
        "matched",
        rule="reference",
        allocations=[Allocation(i.invoice_id, i.balance_minor) for i in items],
        customer_id=customer_id,
        candidates=named,
    )


def _by_amount(receipt: Receipt, book: Book, customer_id: int) -> Decision:
    items = book.open_items(customer_id, receipt.currency)
    exact = [i for i in items if i.balance_minor == receipt.amount_minor]
    if len(exact) == 1:
        return Decision(
            "matched",
            rule="amount",
            allocations=[Allocation(exact[0].invoice_id, receipt.amount_minor)],
            customer_id=customer_id,
            candidates=[exact[0].invoice_id],
        )
    if len(exact) > 1:
        return Decision(
            "unmatched",
            rule="amount",
            reason=f"{len(exact)} open invoices of the customer have exactly this amount",
            customer_id=customer_id,
            candidates=[i.invoice_id for i in exact],
        )
    combos = _combinations(items[:MAX_SUBSET], receipt.amount_minor)
    if len(combos) == 1:
        return Decision(
            "matched",
            rule="sum",
            allocations=[Allocation(i.invoice_id, i.balance_minor) for i in combos[0]],
            customer_id=customer_id,
            candidates=[i.invoice_id for i in combos[0]],
        )
    reason = (
        "several combinations of the customer's open invoices add up to the amount"
        if combos
        else "no open invoice or combination of the customer's open invoices has this amount"
    )
    return Decision(
        "unmatched",
        rule="sum" if combos else None,
        reason=reason,
        customer_id=customer_id,
        candidates=sorted({i.invoice_id for combo in combos for i in combo}),
    )


def _combinations(items: list[Item], amount: int) -> list[tuple[Item, ...]]:
    """Combinations of two or more items summing to ``amount``; stops after finding two."""
    found: list[tuple[Item, ...]] = []
    for size in range(2, len(items) + 1):
        for combo in combinations(items, size):
            if sum(i.balance_minor for i in combo) == amount:
                found.append(combo)
                if len(found) > 1:
                    return found
    return found
