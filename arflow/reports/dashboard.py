"""Read models for the web dashboard (``api/web.py``) that the JSON API has no endpoint for.

Read-only queries and figures built from ``api.reports``; nothing here writes or decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, col, func, select

from arflow.reports.common import ReportFilter
from arflow.reports.kpis import kpis
from models import Customer, Dispute, Invoice, Promise


@dataclass(frozen=True)
class MonthDso:
    """DSO of one calendar month (up to today for the current month), per currency."""

    month: date  # the first day
    start: date
    end: date
    dso_days: dict[str, Decimal | None]


def month_starts(today: date, months: int) -> list[date]:
    """The first days of the last ``months`` calendar months, oldest first, today's last."""
    firsts: list[date] = []
    year, month = today.year, today.month
    for _ in range(months):
        firsts.append(date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return firsts[::-1]


def dso_trend(session: Session, today: date, months: int = 6) -> list[MonthDso]:
    """DSO per month for the last ``months`` months, from ``kpis`` over each month."""
    trend = []
    for first in month_starts(today, months):
        following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        end = min(following - timedelta(days=1), today)
        report = kpis(session, first, end, today, ReportFilter())
        trend.append(
            MonthDso(
                month=first,
                start=first,
                end=end,
                dso_days={c.currency: c.dso_days for c in report.currencies},
            )
        )
    return trend


def open_disputes(session: Session) -> int:
    stmt = select(func.count()).select_from(Dispute).where(Dispute.status == "open")
    return int(session.exec(stmt).one())


def disputes_past_sla(session: Session, now: datetime, limit: int = 100) -> list[Dispute]:
    """Open disputes whose resolution deadline has passed, the longest overdue first."""
    stmt = (
        select(Dispute)
        .where(Dispute.status == "open", col(Dispute.sla_at) < now)
        .order_by(col(Dispute.sla_at), col(Dispute.id))
        .limit(limit)
    )
    return list(session.exec(stmt).all())


def broken_promises(session: Session, limit: int = 100) -> list[Promise]:
    """Promises marked broken, the latest first."""
    stmt = (
        select(Promise)
        .where(Promise.status == "broken")
        .order_by(col(Promise.updated_at).desc(), col(Promise.id).desc())
        .limit(limit)
    )
    return list(session.exec(stmt).all())


def customers(session: Session, limit: int = 500) -> list[Customer]:
    """Customers for a filter's choices, by name."""
    stmt = select(Customer).order_by(col(Customer.name), col(Customer.id)).limit(limit)
    return list(session.exec(stmt).all())


def invoices_by_id(session: Session, ids: Iterable[int]) -> dict[int, Invoice]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.exec(select(Invoice).where(col(Invoice.id).in_(wanted))).all()
    return {i.id: i for i in rows if i.id is not None}


def customer_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.exec(select(Customer.id, Customer.name).where(col(Customer.id).in_(wanted)))
    return {cid: name for cid, name in rows.all() if cid is not None}
