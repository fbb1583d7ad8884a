"""The matching rules, as a pure function over a snapshot of the books."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from arflow.payments.matching import Allocation, Book, Item, Payer, Receipt, decide, normalize
from models.reference import payment_reference, references_in

T0 = datetime(2026, 11, 1, tzinfo=UTC)
IBAN_ACME = "DE89370400440532013000"


def item(
    invoice_id: int,
    balance: int,
    customer_id: int = 1,
    number: str | None = None,
    currency: str = "EUR",
    status: str = "open",
    due_days: int = 0,
) -> Item:
    return Item(
        invoice_id=invoice_id,
        customer_id=customer_id,
        number=number or f"INV-2026-{invoice_id:04d}",
        currency=currency,
        balance_minor=balance,
        due_at=T0 + timedelta(days=due_days or invoice_id),
        status=status,
    )


PAYERS = [Payer(1, "Acme GmbH", IBAN_ACME), Payer(2, "Globex Corp.", None)]


def book(*items: Item) -> Book:
    return Book(items, PAYERS)


def receipt(amount: int, text: str = "", **kw: str) -> Receipt:
    return Receipt(amount_minor=amount, remittance=text, currency=kw.pop("currency", "EUR"), **kw)


def test_normalize_ignores_spaces_case_and_punctuation() -> None:
    assert normalize(" inv 2026/0042-a ") == "INV20260042A"


def test_our_reference_in_free_text_with_spaces() -> None:
    ref = payment_reference(42)
    spaced = " ".join(ref[i : i + 4] for i in range(0, len(ref), 4)).lower()
    assert references_in(f"payment {spaced}, thank you") == [42]
    assert references_in("RF00AR42") == []  # wrong check digits: not ours
    assert references_in(ref + "1") == []  # a typo is not cut back to a valid prefix


def test_reference_rule_invoice_number_tolerates_spacing_case_punctuation() -> None:
    b = book(item(42, 50_000))
    decision = decide(receipt(50_000, "Zahlung inv 2026 / 0042"), b)
    assert (decision.status, decision.rule) == ("matched", "reference")
    assert decision.allocations == [Allocation(42, 50_000)]


def test_reference_rule_does_not_match_a_number_inside_a_longer_number() -> None:
    b = book(item(42, 50_000, number="1042"))
    assert decide(receipt(50_000, "invoice 10421"), b).status == "unmatched"
    assert decide(receipt(50_000, "invoice 1042."), b).status == "matched"


def test_structured_reference_matches_and_partial_amount_is_applied() -> None:
    b = book(item(7, 50_000))
    decision = decide(receipt(20_000, structured_reference=payment_reference(7)), b)
    assert decision.allocations == [Allocation(7, 20_000)]


def test_several_referenced_invoices_must_sum_to_the_amount() -> None:
    b = book(item(1, 30_000), item(2, 20_000))
    ok = decide(receipt(50_000, "INV-2026-0001 INV-2026-0002"), b)
    assert ok.allocations == [Allocation(1, 30_000), Allocation(2, 20_000)]
    short = decide(receipt(45_000, "INV-2026-0001 INV-2026-0002"), b)
    assert short.status == "unmatched"
    assert short.reason == (
        "names invoices INV-2026-0001, INV-2026-0002, whose open balances sum to 50000, not 45000"
    )
    assert short.candidates == [1, 2]


def test_referenced_invoice_already_paid_or_in_other_currency_waits() -> None:
    b = book(item(1, 0, status="paid"), item(2, 10_000, currency="USD"))
    paid = decide(receipt(10_000, "INV-2026-0001"), b)
    assert (paid.status, paid.reason) == ("unmatched", "invoice INV-2026-0001 is already paid")
    other = decide(receipt(10_000, "INV-2026-0002"), b)
    assert other.reason == "paid in EUR, invoice INV-2026-0002 is in USD"


def test_customer_by_iban_and_exact_amount() -> None:
    b = book(item(1, 30_000), item(2, 20_000), item(3, 20_000, customer_id=2))
    decision = decide(receipt(30_000, "thanks", counterparty_iban=IBAN_ACME), b)
    assert (decision.status, decision.rule, decision.allocations) == (
        "matched",
        "amount",
        [Allocation(1, 30_000)],
    )


def test_customer_by_name_when_no_iban() -> None:
    b = book(item(3, 20_000, customer_id=2))
    decision = decide(receipt(20_000, "", counterparty_name="GLOBEX CORP"), b)
    assert decision.allocations == [Allocation(3, 20_000)]


def test_two_invoices_with_the_same_amount_are_ambiguous() -> None:
    b = book(item(1, 20_000), item(2, 20_000))
    decision = decide(receipt(20_000, "", counterparty_iban=IBAN_ACME), b)
    assert decision.status == "unmatched"
    assert decision.candidates == [1, 2]
    assert decision.reason == "2 open invoices of the customer have exactly this amount"


def test_customer_and_sum_of_several_invoices() -> None:
    b = book(item(1, 10_000), item(2, 25_000), item(3, 40_000))
    decision = decide(receipt(50_000, "", counterparty_iban=IBAN_ACME), b)
    assert (decision.rule, decision.allocations) == (
        "sum",
        [Allocation(1, 10_000), Allocation(3, 40_000)],
    )


def test_two_combinations_are_ambiguous() -> None:
    b = book(item(1, 10_000), item(2, 20_000), item(3, 30_000), item(4, 40_000))
    decision = decide(receipt(50_000, "", counterparty_iban=IBAN_ACME), b)
    assert decision.status == "unmatched"
    assert decision.reason == (
        "several combinations of the customer's open invoices add up to the amount"
    )


def test_unknown_payer_and_no_reference_waits() -> None:
    decision = decide(receipt(1_000, "donation"), book(item(1, 1_000)))
    assert decision.reason == "no invoice reference, and the payer is not a known customer"


def test_debit_naming_one_invoice_is_a_refund_other_debits_are_ignored() -> None:
    b = book(item(1, 0, status="paid"))
    refund = decide(receipt(-5_000, "Rueckbuchung INV-2026-0001"), b)
    assert (refund.status, refund.kind, refund.allocations) == (
        "matched",
        "refund",
        [Allocation(1, 5_000)],
    )
    assert decide(receipt(-5_000, "office rent"), b).status == "ignored"


def test_book_take_stops_a_second_line_taking_the_same_balance() -> None:
    b = book(item(1, 30_000))
    first = decide(receipt(30_000, "", counterparty_iban=IBAN_ACME), b)
    b.take(first)
    second = decide(receipt(30_000, "", counterparty_iban=IBAN_ACME), b)
    assert second.status == "unmatched"


def _referenced_by_scanning(book: Book, text: str) -> list[int]:
    """The number search as it was before the automaton: every number of the book searched
    in the text in turn, longest first (the oracle for the property below)."""
    found = [i for i in references_in(text) if i in book.items]
    flat = normalize(text)
    ranked = sorted(
        ((normalize(i.number), i.invoice_id) for i in book.items.values()),
        key=lambda pair: -len(pair[0]),
    )
    hits: list[tuple[int, int]] = []
    taken: list[tuple[int, int]] = []
    for key, invoice_id in ranked:
        if len(key) < 3:
            continue
        start = flat.find(key)
        while start >= 0:
            end = start + len(key)
            glued = (flat[start].isdigit() and start > 0 and flat[start - 1].isdigit()) or (
                flat[end - 1].isdigit() and end < len(flat) and flat[end].isdigit()
            )
            if not glued and not any(a < end and start < b for a, b in taken):
                taken.append((start, end))
                hits.append((start, invoice_id))
            start = flat.find(key, start + 1)
    for _, invoice_id in sorted(hits):
        if invoice_id not in found:
            found.append(invoice_id)
    return found


numbers = st.text(alphabet="AB12-/ ", min_size=1, max_size=8)


@st.composite
def book_and_text(draw: st.DrawFn) -> tuple[list[str], str]:
    """A book's invoice numbers and a text made of some of them, glued or spaced, and noise."""
    invoice_numbers = draw(st.lists(numbers, min_size=1, max_size=12))
    word = st.one_of(st.sampled_from(invoice_numbers), st.text(alphabet="AB123 .x", max_size=6))
    words = draw(st.lists(word, max_size=8))
    glue = draw(st.sampled_from(["", " ", "/"]))
    return invoice_numbers, glue.join(words)


@settings(max_examples=400, deadline=None)
@given(book_and_text())
def test_number_search_finds_what_a_scan_of_every_number_finds(
    case: tuple[list[str], str],
) -> None:
    """Overlapping, nested, repeated and shared numbers, glued digits: the automaton names the
    same invoices in the same order as searching each number of the book in turn."""
    invoice_numbers, text = case
    b = book(*(item(n + 1, 100, number=num) for n, num in enumerate(invoice_numbers)))
    assert b.referenced(text) == _referenced_by_scanning(b, text)


def test_number_search_examples() -> None:
    b = book(
        item(1, 100, number="INV-42"), item(2, 100, number="INV-421"), item(3, 1, number="X-42")
    )
    assert b.referenced("pays inv 421 and INV42") == [2, 1]
    assert b.referenced("INV-4210") == []  # glued to another digit: another number
