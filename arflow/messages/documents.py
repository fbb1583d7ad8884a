"""PDF documents: the invoice copy sent with reminders, letters, account statements and the
claim summary of the legal stage.

Made with fpdf2: pure Python, no system libraries, fast enough for a 2-core laptop and CI.
(WeasyPrint would render HTML templates, but needs Pango and Cairo from Debian on every
machine, developers', CI's and the Docker image's.) Text is set in DejaVu Sans, shipped in
``arflow/messages/fonts/`` with its license, so any Unicode a customer's name or address holds
(€, ü, é, ł ...) is embedded in the PDF whatever fonts the machine has.

Money is formatted by ``arflow.messages.render.money`` (Babel, from integer minor units, never a
float) and dates by ``arflow.messages.render.local_date``, both in the customer's locale; the few
fixed labels exist in English and German (English for any other locale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel.numbers import format_decimal
from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos
from fpdf.fonts import FontFace

from arflow.messages.context import charge_lines
from arflow.messages.render import local_date, money
from arflow.reports.aging import BUCKETS, bucket_of
from models.reference import payment_reference

if TYPE_CHECKING:
    from arflow.config import Settings
    from models import AgencyPlacement, Customer, Invoice, InvoiceCharge, OutboxMessage, Payment

FONT_DIR = Path(__file__).parent / "fonts"
FONT = "DejaVu"
LINE = 5.5  # mm per line of body text

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "invoice_copy": "Invoice {number} (copy)",
        "number": "Invoice number",
        "issued": "Invoice date",
        "due": "Due date",
        "description": "Description",
        "quantity": "Qty",
        "unit_price": "Unit price",
        "amount": "Amount",
        "total": "Total",
        "paid": "Paid",
        "balance": "Balance due",
        "how_to_pay": "How to pay",
        "transfer": "Bank transfer to {iban}, reference {reference}",
        "reference": "Please quote the reference {reference} with your payment.",
        "pay_online": "Pay online: {url}",
        "no_lines": "Invoice {number}",
        "statement": "Statement of account",
        "as_of": "As of {date}",
        "customer": "Customer",
        "invoice": "Invoice",
        "days_overdue": "Days overdue",
        "aging": "Aging",
        "no_open_items": "No open items.",
        "page": "Page {page}/{pages}",
        "current": "Not yet due",
        "days_1_30": "1-30 days overdue",
        "days_31_60": "31-60 days overdue",
        "days_61_90": "61-90 days overdue",
        "days_over_90": "Over 90 days overdue",
        "claim": "Claim summary: invoice {number}",
        "creditor": "Creditor",
        "debtor": "Debtor",
        "customer_number": "Customer number",
        "invoice_amount": "Invoice amount",
        "payments": "Payments received",
        "no_payments": "No payments received.",
        "paid_on": "Date",
        "payment_kind": "Kind",
        "method": "Method",
        "payment": "Payment",
        "refund": "Refund",
        "chargeback": "Chargeback",
        "received": "Received",
        "other_reductions": "Credits and discounts",
        "charges": "Late charges (not waived)",
        "no_charges": "No late charges.",
        "charge": "Charge",
        "fee": "Late fee",
        "interest": "Interest",
        "compensation": "Compensation for recovery costs",
        "period": "{start} to {end}",
        "claimed": "Total claimed",
        "messages": "Reminders and notices sent",
        "no_messages": "No reminders or notices sent.",
        "sent_on": "Sent",
        "step": "Step",
        "channel": "Channel",
        "subject": "Subject",
        "status": "Status",
        "placement": "Collection agency",
        "no_placement": "Not placed with a collection agency.",
        "agency": "Agency",
        "placed_on": "Placed on",
        "placed_amount": "Amount placed",
        "agency_reference": "Reference",
        "stage": "Legal stage {stage}, prepared {date}",
    },
    "de": {
        "invoice_copy": "Rechnung {number} (Kopie)",
        "number": "Rechnungsnummer",
        "issued": "Rechnungsdatum",
        "due": "Fällig am",
        "description": "Beschreibung",
        "quantity": "Menge",
        "unit_price": "Einzelpreis",
        "amount": "Betrag",
        "total": "Summe",
        "paid": "Bezahlt",
        "balance": "Offener Betrag",
        "how_to_pay": "Zahlung",
        "transfer": "Überweisung auf {iban}, Verwendungszweck {reference}",
        "reference": "Bitte geben Sie bei der Zahlung die Referenz {reference} an.",
        "pay_online": "Online bezahlen: {url}",
        "no_lines": "Rechnung {number}",
        "statement": "Kontoauszug",
        "as_of": "Stand {date}",
        "customer": "Kunde",
        "invoice": "Rechnung",
        "days_overdue": "Tage überfällig",
        "aging": "Fälligkeitsstruktur",
        "no_open_items": "Keine offenen Posten.",
        "page": "Seite {page}/{pages}",
        "current": "Noch nicht fällig",
        "days_1_30": "1-30 Tage überfällig",
        "days_31_60": "31-60 Tage überfällig",
        "days_61_90": "61-90 Tage überfällig",
        "days_over_90": "Über 90 Tage überfällig",
        "claim": "Forderungsaufstellung: Rechnung {number}",
        "creditor": "Gläubiger",
        "debtor": "Schuldner",
        "customer_number": "Kundennummer",
        "invoice_amount": "Rechnungsbetrag",
        "payments": "Erhaltene Zahlungen",
        "no_payments": "Keine Zahlungen erhalten.",
        "paid_on": "Datum",
        "payment_kind": "Art",
        "method": "Zahlungsweg",
        "payment": "Zahlung",
        "refund": "Erstattung",
        "chargeback": "Rückbuchung",
        "received": "Erhalten",
        "other_reductions": "Gutschriften und Skonto",
        "charges": "Verzugskosten (nicht erlassen)",
        "no_charges": "Keine Verzugskosten.",
        "charge": "Posten",
        "fee": "Mahngebühr",
        "interest": "Verzugszinsen",
        "compensation": "Verzugspauschale",
        "period": "{start} bis {end}",
        "claimed": "Gesamtforderung",
        "messages": "Versandte Erinnerungen und Mahnungen",
        "no_messages": "Keine Erinnerungen oder Mahnungen versandt.",
        "sent_on": "Versandt",
        "step": "Stufe",
        "channel": "Kanal",
        "subject": "Betreff",
        "status": "Status",
        "placement": "Inkassounternehmen",
        "no_placement": "Nicht an ein Inkassounternehmen übergeben.",
        "agency": "Inkassounternehmen",
        "placed_on": "Übergeben am",
        "placed_amount": "Übergebener Betrag",
        "agency_reference": "Aktenzeichen",
        "stage": "Rechtliche Stufe {stage}, erstellt am {date}",
    },
}


def _labels(locale: str) -> dict[str, str]:
    return LABELS.get(locale.replace("-", "_").split("_")[0].lower(), LABELS["en"])


def grouped(value: str, size: int = 4) -> str:
    """``DE89370400440532013000`` -> ``DE89 3704 0044 0532 0130 00`` (IBANs, references)."""
    compact = "".join(value.split())
    return " ".join(compact[i : i + size] for i in range(0, len(compact), size))


@dataclass(frozen=True)
class Seller:
    """Who sends the document: the company's name, postal address and bank account."""

    name: str
    address: str = ""
    iban: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Seller:
        return cls(settings.company_name, settings.company_address, settings.company_iban)


class _Document(FPDF):
    """A4 with DejaVu Sans, the seller's name in the header and page numbers in the footer."""

    def __init__(self, seller: Seller, labels: dict[str, str], title: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.seller = seller
        self.labels = labels
        self.add_font(FONT, "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.set_margins(20, 18, 20)
        self.set_auto_page_break(auto=True, margin=20)
        self.set_title(title)
        self.set_author(seller.name or "arflow")
        self.set_creator("arflow")
        self.alias_nb_pages()
        self.add_page()

    def header(self) -> None:
        if not self.seller.name:
            return
        self.set_font(FONT, "B", 12)
        self.cell(0, 6, self.seller.name, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, "", 8)
        if self.seller.address:
            self.cell(
                0,
                4,
                " · ".join(_lines(self.seller.address)),
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
        self.ln(6)

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font(FONT, "", 8)
        self.cell(
            0,
            5,
            self.labels["page"].format(page=self.page_no(), pages="{nb}"),
            align=Align.R,
        )

    # -- building blocks --------------------------------------------------------------------

    def text_line(self, text: str, size: float = 10, bold: bool = False, h: float = LINE) -> None:
        self.set_font(FONT, "B" if bold else "", size)
        self.multi_cell(0, h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def address_block(self, name: str, address: str | None) -> None:
        self.text_line(name)
        for line in _lines(address or ""):
            self.text_line(line)
        self.ln(8)

    def facts(self, rows: Sequence[tuple[str, str]]) -> None:
        """Label-value pairs, labels in bold."""
        for label, value in rows:
            self.set_font(FONT, "B", 10)
            self.cell(45, LINE, label)
            self.set_font(FONT, "", 10)
            self.multi_cell(0, LINE, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(4)

    def grid(
        self,
        rows: Sequence[Sequence[str]],
        widths: Sequence[int],
        align: Sequence[str],
        bold_last: bool = False,
    ) -> None:
        """A table whose first row is the headings."""
        self.set_font(FONT, "", 9)
        with self.table(
            col_widths=tuple(widths),
            text_align=tuple(align),
            headings_style=FontFace(emphasis="BOLD"),
            line_height=LINE,
            padding=1,
        ) as table:
            for n, cells in enumerate(rows):
                style = FontFace(emphasis="BOLD") if bold_last and n == len(rows) - 1 else None
                row = table.row()
                for cell in cells:
                    row.cell(cell, style=style)
        self.ln(4)

    def pdf_bytes(self) -> bytes:
        return bytes(self.output())


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _quantity(value: Any, locale: str) -> str:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    return format_decimal(number, format="#,##0.###", locale=locale.replace("-", "_"))


def invoice_copy_pdf(
    invoice: Invoice,
    customer: Customer,
    seller: Seller,
    pay_url: str,
    *,
    balance_minor: int | None = None,
) -> bytes:
    """The copy of an invoice that goes with a reminder.

    Args:
        invoice: the invoice (its ``lines`` fill the table; without lines one line says the
            invoice's total).
        customer: who it is addressed to, in their locale and time zone.
        seller: our name, address and IBAN (``Seller.from_settings``).
        pay_url: the invoice's payment page.
        balance_minor: what is open now; default ``invoice.balance_minor``. ``Paid`` shows
            everything that reduced the invoice (payments, credits, discount taken).
    """
    assert invoice.id is not None
    loc, tz = customer.locale, customer.timezone
    lab = _labels(loc)
    cur = invoice.currency
    balance = invoice.balance_minor if balance_minor is None else balance_minor
    reference = grouped(payment_reference(invoice.id))
    doc = _Document(seller, lab, lab["invoice_copy"].format(number=invoice.number))
    doc.address_block(customer.name, customer.address)
    doc.text_line(lab["invoice_copy"].format(number=invoice.number), size=14, bold=True, h=8)
    doc.ln(2)
    doc.facts(
        [
            (lab["number"], invoice.number),
            (lab["issued"], local_date(invoice.issued_on, tz, loc)),
            (lab["due"], local_date(invoice.due_date, tz, loc)),
        ]
    )
    rows: list[list[str]] = [
        [lab["description"], lab["quantity"], lab["unit_price"], lab["amount"]]
    ]
    for line in invoice.lines:
        rows.append(
            [
                str(line.get("description", "")),
                _quantity(line.get("quantity", 1), loc),
                money(int(line.get("unit_price_minor", 0)), cur, loc),
                money(int(line.get("amount_minor", 0)), cur, loc),
            ]
        )
    if not invoice.lines:
        rows.append([lab["no_lines"].format(number=invoice.number), "1", "", ""])
        rows[-1][2] = rows[-1][3] = money(invoice.amount_minor, cur, loc)
    doc.grid(rows, widths=(90, 20, 30, 30), align=("LEFT", "RIGHT", "RIGHT", "RIGHT"))
    doc.grid(
        [
            [lab["total"], money(invoice.amount_minor, cur, loc)],
            [lab["paid"], money(invoice.amount_minor - balance, cur, loc)],
            [lab["balance"], money(balance, cur, loc)],
        ],
        widths=(140, 30),
        align=("LEFT", "RIGHT"),
        bold_last=True,
    )
    doc.text_line(lab["how_to_pay"], size=11, bold=True, h=7)
    if seller.iban:
        doc.text_line(lab["transfer"].format(iban=grouped(seller.iban), reference=reference))
    else:
        doc.text_line(lab["reference"].format(reference=reference))
    doc.text_line(lab["pay_online"].format(url=pay_url))
    return doc.pdf_bytes()


def letter_pdf(
    seller: Seller,
    recipient_name: str,
    recipient_address: str | None,
    subject: str,
    paragraphs: Sequence[str],
    on: date,
    *,
    locale: str = "en",
    timezone: str = "UTC",
) -> bytes:
    """A letter: address block, date, subject in bold, then the body paragraphs."""
    lab = _labels(locale)
    doc = _Document(seller, lab, subject)
    doc.address_block(recipient_name, recipient_address)
    doc.set_font(FONT, "", 10)
    doc.cell(0, LINE, local_date(on, timezone, locale), align=Align.R)
    doc.ln(LINE * 2)
    doc.text_line(subject, size=11, bold=True, h=7)
    doc.ln(3)
    for paragraph in paragraphs:
        doc.text_line(paragraph.strip())
        doc.ln(3)
    return doc.pdf_bytes()


def statement_pdf(
    seller: Seller,
    customer: Customer,
    invoices: Sequence[Invoice],
    as_of: date,
) -> bytes:
    """A statement of account: the open items (balance > 0) with their due date, days
    overdue and balance, then per currency the aging bucket totals and the total.

    Buckets are the aging report's (``arflow.reports.aging.bucket_of``): not yet due, 1-30, 31-60,
    61-90 and over 90 days overdue.
    """
    loc, tz = customer.locale, customer.timezone
    lab = _labels(loc)
    doc = _Document(seller, lab, lab["statement"])
    doc.address_block(customer.name, customer.address)
    doc.text_line(lab["statement"], size=14, bold=True, h=8)
    doc.text_line(lab["as_of"].format(date=local_date(as_of, tz, loc)))
    doc.ln(4)
    items = sorted(
        (i for i in invoices if i.balance_minor > 0), key=lambda i: (i.due_date, i.number)
    )
    if not items:
        doc.text_line(lab["no_open_items"])
        return doc.pdf_bytes()
    rows = [[lab["invoice"], lab["issued"], lab["due"], lab["days_overdue"], lab["balance"]]]
    aging: dict[str, dict[str, int]] = {}
    for inv in items:
        late = max(0, (as_of - inv.due_date).days)
        per_bucket = aging.setdefault(inv.currency, dict.fromkeys(BUCKETS, 0))
        per_bucket[bucket_of(as_of, inv.due_date)] += inv.balance_minor
        rows.append(
            [
                inv.number,
                local_date(inv.issued_on, tz, loc),
                local_date(inv.due_date, tz, loc),
                str(late) if late else "",
                money(inv.balance_minor, inv.currency, loc),
            ]
        )
    doc.grid(rows, widths=(35, 37, 37, 26, 35), align=("LEFT", "LEFT", "LEFT", "RIGHT", "RIGHT"))
    doc.text_line(lab["aging"], size=11, bold=True, h=7)
    for currency in sorted(aging):
        buckets = aging[currency]
        table = [[currency, lab["balance"]]]
        table += [[lab[b], money(buckets[b], currency, loc)] for b in BUCKETS]
        table.append([lab["total"], money(sum(buckets.values()), currency, loc)])
        doc.grid(table, widths=(120, 50), align=("LEFT", "RIGHT"), bold_last=True)
    return doc.pdf_bytes()


REVERSAL_KINDS = ("refund", "chargeback")


def claim_summary_pdf(
    seller: Seller,
    invoice: Invoice,
    customer: Customer,
    *,
    stage: str,
    balance_minor: int,
    payments: Sequence[Payment],
    charges: Sequence[InvoiceCharge],
    messages: Sequence[OutboxMessage],
    placement: AgencyPlacement | None,
    as_of: date,
) -> bytes:
    """The claim summary handed to a lawyer or court at the legal stage.

    Creditor and debtor, the invoice, the payments received (refunds and chargebacks take
    money back), other reductions (credits, discounts: what the invoice amount less the net
    payments less ``balance_minor`` leaves), the open balance, the late charges not waived and
    the total claimed, the reminders and notices sent, and the agency placement if any.

    Args:
        balance_minor: the open balance claimed (the workflow's, when the stage began).
        payments: the invoice's applied payments, in order.
        charges: its charges not waived, in order.
        messages: its reminders and notices that went out (outbox rows), in order.
    """
    loc, tz = customer.locale, customer.timezone
    lab = _labels(loc)
    title = lab["claim"].format(number=invoice.number)
    doc = _Document(seller, lab, title)
    doc.text_line(title, size=14, bold=True, h=8)
    doc.text_line(lab["stage"].format(stage=stage, date=local_date(as_of, tz, loc)))
    doc.ln(4)
    _claim_parties(doc, lab, seller, invoice, customer)
    received = _claim_payments(doc, lab, payments, invoice.currency, tz, loc)
    charged = _claim_charges(doc, lab, charges, invoice.currency, tz, loc)
    _claim_totals(doc, lab, invoice, received, balance_minor, charged, loc)
    _claim_messages(doc, lab, messages, tz, loc)
    _claim_placement(doc, lab, placement, tz, loc)
    return doc.pdf_bytes()


def _claim_parties(
    doc: _Document, lab: dict[str, str], seller: Seller, invoice: Invoice, customer: Customer
) -> None:
    """Creditor, debtor and the invoice."""
    loc, tz, cur = customer.locale, customer.timezone, invoice.currency
    creditor = " · ".join([seller.name, *_lines(seller.address)]) if seller.name else ""
    debtor = " · ".join([customer.name, *_lines(customer.address or "")])
    contact = ", ".join(x for x in (customer.email, customer.phone) if x)
    doc.facts(
        [
            *([(lab["creditor"], creditor)] if creditor else []),
            (lab["debtor"], debtor + (f" ({contact})" if contact else "")),
            (lab["customer_number"], customer.external_id),
            (lab["number"], invoice.number),
            (lab["issued"], local_date(invoice.issued_on, tz, loc)),
            (lab["due"], local_date(invoice.due_date, tz, loc)),
            (lab["invoice_amount"], money(invoice.amount_minor, cur, loc)),
        ]
    )


def _claim_payments(
    doc: _Document, lab: dict[str, str], payments: Sequence[Payment], cur: str, tz: str, loc: str
) -> int:
    """The payments received, listed; returns their net sum (reversals take money back)."""
    doc.text_line(lab["payments"], size=11, bold=True, h=7)
    received = 0
    if payments:
        rows = [[lab["paid_on"], lab["payment_kind"], lab["method"], lab["amount"]]]
        for p in payments:
            signed = -p.amount_minor if p.kind in REVERSAL_KINDS else p.amount_minor
            received += signed
            rows.append(
                [
                    local_date(p.paid_at, tz, loc),
                    lab.get(p.kind, p.kind),
                    p.method,
                    money(signed, cur, loc),
                ]
            )
        doc.grid(rows, widths=(40, 40, 55, 35), align=("LEFT", "LEFT", "LEFT", "RIGHT"))
    else:
        doc.text_line(lab["no_payments"])
        doc.ln(4)
    return received


def _claim_charges(
    doc: _Document,
    lab: dict[str, str],
    charges: Sequence[InvoiceCharge],
    cur: str,
    tz: str,
    loc: str,
) -> int:
    """The late charges not waived, listed; returns their sum."""
    lines = charge_lines(charges, cur, tz, loc)
    charged = sum(int(line["amount_minor"]) for line in lines)
    doc.text_line(lab["charges"], size=11, bold=True, h=7)
    if lines:
        rows = [[lab["charge"], lab["amount"]]]
        for line in lines:
            label = lab.get(str(line["kind"]), str(line["kind"]))
            if line["rate"]:
                label += f" ({line['rate']} p.a.)"
            if line["period_to"]:
                label += " " + lab["period"].format(
                    start=line["period_from"], end=line["period_to"]
                )
            rows.append([label, str(line["amount"])])
        doc.grid(rows, widths=(135, 35), align=("LEFT", "RIGHT"))
    else:
        doc.text_line(lab["no_charges"])
        doc.ln(4)
    return charged


def _claim_totals(
    doc: _Document,
    lab: dict[str, str],
    invoice: Invoice,
    received: int,
    balance_minor: int,
    charged: int,
    loc: str,
) -> None:
    """Invoice amount, received, other reductions, balance, charges and the total claimed."""
    cur = invoice.currency
    totals = [[lab["invoice_amount"], money(invoice.amount_minor, cur, loc)]]
    totals.append([lab["received"], money(-received, cur, loc)])
    other = invoice.amount_minor - received - balance_minor
    if other:
        totals.append([lab["other_reductions"], money(-other, cur, loc)])
    totals.append([lab["balance"], money(balance_minor, cur, loc)])
    if charged:
        totals.append([lab["charges"], money(charged, cur, loc)])
    totals.append([lab["claimed"], money(balance_minor + charged, cur, loc)])
    doc.grid(totals, widths=(135, 35), align=("LEFT", "RIGHT"), bold_last=True)


def _claim_messages(
    doc: _Document, lab: dict[str, str], messages: Sequence[OutboxMessage], tz: str, loc: str
) -> None:
    """The reminders and notices that went out."""
    doc.text_line(lab["messages"], size=11, bold=True, h=7)
    if messages:
        rows = [[lab["sent_on"], lab["step"], lab["channel"], lab["status"], lab["subject"]]]
        for m in messages:
            rows.append(
                [
                    local_date(m.sent_at or m.created_at, tz, loc),
                    m.step_key,
                    m.channel,
                    m.status,
                    m.subject,
                ]
            )
        doc.grid(rows, widths=(32, 28, 18, 22, 70), align=("LEFT",) * 5)
    else:
        doc.text_line(lab["no_messages"])
        doc.ln(4)


def _claim_placement(
    doc: _Document, lab: dict[str, str], placement: AgencyPlacement | None, tz: str, loc: str
) -> None:
    """The agency placement, if any."""
    doc.text_line(lab["placement"], size=11, bold=True, h=7)
    if placement is not None:
        doc.facts(
            [
                (lab["agency"], placement.agency),
                (lab["placed_on"], local_date(placement.placed_at, tz, loc)),
                (lab["placed_amount"], money(placement.amount_minor, placement.currency, loc)),
                (lab["agency_reference"], placement.reference),
                (lab["status"], placement.status),
            ]
        )
    else:
        doc.text_line(lab["no_placement"])
