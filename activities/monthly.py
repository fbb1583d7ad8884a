"""Monthly statements of account: a daily schedule runs this; every customer whose
``statement_day`` is today (in their zone) and who has open items gets one PDF statement by
email, at most once per month (unique per customer and month, recorded before sending)."""

from __future__ import annotations

import logging
from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio import activity

from arflow.db import SessionFactory
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
from workflows.types import StatementRun

log = logging.getLogger("arflow.payments.statements")
OPEN = ("open", "disputed", "escalated")


class MonthlyStatementActivities:
    def __init__(self, sessions: SessionFactory, channel: Channel, seller: Seller) -> None:
        self.sessions = sessions
        self.channel = channel
        self.seller = seller

    @activity.defn(name="send_statements")
    def send_statements(self, run: StatementRun) -> dict[str, int]:
        at = run.at or utcnow()
        counts = {"sent": 0, "skipped": 0, "blocked": 0, "failed": 0}
        with self.sessions() as session:
            customers = session.exec(
                select(Customer).where(col(Customer.statement_day).is_not(None))
            ).all()
            for customer in customers:
                today = at.astimezone(ZoneInfo(customer.timezone)).date()
                if customer.statement_day != today.day:
                    continue
                activity.heartbeat(customer.id)
                outcome = self._one(session, customer, today)
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def _one(self, session: Session, customer: Customer, today: date) -> str:
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
        pdf = statement_pdf(self.seller, customer, invoices, today)
        when = local_date(today, customer.timezone, customer.locale)
        try:
            result = self.channel.deliver(
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

    def all(self) -> list[object]:
        return [self.send_statements]
