"""Receivables as of a day (``receivables_query``, which the reports aggregate): for a day on
or after today the current state is used (``invoices.balance_minor`` and status). For a past
day the balance is reconstructed: invoices issued by then and not closed by then
(``closed_at``), amount minus the signed payments paid by then (refunds and chargebacks are
negative; payments kept as customer credit because the invoice was already closed, status
``unapplied``, are left out), minus upheld dispute credits resolved by then; an early-payment
discount the invoice holds settles the rest once the payments reach it; the result is kept
between 0 and the amount.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from sqlalchemy import Select, Subquery, and_, case
from sqlalchemy import select as sa_select
from sqlmodel import col, func

from arflow.reports.common import OPEN_STATUSES, VOID, ReportFilter, end_of, filtered
from models import Dispute, Invoice, Payment

# -- receivables as of a day ----------------------------------------------------------------


def receivables_query(
    as_of: date, today: date, f: ReportFilter
) -> tuple[Subquery, Literal["current", "reconstructed"]]:
    """Open receivables by the end of ``as_of`` as a subquery (``invoice_id``, ``customer_id``,
    ``currency``, ``due_date``, ``collector``, ``balance_minor`` > 0) and how their balances
    are found: the reports aggregate it in the database instead of loading every invoice."""
    columns: tuple[Any, ...] = (
        col(Invoice.id).label("invoice_id"),
        col(Invoice.customer_id).label("customer_id"),
        col(Invoice.currency).label("currency"),
        col(Invoice.due_date).label("due_date"),
        col(Invoice.collector).label("collector"),
    )
    if as_of >= today:
        current = filtered(
            sa_select(*columns, col(Invoice.balance_minor).label("balance_minor")).where(
                col(Invoice.status).in_(OPEN_STATUSES), col(Invoice.balance_minor) > 0
            ),
            f,
        )
        return current.subquery("receivables"), "current"
    cutoff = end_of(as_of)
    paid = (
        sa_select(
            col(Payment.invoice_id).label("invoice_id"),
            func.sum(Payment.amount_minor).label("total"),
        )
        .where(col(Payment.paid_at) < cutoff, col(Payment.status) != "unapplied")
        .group_by(col(Payment.invoice_id))
        .subquery("paid")
    )
    credited = (
        sa_select(
            col(Dispute.invoice_id).label("invoice_id"),
            func.sum(Dispute.credit_minor).label("total"),
        )
        .where(
            col(Dispute.status) == "upheld",
            col(Dispute.resolved_at) < cutoff,
            col(Dispute.credit_minor) > 0,
        )
        .group_by(col(Dispute.invoice_id))
        .subquery("credited")
    )
    amount = col(Invoice.amount_minor)
    raw = amount - func.coalesce(paid.c.total, 0) - func.coalesce(credited.c.total, 0)
    # The payment that reached the discounted amount settled it; then between 0 and the amount.
    settled = case(
        (
            and_(
                col(Invoice.discount_taken_minor) > 0, raw > 0, raw <= Invoice.discount_taken_minor
            ),
            0,
        ),
        else_=raw,
    )
    balance = case((settled < 0, 0), (settled > amount, amount), else_=settled)
    alive = filtered(
        sa_select(*columns, balance.label("balance_minor"))
        .outerjoin(paid, paid.c.invoice_id == col(Invoice.id))
        .outerjoin(credited, credited.c.invoice_id == col(Invoice.id))
        .where(
            col(Invoice.issued_on) <= as_of,
            col(Invoice.status) != VOID,
            (col(Invoice.closed_at).is_(None)) | (col(Invoice.closed_at) >= cutoff),
        ),
        f,
    ).subquery("alive")
    positive = sa_select(alive).where(alive.c.balance_minor > 0)
    return positive.subquery("receivables"), "reconstructed"


def last_payments(f: ReportFilter) -> Select[Any]:
    """Paid invoices with their last payment instant: ``customer_id``, ``issued_on``,
    ``due_date``, ``paid_at`` (columns only: the reports read thousands of them)."""
    last = func.max(Payment.paid_at)
    stmt: Any = (
        sa_select(
            col(Invoice.customer_id).label("customer_id"),
            col(Invoice.issued_on).label("issued_on"),
            col(Invoice.due_date).label("due_date"),
            last.label("paid_at"),
        )
        .join(Payment, col(Payment.invoice_id) == col(Invoice.id))
        .where(
            col(Invoice.status) == "paid",
            col(Payment.kind) == "payment",
            col(Payment.status) != "unapplied",
        )
        # the other columns depend on the primary key
        .group_by(col(Invoice.id), col(Invoice.customer_id), col(Invoice.issued_on))
        .group_by(col(Invoice.due_date))
    )
    return filtered(stmt, f)
