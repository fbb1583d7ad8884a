"""What a customer sees in the portal, always looked up *by the customer the link opens*:
an invoice id of another customer answers exactly as a missing one (``not_found``), so
changing an id in the address reaches nothing (no other invoice, PDF or name)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from arflow.customers.behaviour import OPEN_STATUSES
from arflow.errors import not_found
from arflow.messages.context import charges_not_waived
from models import Invoice, InvoiceCharge
from models.types import utcnow

PAID_DAYS = 90


@dataclass(frozen=True)
class PortalInvoice:
    invoice: Invoice
    charges: list[InvoiceCharge]
    charges_minor: int
    state: str  # a key of the portal's words: st_open, st_overdue, st_disputed, ...
    days_overdue: int

    @property
    def total_due_minor(self) -> int:
        return self.invoice.balance_minor + self.charges_minor

    @property
    def payable(self) -> bool:
        """Something to pay (a disputed or escalated invoice too: the customer's choice)."""
        return self.invoice.status in OPEN_STATUSES and self.invoice.balance_minor > 0

    @property
    def arrangeable(self) -> bool:
        """A plan or a promise may be asked for (not while disputed or with the agency)."""
        return self.invoice.status == "open" and self.invoice.balance_minor > 0


def today_of(timezone: str, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(ZoneInfo(timezone)).date()


def _state(invoice: Invoice, today: date) -> tuple[str, int]:
    overdue = max(0, (today - invoice.due_date).days)
    if invoice.status == "paid":
        return "st_paid", 0
    if invoice.status not in OPEN_STATUSES:
        return "st_closed", 0
    if invoice.status == "disputed":
        return "st_disputed", overdue
    if invoice.status == "escalated":
        return "st_agency", overdue
    if invoice.hold in ("plan", "promise", "paused"):
        return f"st_{invoice.hold}", overdue
    return ("st_overdue" if overdue else "st_open"), overdue


def describe(session: Session, invoice: Invoice, today: date) -> PortalInvoice:
    assert invoice.id is not None
    charges = charges_not_waived(session, invoice.id)
    state, overdue = _state(invoice, today)
    return PortalInvoice(
        invoice,
        charges,
        sum(c.amount_minor - c.settled_minor for c in charges),
        state,
        overdue,
    )


def open_invoices(session: Session, customer_id: int, today: date) -> list[PortalInvoice]:
    rows = session.exec(
        select(Invoice)
        .where(Invoice.customer_id == customer_id, col(Invoice.status).in_(OPEN_STATUSES))
        .order_by(col(Invoice.due_at), col(Invoice.id))
    ).all()
    return [describe(session, row, today) for row in rows]


def recently_paid(session: Session, customer_id: int, today: date) -> list[Invoice]:
    since = utcnow() - timedelta(days=PAID_DAYS)
    return list(
        session.exec(
            select(Invoice)
            .where(
                Invoice.customer_id == customer_id,
                Invoice.status == "paid",
                col(Invoice.closed_at) >= since,
            )
            .order_by(col(Invoice.closed_at).desc())
            .limit(50)
        ).all()
    )


def invoice_of(session: Session, customer_id: int, invoice_id: int) -> Invoice:
    """The customer's invoice ``invoice_id``; another customer's is ``not_found`` too."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or invoice.customer_id != customer_id:
        raise not_found("invoice", invoice_id)
    return invoice
