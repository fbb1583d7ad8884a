"""Monthly statements of account: every customer whose ``statement_day`` is today (in their
zone) and who has open items gets one PDF statement by email, at most once per month (unique
per customer and month, recorded before sending).

Like every other message, a statement respects the customer's contact window (the contact
rules of the policy of their most overdue open invoice, ``workflows.schedule.contact_allowed``,
as reminders do): the daily run fires at one UTC hour for everyone, which is the middle of
the night somewhere. A statement that falls outside the window is recorded ``deferred`` with
the window's opening, and the run's workflow sleeps until then and sends it in a later pass.

The row's status says what happened so far: ``queued`` (known not sent: the first attempt,
or a provider's transient error, after which the activity's retry sends it), ``deferred``
(waiting for the contact window), ``sending`` (committed before the provider call, so an
attempt that dies while the provider has the request is never repeated: it becomes
``uncertain``), then ``sent``, ``uncertain``, ``blocked`` or ``failed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.messages.channels import Attachment, Channel, OutboundMessage, deliver_and_record
from arflow.messages.documents import Seller, statement_pdf
from arflow.messages.render import local_date
from models import ContactBlock, Customer, DunningPolicy, Invoice, StatementSent
from models.types import utcnow
from workflows.schedule import contact_allowed

OPEN = ("open", "disputed", "escalated")
TO_SEND = ("queued", "deferred")  # a row in these states is still to be sent


@dataclass
class StatementOutcome:
    """``sent`` (or sent with an uncertain outcome), ``skipped`` (no open items, or already
    done), ``deferred`` (until ``until``: the contact window opens), ``blocked`` or ``failed``."""

    status: str
    until: datetime | None = None


def due_today(session: Session, at: datetime) -> Iterator[tuple[Customer, date]]:
    """The customers whose statement day is the day ``at`` falls on in their zone, each with
    that day."""
    customers = session.exec(select(Customer).where(col(Customer.statement_day).is_not(None))).all()
    for customer in customers:
        today = customer_today(customer, at)
        if customer.statement_day != today.day:
            continue
        yield customer, today


def customer_today(customer: Customer, at: datetime) -> date:
    return at.astimezone(ZoneInfo(customer.timezone)).date()


def send_statement(
    session: Session,
    channel: Channel,
    seller: Seller,
    customer: Customer,
    today: date,
    now: datetime | None = None,
    portal_url: str | None = None,
) -> StatementOutcome:
    """Send ``customer`` this month's statement (once), if their contact window is open at
    ``now`` (default: the wall clock), with their portal link when given. Commits. A
    provider's transient error leaves the row ``queued`` and propagates: the retry sends it."""
    assert customer.id is not None
    now = now or utcnow()
    invoices = session.exec(
        select(Invoice)
        .where(
            Invoice.customer_id == customer.id,
            col(Invoice.status).in_(OPEN),
            Invoice.balance_minor > 0,
        )
        .order_by(col(Invoice.due_at), col(Invoice.id))
    ).all()
    if not invoices:
        return StatementOutcome("skipped")
    row = _statement_row(session, customer.id, today.strftime("%Y-%m"), len(invoices))
    if row.status == "sending":
        # An earlier attempt died while the provider had the request: it may have been
        # accepted, so it is never sent again.
        row.status, row.detail = "uncertain", "the attempt ended while the provider had it"
        session.add(row)
        session.commit()
        return StatementOutcome("sent")
    if row.status not in TO_SEND:
        return StatementOutcome("skipped")  # done the first time
    blocked = session.exec(
        select(ContactBlock).where(
            ContactBlock.customer_id == customer.id, ContactBlock.channel == "email"
        )
    ).first()
    if blocked is not None or not customer.email:
        row.status, row.detail = "blocked", "email blocked" if blocked else "no email on file"
        session.add(row)
        session.commit()
        return StatementOutcome("blocked")
    opens = window_opens(session, customer, invoices[0], now)
    if opens > now:
        row.status = "deferred"
        row.detail = f"outside the contact window: sent when it opens at {opens.isoformat()}"
        session.add(row)
        session.commit()
        return StatementOutcome("deferred", opens)
    if not _claim(session, row):
        return StatementOutcome("skipped")  # a concurrent run took it
    pdf = statement_pdf(seller, customer, invoices, today)
    when = local_date(today, customer.timezone, customer.locale)
    message = OutboundMessage(
        outbox_id=0,
        invoice_id=min(i.id or 0 for i in invoices),
        step_key=f"statement-{row.period}",
        channel="email",
        recipient=customer.email,
        subject=f"Statement of account, {when}",
        body=(
            f"Dear {customer.name},\n\nattached is your statement of account as of "
            f"{when}: {len(invoices)} open item(s).\n\n"
            + (f"See, pay or query them online: {portal_url}\n\n" if portal_url else "")
            + "Kind regards"
        ),
        attachments=(Attachment(f"statement-{row.period}.pdf", pdf),),
        customer_id=customer.id,
    )
    deliver_and_record(session, channel, message, row)
    return StatementOutcome("sent" if row.status in ("sent", "uncertain") else "failed")


def window_opens(session: Session, customer: Customer, invoice: Invoice, now: datetime) -> datetime:
    """The first instant at or after ``now`` when the customer may be contacted, by the
    contact rules of ``invoice``'s policy (their most overdue open invoice)."""
    policy = session.get(DunningPolicy, invoice.policy_id)
    if policy is None:
        return now
    return contact_allowed(now, policy.spec(), customer.timezone, customer.country)


def _statement_row(session: Session, customer_id: int, period: str, items: int) -> StatementSent:
    """The month's row: inserted ``queued`` (committed before anything is sent, so a retry
    never sends a second one), or the one an earlier attempt or pass recorded."""
    session.add(
        StatementSent(customer_id=customer_id, period=period, status="queued", open_items=items)
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
    row = session.exec(
        select(StatementSent).where(
            StatementSent.customer_id == customer_id, StatementSent.period == period
        )
    ).one()
    if row.status in TO_SEND:
        row.open_items = items
    return row


def _claim(session: Session, row: StatementSent) -> bool:
    """Mark the row ``sending`` and commit, unless another attempt already took it."""
    taken = session.exec(
        update(StatementSent)
        .where(col(StatementSent.id) == row.id, col(StatementSent.status).in_(TO_SEND))
        .values(status="sending", open_items=row.open_items, detail=None)
    )
    session.commit()
    if taken.rowcount != 1:
        return False
    row.status, row.detail = "sending", None
    return True
