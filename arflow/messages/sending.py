"""Sending one reminder step on one channel, with the contact rules that need the database.

The workflow decides *when* (schedule, contact window) and *which channel next* (fallbacks);
this decides whether the customer may be reached on that channel now and records what
happened. Every path writes the step's outbox row, unique per (invoice, step, channel), so a
retried activity finds it and answers the same outcome instead of acting twice.

Delivery rule for providers (email, SMS): the outbox row is committed as ``queued`` *before*
the provider is called. An error known not to have been accepted (connection refused, 429,
5xx) is retried by Temporal's retry policy (after the provider's ``Retry-After`` when it gave
one); a refusal for good (4xx) marks the row ``failed``
and the workflow falls back to the next channel; a request that went out and got no answer
marks the row ``uncertain``: never resent automatically (neither provider has an idempotency
key for sends), a task asks a specialist to check, and the provider's event webhook settles it.

Copies: an email goes *to* the customer's own address and is copied (``cc``) to the
additional billing and copy contacts, and on a final notice or a ladder notice to the
escalation contacts too, leaving out those that opted out (``contacts_roles.email_cc``). The
outbox row records the copies, so a retried attempt sends to the same addresses; a
consolidated message's cover rows record them too. SMS goes to the customer's own phone only.

Caps (Regulation F style, per policy): at most ``max_messages_per_day`` messages per customer
per local day over all their invoices and channels; at most ``max_calls_per_week`` call
attempts per invoice in any 7 days; no call within ``call_cooldown`` of a conversation. A
capped step answers ``capped`` with the time the cap frees. The customer row is locked while
counting, so two invoices of one customer cannot both take the last slot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlmodel import Session, col, func, select

from arflow.customers.contacts_roles import email_cc, is_escalation
from arflow.invoices import tasks
from arflow.invoices.calls import call_capped
from arflow.messages.channels import (
    AmbiguousDeliveryError,
    Attachment,
    Channel,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from arflow.messages.context import charges_not_waived, message_context
from arflow.messages.documents import Seller, invoice_copy_pdf, letter_pdf
from arflow.messages.render import local_date, money, render_message
from models import (
    ContactBlock,
    Customer,
    DunningPolicy,
    Invoice,
    OutboxMessage,
    Segment,
    Task,
)
from models.invoice import COUNTED_STATUSES
from models.types import parse_duration, utcnow
from workflows.reminders import day_cap
from workflows.types import SendOutcome, SendReminderInput

log = logging.getLogger("arflow.sending")

MESSAGE_CHANNELS = ("email", "sms", "letter")
COUNTED = COUNTED_STATUSES
DONE = {
    "sent": "sent",
    "delivered": "sent",
    "uncertain": "uncertain",
    "task": "task",
    "consolidated": "sent",
}


class ReminderSender:
    def __init__(
        self,
        channel: Channel,
        pay_url: Callable[[int, str, str], str],
        print_folder: str,
        seller: Seller,
        default_locale: str = "en",
    ) -> None:
        self.channel = channel
        self.pay_url = pay_url
        self.print_folder = Path(print_folder)
        self.seller = seller
        self.default_locale = default_locale
        # customer id -> the customer's signed portal link (in every message when set)
        self.portal_url: Callable[[int], str] | None = None
        # The HTML body of a freshly queued email, by outbox id (not stored: the text is).
        self.html_of: dict[int, str] = {}

    # -- the decision -------------------------------------------------------------------

    def outcome_so_far(self, row: OutboxMessage) -> SendOutcome | None:
        """What an earlier attempt of this activity already did, if it finished."""
        if row.status in DONE:
            return SendOutcome(DONE[row.status])
        if row.status == "printed":
            return SendOutcome("printed")
        if row.status in ("blocked", "failed"):
            return SendOutcome(row.status, row.detail)
        return None  # queued: a provider call that may be retried

    def unreachable(self, session: Session, customer: Customer, channel: str) -> str | None:
        """Why ``channel`` cannot reach the customer, or None."""
        block = session.exec(
            select(ContactBlock).where(
                ContactBlock.customer_id == customer.id, ContactBlock.channel == channel
            )
        ).first()
        if block is not None:
            return f"{channel} blocked: {block.reason}"
        segment = segment_of(session, customer)
        if segment is not None and channel not in segment.channels:
            return f"{channel} is not a channel of segment {segment.name}"
        missing = {
            "email": customer.email,
            "sms": customer.phone,
            "call": customer.phone,
            "letter": customer.address,
        }
        if not missing.get(channel, "x"):
            return f"no {'postal address' if channel == 'letter' else channel} on file"
        return None

    def capped(
        self, session: Session, inp: SendReminderInput, customer: Customer, invoice: Invoice
    ) -> SendOutcome | None:
        now = inp.now or utcnow()
        channel = inp.step.channel
        # Take the customer's row lock first: counting and inserting are then serialised
        # across all of this customer's invoices (PostgreSQL row lock; SQLite write lock).
        session.exec(update(Customer).where(col(Customer.id) == customer.id).values(id=customer.id))
        if channel in MESSAGE_CHANNELS and inp.max_messages_per_day:
            zone = ZoneInfo(customer.timezone)
            day = now.astimezone(zone).date()
            start = datetime.combine(day, time(0), zone).astimezone(UTC)
            sent_today = session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .join(Invoice, col(Invoice.id) == col(OutboxMessage.invoice_id))
                .where(
                    Invoice.customer_id == customer.id,
                    col(OutboxMessage.channel).in_(MESSAGE_CHANNELS),
                    col(OutboxMessage.status).in_(COUNTED),
                    col(OutboxMessage.created_at) >= start,
                )
            ).one()
            capped = day_cap(sent_today, inp.max_messages_per_day, now, customer.timezone)
            if capped is not None:
                return capped
        if channel == "call":
            return self._call_capped(session, inp, invoice, now)
        return None

    def _call_capped(
        self, session: Session, inp: SendReminderInput, invoice: Invoice, now: datetime
    ) -> SendOutcome | None:
        calls = session.exec(
            select(Task)
            .where(Task.invoice_id == invoice.id, Task.kind == "call")
            .order_by(col(Task.created_at))
        ).all()
        cooldown = parse_duration(inp.call_cooldown)
        assert isinstance(cooldown, timedelta), "call_cooldown is days or hours"
        capped = call_capped(calls, now, cooldown, inp.max_calls_per_week)
        if capped is None:
            return None
        reason, free = capped
        return SendOutcome("capped", reason, free)

    # -- consolidation --------------------------------------------------------------------

    def siblings(
        self, session: Session, inp: SendReminderInput, invoice: Invoice, customer: Customer
    ) -> list[tuple[Invoice, str]]:
        """Other open invoices of this customer whose next step goes out on the same channel
        on the same local day: (invoice, step key). One message will cover them all."""
        if not inp.consolidate or inp.kind != "dunning" or inp.step.channel not in MESSAGE_CHANNELS:
            return []
        zone = ZoneInfo(customer.timezone)
        day = (inp.now or utcnow()).astimezone(zone).date()
        start = datetime.combine(day, time(0), zone).astimezone(UTC)
        end = start + timedelta(days=1)
        candidates = session.exec(
            select(Invoice).where(
                Invoice.customer_id == customer.id,
                Invoice.id != invoice.id,
                Invoice.status == "open",
                col(Invoice.hold).is_(None),
                Invoice.next_action == "reminder",
                col(Invoice.next_action_at) >= start,
                col(Invoice.next_action_at) < end,
                Invoice.currency == invoice.currency,
            )
        ).all()
        found = []
        for other in candidates:
            policy = session.get(DunningPolicy, other.policy_id)
            steps = {s["key"]: s for s in (policy.steps if policy else [])}
            step = steps.get(other.next_action_step or "")
            if step is None or step.get("channel", "email") != inp.step.channel:
                continue
            if has_row(session, other.id or 0, str(step["key"]), inp.step.channel):
                continue  # its own message (or another's cover) is already on its way
            found.append((other, str(step["key"])))
        return sorted(found, key=lambda pair: pair[0].due_at)

    def cover(
        self,
        session: Session,
        inp: SendReminderInput,
        main: OutboxMessage,
        siblings: list[tuple[Invoice, str]],
    ) -> None:
        """Mark the siblings' steps as carried by ``main``: their own workflows, when the step
        comes, find the row and record the step as sent without a second message."""
        for other, step_key in siblings:
            session.add(
                OutboxMessage(
                    invoice_id=other.id or 0,
                    step_key=step_key,
                    channel=inp.step.channel,
                    recipient=main.recipient,
                    cc=main.cc,
                    subject=main.subject,
                    body=main.body,
                    status="consolidated",
                    detail=f"sent in outbox message {main.id} (invoice {inp.invoice_id})",
                    sent_at=utcnow(),
                )
            )

    # -- the message --------------------------------------------------------------------

    def queue(
        self,
        session: Session,
        inp: SendReminderInput,
        invoice: Invoice,
        customer: Customer,
        status: str,
        detail: str | None = None,
        others: list[tuple[Invoice, str]] | None = None,
    ) -> OutboxMessage:
        """Render the step's message and insert its outbox row (flushes: the unique key fires);
        ``others``: invoices whose steps this message covers too (consolidation)."""
        others = others or []
        step = inp.step
        context = message_context(
            invoice,
            customer,
            step_key=step.key,
            step_at=step.at,
            balance_minor=inp.balance_minor,
            pay_url=self.pay_url,
            escalate_at=deadline(inp),
            note=inp.note,
            installment=inp.installment,
            charges=charges_not_waived(session, inp.invoice_id),
            default_locale=self.default_locale,
            next_stage=next_stage_kind(session, invoice, inp),
        )
        loc = context["locale"]
        if self.portal_url is not None and customer.id is not None:
            context["portal_url"] = self.portal_url(customer.id)
        context["others"] = [
            {
                "number": o.number,
                "balance": money(o.balance_minor, o.currency, loc),
                "due_date": local_date(o.due_date, customer.timezone, loc),
                "pay_url": self.pay_url(o.id or 0, o.number, o.external_id),
            }
            for o, _ in others
        ]
        rendered = render_message(
            step.template, customer.locale, context, default_locale=self.default_locale
        )
        subject = rendered.subject
        body = rendered.sms if step.channel == "sms" else rendered.text
        recipient = {
            "email": customer.email,
            "sms": customer.phone,
            "call": customer.phone,
            "letter": customer.address,
        }.get(step.channel)
        cc = None
        if step.channel == "email" and status == "queued" and customer.id is not None:
            escalation = is_escalation(step.template, inp.kind)
            cc = list(email_cc(session, customer.id, recipient, escalation)) or None
        row = OutboxMessage(
            invoice_id=inp.invoice_id,
            step_key=step.key,
            channel=step.channel,
            recipient=(recipient or "")[:320] or None,
            subject=subject,
            body=body,
            status=status,
            detail=detail,
            cc=cc,
            # The workflow's clock (the wall clock in production): caps count by this day.
            created_at=inp.now or utcnow(),
        )
        session.add(row)
        session.flush()
        if row.id is not None and step.channel == "email":
            self.html_of[row.id] = rendered.html  # handed to the provider with this row
        return row

    def deliver(self, row: OutboundMessage) -> str | None:
        """Hand the message to the channel's adapter; the provider's id."""
        return self.channel.deliver(row).provider_id

    def call_task(self, session: Session, inp: SendReminderInput, row: OutboxMessage) -> None:
        tasks.new_task(
            session,
            inp.invoice_id,
            "call",
            {"step": inp.step.key, "outbox_id": row.id, "phone": row.recipient},
            due_at=inp.now or utcnow(),
        )
        row.provider_id = None

    def print_letter(self, inp: SendReminderInput, row: OutboxMessage, customer: Customer) -> str:
        """Put the letter in today's print batch (a folder a print-and-mail service picks up)."""
        on = (inp.now or utcnow()).astimezone(ZoneInfo(customer.timezone)).date()
        folder = self.print_folder / on.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"invoice-{inp.invoice_id}-{inp.step.key}.pdf"
        pdf = letter_pdf(
            self.seller,
            customer.name,
            customer.address,
            row.subject,
            row.body.split("\n\n"),
            on,
            locale=customer.locale,
            timezone=customer.timezone,
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pdf)
        tmp.rename(path)  # the print service never sees half a file
        return str(path)

    def invoice_copy(self, invoice: Invoice, customer: Customer, balance_minor: int) -> Attachment:
        assert invoice.id is not None
        pdf = invoice_copy_pdf(
            invoice,
            customer,
            self.seller,
            self.pay_url(invoice.id, invoice.number, invoice.external_id),
            balance_minor=balance_minor,
        )
        return Attachment(f"invoice-{invoice.number}.pdf", pdf)


def has_row(session: Session, invoice_id: int, step_key: str, channel: str) -> bool:
    """Whether the invoice's step already has its outbox row on ``channel``."""
    return (
        session.exec(
            select(OutboxMessage.id).where(
                OutboxMessage.invoice_id == invoice_id,
                OutboxMessage.step_key == step_key,
                OutboxMessage.channel == channel,
            )
        ).first()
        is not None
    )


def deadline(inp: SendReminderInput) -> datetime | None:
    """The date a message names as the last day to pay: the escalation the workflow gave, or
    for a ladder notice (a final or pre-legal notice) when the next stage is due."""
    if inp.escalate_at is not None:
        return inp.escalate_at
    nxt = inp.next_action
    if inp.kind == "ladder" and nxt is not None and nxt.kind == "escalation":
        return nxt.at
    return None


def next_stage_kind(session: Session, invoice: Invoice, inp: SendReminderInput) -> str:
    """The kind of the escalation stage this message's deadline leads to: for a ladder notice
    the stage after it, for a reminder the ladder's first (a policy without one: the agency)."""
    policy = session.get(DunningPolicy, invoice.policy_id)
    ladder = list(policy.ladder) if policy is not None else []
    if inp.kind == "ladder":
        key = inp.next_action.step_key if inp.next_action else None
        return next((str(s["kind"]) for s in ladder if s["key"] == key), "")
    return str(ladder[0]["kind"]) if ladder else "agency"


def segment_of(session: Session, customer: Customer) -> Segment | None:
    """The customer's segment row (None before segments exist: no restriction)."""
    if not customer.segment:
        return None
    return session.exec(select(Segment).where(Segment.name == customer.segment)).first()


def outbound(
    row: OutboxMessage,
    inp: SendReminderInput,
    customer_id: int,
    pay_url: str,
    attachments: tuple[Attachment, ...] = (),
    html: str | None = None,
) -> OutboundMessage:
    return OutboundMessage(
        html=html,
        outbox_id=row.id or 0,
        invoice_id=inp.invoice_id,
        step_key=inp.step.key,
        channel=inp.step.channel,
        recipient=row.recipient,
        cc=tuple(row.cc or ()),
        subject=row.subject,
        body=row.body,
        attachments=attachments,
        pay_url=pay_url,
        customer_id=customer_id,
    )


__all__ = [
    "AmbiguousDeliveryError",
    "PermanentDeliveryError",
    "ReminderSender",
    "TransientDeliveryError",
    "outbound",
    "segment_of",
]
