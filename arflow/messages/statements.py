"""Monthly statements of account: every customer whose ``statement_day`` is today (in their
zone) and who has open items gets one PDF statement by email, at most once per month (unique
per customer and month, recorded before sending)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.messages.channels import (
    AmbiguousDeliveryError,
    Attachment,
    Channel,
    OutboundMessage,
    PermanentDeliveryError,
)
from arflow.messages.documents import Seller, statement_pdf
from arflow.messages.render import local_date
from models import ContactBlock, Customer, Invoice, StatementSent
from models.types import utcnow

OPEN = ("open", "disputed", "escalated")


def due_today(session: Session, at: datetime) -> Iterator[tuple[Customer, date]]:
    """The customers whose statement day is the day ``at`` falls on in their zone, each with
    that day."""
    customers = session.exec(select(Customer).where(col(Customer.statement_day).is_not(None))).all()
    for customer in customers:
        today = at.astimezone(ZoneInfo(customer.timezone)).date()
        if customer.statement_day != today.day:
            continue
        yield customer, today


def send_statement(
    session: Session, channel: Channel, seller: Seller, customer: Customer, today: date
) -> str:
    """Send ``customer`` this month's statement (once): ``sent`` (or sent with an uncertain
    outcome), ``skipped`` (no open items, or already recorded), ``blocked`` (no email) or
    ``failed``. Commits."""
    assert customer.id is not None
    invoices = session.exec(
        select(Invoice).where(
            Invoice.customer_id == customer.id,
            col(Invoice.status).in_(OPEN),
            Invoice.balance_minor > 0,
        )
    ).all()
    if not invoices:
        return "skipped"
    row = StatementSent(
        customer_id=customer.id,
        period=today.strftime("%Y-%m"),
        status="queued",
        open_items=len(invoices),
    )
    session.add(row)
    try:
        session.commit()  # recorded before sending: a retry never sends a second one
    except IntegrityError:
        session.rollback()
        return "skipped"
    blocked = session.exec(
        select(ContactBlock).where(
            ContactBlock.customer_id == customer.id, ContactBlock.channel == "email"
        )
    ).first()
    if blocked is not None or not customer.email:
        row.status, row.detail = "blocked", "email blocked" if blocked else "no email on file"
        session.add(row)
        session.commit()
        return "blocked"
    pdf = statement_pdf(seller, customer, invoices, today)
    when = local_date(today, customer.timezone, customer.locale)
    try:
        result = channel.deliver(
            OutboundMessage(
                outbox_id=0,
                invoice_id=min(i.id or 0 for i in invoices),
                step_key=f"statement-{row.period}",
                channel="email",
                recipient=customer.email,
                subject=f"Statement of account, {when}",
                body=(
                    f"Dear {customer.name},\n\nattached is your statement of account as of "
                    f"{when}: {len(invoices)} open item(s).\n\nKind regards"
                ),
                attachments=(Attachment(f"statement-{row.period}.pdf", pdf),),
                customer_id=customer.id,
            )
        )
    except PermanentDeliveryError as exc:
        row.status, row.detail = "failed", exc.reason[:500]
    except AmbiguousDeliveryError as exc:
        row.status, row.detail = "uncertain", exc.reason[:500]
    else:
        row.status, row.provider_id, row.sent_at = "sent", result.provider_id, utcnow()
    session.add(row)
    session.commit()
    return "sent" if row.status in ("sent", "uncertain") else "failed"
