"""Receivables as of a day (``receivables_at``): for a day on or after today the current state
is used (``invoices.balance_minor`` and status). For a past day the balance is
reconstructed: invoices issued by then and not closed by then (``closed_at``), amount minus
the signed payments paid by then (refunds and chargebacks are negative; payments kept as
customer credit because the invoice was already closed, status ``unapplied``, are left out),
minus upheld dispute credits resolved by then; an early-payment discount the invoice holds
settles the rest once the payments reach it; the result is kept between 0 and the amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import Select

from arflow.reports.common import OPEN_STATUSES, VOID, ReportFilter, end_of, filtered
from models import Dispute, Invoice, Payment

# -- receivables as of a day ----------------------------------------------------------------


@dataclass(frozen=True)
class Receivable:
    invoice_id: int
    customer_id: int
    currency: str
    due_date: date
    collector: str | None
    balance_minor: int


def receivables_at(
    session: Session, as_of: date, today: date, f: ReportFilter
) -> tuple[list[Receivable], Literal["current", "reconstructed"]]:
    """Open receivables by the end of ``as_of`` and how their balances were found."""
    if as_of >= today:
        stmt = filtered(
            select(Invoice).where(
                col(Invoice.status).in_(OPEN_STATUSES), col(Invoice.balance_minor) > 0
            ),
            f,
        )
        rows = session.exec(stmt.order_by(col(Invoice.id))).all()
        return [_receivable(inv, inv.balance_minor) for inv in rows], "current"
    return _reconstructed(session, as_of, f), "reconstructed"


def _receivable(inv: Invoice, balance: int) -> Receivable:
    assert inv.id is not None
    return Receivable(
        invoice_id=inv.id,
        customer_id=inv.customer_id,
        currency=inv.currency,
        due_date=inv.due_date,
        collector=inv.collector,
        balance_minor=balance,
    )


def _reconstructed(session: Session, as_of: date, f: ReportFilter) -> list[Receivable]:
    cutoff = end_of(as_of)
    alive = filtered(
        select(Invoice).where(
            col(Invoice.issued_on) <= as_of,
            col(Invoice.status) != VOID,
            (col(Invoice.closed_at).is_(None)) | (col(Invoice.closed_at) >= cutoff),
        ),
        f,
    )
    invoices = session.exec(alive.order_by(col(Invoice.id))).all()
    if not invoices:
        return []
    paid_stmt = filtered(
        select(Payment.invoice_id, func.sum(Payment.amount_minor))
        .join(Invoice, col(Invoice.id) == col(Payment.invoice_id))
        .where(col(Payment.paid_at) < cutoff, col(Payment.status) != "unapplied")
        .group_by(col(Payment.invoice_id)),
        f,
    )
    paid = {i: int(total or 0) for i, total in session.exec(paid_stmt).all()}
    credit_stmt = filtered(
        select(Dispute.invoice_id, func.sum(Dispute.credit_minor))
        .join(Invoice, col(Invoice.id) == col(Dispute.invoice_id))
        .where(
            col(Dispute.status) == "upheld",
            col(Dispute.resolved_at) < cutoff,
            col(Dispute.credit_minor) > 0,
        )
        .group_by(col(Dispute.invoice_id)),
        f,
    )
    credited = {i: int(total or 0) for i, total in session.exec(credit_stmt).all()}
    out = []
    for inv in invoices:
        assert inv.id is not None
        balance = inv.amount_minor - paid.get(inv.id, 0) - credited.get(inv.id, 0)
        if inv.discount_taken_minor and 0 < balance <= inv.discount_taken_minor:
            balance = 0  # the payment that reached the discounted amount settled it
        balance = max(0, min(inv.amount_minor, balance))
        if balance > 0:
            out.append(_receivable(inv, balance))
    return out


def last_payments(f: ReportFilter) -> Select[Invoice, datetime]:
    """(paid invoice, its last payment instant) pairs."""
    last = func.max(Payment.paid_at)
    stmt = (
        select(Invoice, last)
        .join(Payment, col(Payment.invoice_id) == col(Invoice.id))
        .where(
            col(Invoice.status) == "paid",
            col(Payment.kind) == "payment",
            col(Payment.status) != "unapplied",
        )
        .group_by(col(Invoice.id))  # the other columns depend on the primary key
    )
    return filtered(stmt, f)
