"""Finding customers: the dashboard's customer list and a customer's open invoices.

Search and the filters a column holds (segment, collector, credit hold, a paused invoice) are
SQL; the figures of each row (open and overdue amounts, the risk band) are the customer's
``behaviour`` and ``risk``, computed on read as on the customer's own page, so the list and the
page never disagree. A filter on the risk band therefore computes the figures of every
customer the other filters leave, up to ``RISK_SCAN_LIMIT`` of them (by name): past that the
answer says it stopped (``scanned_all`` false) rather than taking minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import or_
from sqlmodel import Session, col, func, select

from arflow.customers.behaviour import OPEN_STATUSES, CurrencyBalance, behaviour
from arflow.customers.risk import Band, Risk, risk
from models import Customer, Invoice
from models.types import utcnow

HOLDS = ("credit", "paused", "any")
Hold = Literal["credit", "paused", "any"]
RISK_BANDS: tuple[Band, ...] = ("low", "medium", "high")
#: At most this many customers get their figures computed to filter by risk band.
RISK_SCAN_LIMIT = 2000


@dataclass
class CustomerRow:
    """One customer of the list with the figures shown beside it."""

    customer: Customer
    balances: list[CurrencyBalance]
    risk: Risk
    paused_invoices: int


@dataclass
class CustomerPage:
    rows: list[CustomerRow]
    total: int
    scanned_all: bool = True


def _like(term: str) -> str:
    """``term`` as a case-insensitive substring pattern (its own % and _ taken literally)."""
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _paused() -> Any:
    """Customers with an open invoice on hold ``paused``."""
    return select(Invoice.customer_id).where(
        Invoice.hold == "paused", col(Invoice.status).in_(OPEN_STATUSES)
    )


def _filtered(
    search: str | None, segment: str | None, hold: Hold | None, collector: str | None
) -> Any:
    stmt = select(Customer)
    if search:
        pattern = _like(search)
        stmt = stmt.where(
            or_(
                func.lower(Customer.name).like(pattern, escape="\\"),
                func.lower(Customer.external_id).like(pattern, escape="\\"),
                func.lower(col(Customer.email)).like(pattern, escape="\\"),
            )
        )
    if segment is not None:
        stmt = stmt.where(Customer.segment == segment)
    if collector is not None:
        stmt = stmt.where(func.lower(col(Customer.assigned_collector)) == collector.lower())
    if hold == "credit":
        stmt = stmt.where(col(Customer.credit_hold).is_(True))
    elif hold == "paused":
        stmt = stmt.where(col(Customer.id).in_(_paused()))
    elif hold == "any":
        stmt = stmt.where(or_(col(Customer.credit_hold).is_(True), col(Customer.id).in_(_paused())))
    return stmt.order_by(func.lower(Customer.name), col(Customer.id))


def _paused_counts(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.exec(
        select(Invoice.customer_id, func.count())
        .where(
            col(Invoice.customer_id).in_(ids),
            Invoice.hold == "paused",
            col(Invoice.status).in_(OPEN_STATUSES),
        )
        .group_by(col(Invoice.customer_id))
    ).all()
    return {customer_id: int(n) for customer_id, n in rows}


def _row(session: Session, customer: Customer, now: datetime, paused: int) -> CustomerRow:
    b = behaviour(session, customer, now)
    return CustomerRow(customer=customer, balances=b.balances, risk=risk(b), paused_invoices=paused)


def list_customers(
    session: Session,
    *,
    search: str | None = None,
    segment: str | None = None,
    risk_band: Band | None = None,
    hold: Hold | None = None,
    collector: str | None = None,
    limit: int = 25,
    offset: int = 0,
    now: datetime | None = None,
) -> CustomerPage:
    """Customers by name whose name, external id or email contains ``search`` (any case),
    in ``segment``, with ``collector`` assigned (any case), on ``hold`` (``credit``: a credit
    hold; ``paused``: an open invoice paused; ``any``: either) and in ``risk_band``; one page
    of them with their open and overdue amounts per currency and their risk, and how many
    match in all."""
    now = now or utcnow()
    stmt = _filtered(search, segment, hold, collector)
    if risk_band is None:
        total = int(session.exec(select(func.count()).select_from(stmt.subquery())).one())
        customers = list(session.exec(stmt.offset(offset).limit(limit)).all())
        paused = _paused_counts(session, [c.id for c in customers if c.id is not None])
        rows = [_row(session, c, now, paused.get(c.id or 0, 0)) for c in customers]
        return CustomerPage(rows=rows, total=total)
    candidates = list(session.exec(stmt.limit(RISK_SCAN_LIMIT + 1)).all())
    scanned_all = len(candidates) <= RISK_SCAN_LIMIT
    matching: list[CustomerRow] = []
    for customer in candidates[:RISK_SCAN_LIMIT]:
        row = _row(session, customer, now, 0)
        if row.risk.band == risk_band:
            matching.append(row)
    page = matching[offset : offset + limit]
    paused = _paused_counts(session, [r.customer.id for r in page if r.customer.id is not None])
    for row in page:
        row.paused_invoices = paused.get(row.customer.id or 0, 0)
    return CustomerPage(rows=page, total=len(matching), scanned_all=scanned_all)


def open_invoices(session: Session, customer_id: int, limit: int = 200) -> list[Invoice]:
    """The customer's invoices that are open, disputed or escalated, the earliest due first."""
    stmt = (
        select(Invoice)
        .where(Invoice.customer_id == customer_id, col(Invoice.status).in_(OPEN_STATUSES))
        .order_by(col(Invoice.due_date), col(Invoice.id))
        .limit(limit)
    )
    return list(session.exec(stmt).all())


def segment_names(session: Session) -> list[str]:
    """The segments customers are in, for a filter's choices."""
    rows = session.exec(select(Customer.segment).distinct().order_by(col(Customer.segment)))
    return list(rows.all())
