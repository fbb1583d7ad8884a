"""A fresh portal link, asked for on the page of an expired, revoked or unknown link, goes by
email to the address on file, never to an address typed in (that only finds the customer).

The API stores a ``PortalLinkRequest`` and starts ``PortalLinkWorkflow`` (id from the row, so
it runs once); its activity calls ``send``. The delivery rules are the reminders' (see
``arflow.messages.sending``): the row is marked ``sending`` before the provider is called; a
transient refusal puts it back to ``queued`` and is retried; a refusal for good is ``failed``;
an attempt that died while the provider had the message is ``uncertain`` and never resent.
A customer gets at most ``PER_HOUR`` fresh links an hour, whatever the address asking: more
requests are recorded as ``limited`` and send nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col, func, select

from arflow.config import Settings
from arflow.messages.channels import Channel, OutboundMessage, deliver_and_record
from arflow.messages.render import local_date
from arflow.portal.i18n import language, t
from arflow.portal.links import portal_url
from models import ContactBlock, Customer, PortalLinkRequest
from models.types import utcnow

PER_HOUR = 3


def request_link(session: Session, customer: Customer, reason: str) -> PortalLinkRequest:
    """Record the request (``queued``, or ``limited`` past ``PER_HOUR``). Commits."""
    assert customer.id is not None
    recent = session.exec(
        select(func.count())
        .select_from(PortalLinkRequest)
        .where(
            PortalLinkRequest.customer_id == customer.id,
            col(PortalLinkRequest.requested_at) >= utcnow() - timedelta(hours=1),
            PortalLinkRequest.status != "limited",
        )
    ).one()
    row = PortalLinkRequest(customer_id=customer.id, reason=reason)
    if recent >= PER_HOUR:
        row.status, row.detail = "limited", f"more than {PER_HOUR} fresh links in an hour"
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def not_started(session: Session, row: PortalLinkRequest, why: str) -> None:
    """The send could not be started (Temporal down): the request says so. Commits."""
    row.status, row.detail = "failed", f"could not start the send: {why}"[:500]
    session.add(row)
    session.commit()


def customer_by_email(session: Session, email: str) -> Customer | None:
    """The customer whose address on file is ``email`` (case-insensitive), when exactly one."""
    rows = session.exec(
        select(Customer).where(func.lower(Customer.email) == email.strip().lower()).limit(2)
    ).all()
    return rows[0] if len(rows) == 1 else None


def _claim(session: Session, row_id: int) -> bool:
    claimed = session.execute(
        update(PortalLinkRequest)
        .where(col(PortalLinkRequest.id) == row_id, col(PortalLinkRequest.status) == "queued")
        .values(status="sending")
    )
    session.commit()
    return bool(getattr(claimed, "rowcount", 0))


def send(session: Session, settings: Settings, channel: Channel, request_id: int) -> str:
    """Send the fresh link of request ``request_id`` once; answers the row's final status."""
    row = session.get(PortalLinkRequest, request_id)
    if row is None:
        return "missing"
    if row.status == "sending":  # an attempt died while the provider had it
        row.status, row.detail = "uncertain", "the attempt ended while the provider had it"
    if row.status != "queued":
        session.add(row)
        session.commit()
        return row.status
    customer = session.get(Customer, row.customer_id)
    assert customer is not None and customer.id is not None
    blocked = session.exec(
        select(ContactBlock).where(
            ContactBlock.customer_id == customer.id, ContactBlock.channel == "email"
        )
    ).first()
    if blocked is not None or not customer.email:
        row.status = "blocked"
        row.detail = f"email blocked: {blocked.reason}" if blocked else "no email on file"
        session.add(row)
        session.commit()
        return row.status
    if not _claim(session, request_id):
        session.refresh(row)
        return row.status
    lang = language(None, customer.locale)
    now = utcnow()
    url = portal_url(settings, customer.id, now)
    until = local_date(
        now + timedelta(days=settings.portal_link_days), customer.timezone, customer.locale
    )
    company = settings.company_name or "us"
    message = OutboundMessage(
        outbox_id=0,
        invoice_id=0,
        step_key=f"portal-link-{request_id}",
        channel="email",
        recipient=customer.email,
        subject=t(lang, "fresh_subject", company=company),
        body=t(lang, "fresh_body", customer=customer.name, url=url, date=until),
        customer_id=customer.id,
    )
    session.refresh(row)
    return deliver_and_record(session, channel, message, row)
