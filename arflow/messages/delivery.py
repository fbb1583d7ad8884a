"""Delivering one step of an invoice's dunning on one channel, at most once.

The rules (outbox row unique per invoice, step and channel; ``sending`` committed before a
provider call; what a provider error means) are in ``sending.py``; this class runs them for
one step and records the outcome on the invoice's timeline, whatever it is: sent, covered
by a sibling's consolidated message, deferred by a cap, blocked, failed or uncertain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from arflow.customers.collectors import reply_to_of
from arflow.customers.contacts import block
from arflow.invoices import tasks
from arflow.invoices.service import get_invoice
from arflow.invoices.timeline import (
    WORKFLOW_ACTOR,
    add_event,
    already_recorded,
    commit_once,
    record_skipped,
    set_next_action,
)
from arflow.messages.channels import Attachment, Channel, OutboundMessage
from arflow.messages.documents import Seller
from arflow.messages.sending import (
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    ReminderSender,
    TransientDeliveryError,
    outbound,
    segment_of,
)
from models import Customer, Invoice, InvoiceEvent, OutboxMessage
from models.types import utcnow
from workflows.types import SUPERSEDED, SendOutcome, SendReminderInput

QUEUE_ATTEMPTS = 3  # rounds of queueing a step when siblings' messages keep winning the race


class StepRaced(RuntimeError):
    """Siblings' messages kept winning: the activity fails and Temporal retries it."""


class StepDelivery:
    """Sends one step on one channel through ``channel`` (the outbox, or a provider)."""

    def __init__(
        self,
        channel: Channel,
        pay_url: Callable[[int, str, str], str],
        print_folder: str = "data/print",
        seller: Seller | None = None,
        default_locale: str = "en",
        unsubscribe_url: Callable[[int], str] | None = None,
        portal_url: Callable[[int], str] | None = None,
    ) -> None:
        self.channel = channel
        self.pay_url = pay_url  # (invoice id, number, external id) -> the payment page
        self.unsubscribe_url = unsubscribe_url  # customer id -> one-click unsubscribe link
        self.sender = ReminderSender(
            channel, pay_url, print_folder, seller or Seller("arflow"), default_locale
        )
        self.sender.portal_url = portal_url  # customer id -> a fresh signed portal link

    def send(self, session: Session, inp: SendReminderInput) -> SendOutcome:
        """One step on one channel, at most once (see ``sending.py`` for the rules)."""
        sender = self.sender
        row = self._outbox_row(session, inp)
        if row is not None:
            earlier = self._earlier_attempt(session, inp, row)
            if earlier is not None:
                return earlier
        invoice = get_invoice(session, inp.invoice_id)
        customer = session.get(Customer, invoice.customer_id)
        assert customer is not None and customer.id is not None
        channel = inp.step.channel
        if row is None:
            queued = self._queue_first_attempt(session, inp, invoice, customer)
            if isinstance(queued, SendOutcome):
                return queued  # blocked, deferred by a cap, or a concurrent attempt's
            row = queued
        if channel == "call":
            sender.call_task(session, inp, row)
            return self._record_sent(session, inp, row, "task")
        if channel == "letter":
            row.provider_id = sender.print_letter(inp, row, customer)
            return self._record_sent(session, inp, row, "printed")
        if not self.channel_is_external(channel):
            row.provider_id = sender.deliver(self._message(session, inp, row, invoice, customer))
            return self._record_sent(session, inp, row, "sent")
        return self._through_provider(session, inp, row, invoice, customer)

    def _earlier_attempt(
        self, session: Session, inp: SendReminderInput, row: OutboxMessage
    ) -> SendOutcome | None:
        """The answer when an earlier attempt (or a sibling) already has this step's row;
        None when the row is still to be sent."""
        if row.status == "consolidated":
            # Another invoice's message already covered this step today.
            if already_recorded(session, inp.invoice_id, f"step:{inp.step.key}:{row.channel}"):
                return SendOutcome("sent")
            return self._record_sent(session, inp, row, "consolidated")
        if row.status == "sending":
            # An earlier attempt died (or timed out) while the provider had the request:
            # it may have been accepted, so it is not sent again.
            row.detail = "the attempt ended while the provider had the request"
            return self._uncertain(session, inp, row)
        return self.sender.outcome_so_far(row)  # an earlier attempt finished: the same answer

    def _queue_first_attempt(
        self, session: Session, inp: SendReminderInput, invoice: Invoice, customer: Customer
    ) -> OutboxMessage | SendOutcome:
        """The step's outbox row, queued now; or the outcome when it is not to be sent.

        A concurrent insert may win a unique key this needs (many of one customer's steps
        falling due at once: after a restart, every morning at ``send_at``). When it is this
        step's row (a sibling's consolidated message covered it, or a concurrent attempt
        queued it), the outcome is recorded for the row that won (``_after_conflict``); when
        it is a sibling this message meant to cover (the sibling queued its own message in
        the meantime), nothing of ours was stored and the step is queued again, without it.
        """
        sender = self.sender
        for _ in range(QUEUE_ATTEMPTS):
            why = sender.unreachable(session, customer, inp.step.channel)
            if why is not None:
                return self._not_sent(session, inp, invoice, customer, "blocked", why)
            capped = sender.capped(session, inp, customer, invoice)
            if capped is not None:
                session.rollback()
                return capped
            others = sender.siblings(session, inp, invoice, customer)
            try:
                row = sender.queue(session, inp, invoice, customer, status="queued", others=others)
                sender.cover(session, inp, row, others)
                session.flush()
            except IntegrityError:
                outcome = self._after_conflict(session, inp)
                if outcome is not None:
                    return outcome
                continue  # a sibling's own message won: queue again without it
            return row
        raise StepRaced(
            f"step {inp.step.key} of invoice {inp.invoice_id} lost {QUEUE_ATTEMPTS} races "
            "with its siblings' messages"
        )

    def _after_conflict(
        self, session: Session, inp: SendReminderInput
    ) -> OutboxMessage | SendOutcome | None:
        """After a unique key was taken by a concurrent insert: this step's outcome, recorded
        on the timeline in a fresh transaction for the outbox row that won (or that row, when
        it is still to be sent); None when this step has no row (the conflict was on a
        sibling's)."""
        session.rollback()
        row = self._outbox_row(session, inp)
        if row is None:
            return None
        earlier = self._earlier_attempt(session, inp, row)
        return earlier if earlier is not None else row

    def _through_provider(
        self,
        session: Session,
        inp: SendReminderInput,
        row: OutboxMessage,
        invoice: Invoice,
        customer: Customer,
    ) -> SendOutcome:
        """A provider: mark the row ``sending`` and commit before calling out, so an attempt
        that dies while the provider has the request is never repeated (see ``_earlier_attempt``);
        outbox_id travels with the message."""
        assert customer.id is not None
        channel = inp.step.channel
        message = self._message(session, inp, row, invoice, customer)
        row.status = "sending"
        session.add(row)
        session.commit()
        try:
            row.provider_id = self.sender.deliver(message)
        except TransientDeliveryError:
            row.status = "queued"  # known not accepted: the retry may send it
            session.add(row)
            session.commit()
            raise
        except PermanentDeliveryError as exc:
            if exc.block_reason:
                block(
                    session,
                    customer.id,
                    channel,
                    exc.block_reason,
                    "provider",
                    address=row.recipient,
                    detail=exc.reason[:500],
                )
            row.status, row.detail, row.updated_at = "failed", exc.reason[:500], utcnow()
            return self._not_sent(session, inp, invoice, customer, "failed", exc.reason, row)
        except AmbiguousDeliveryError as exc:
            row.detail = exc.reason[:500]
            return self._uncertain(session, inp, row)
        return self._record_sent(session, inp, row, "sent")

    def _uncertain(
        self, session: Session, inp: SendReminderInput, row: OutboxMessage
    ) -> SendOutcome:
        """The provider may have the message: counted as sent, never sent again, and a
        specialist asked to check (a provider event may settle it first)."""
        tasks.new_task(
            session,
            inp.invoice_id,
            "delivery_uncertain",
            {"step": inp.step.key, "channel": row.channel, "outbox_id": row.id},
            due_at=inp.now or utcnow(),
        )
        return self._record_sent(session, inp, row, "uncertain")

    def channel_is_external(self, channel: str) -> bool:
        is_external = getattr(self.channel, "is_external", None)
        return bool(is_external(channel)) if is_external else bool(self.channel.external)

    def _message(
        self,
        session: Session,
        inp: SendReminderInput,
        row: OutboxMessage,
        invoice: Invoice,
        customer: Customer,
    ) -> OutboundMessage:
        assert customer.id is not None
        attachments: tuple[Attachment, ...] = ()
        if inp.step.channel == "email" and self.channel_is_external("email"):
            attachments = (self.sender.invoice_copy(invoice, customer, inp.balance_minor),)
        pay_url = self.pay_url(inp.invoice_id, invoice.number, invoice.external_id)
        html = self.sender.html_of.pop(row.id or 0, None)
        message = outbound(row, inp, customer.id, pay_url, attachments, html)
        if inp.step.channel == "email" and self.unsubscribe_url is not None:
            message = replace(message, unsubscribe_url=self.unsubscribe_url(customer.id))
        assigned = invoice.collector or customer.assigned_collector
        if inp.step.channel == "email" and assigned:
            segment = segment_of(session, customer)
            if segment is not None and segment.sender == "collector":
                message = self._from_collector(session, inp, message, assigned)
        return message

    def _from_collector(
        self, session: Session, inp: SendReminderInput, message: OutboundMessage, assigned: str
    ) -> OutboundMessage:
        """Key accounts hear from their collector in person (the invoice's, else the
        account's): the listed collector's name as the sender and its listed address as
        Reply-To. A collector the list does not know (or has deactivated, or has no address
        for) is no Reply-To: the team's own is used, and that fallback is recorded once per
        step (the caller's transaction commits it)."""
        collector, fallback = reply_to_of(session, assigned)
        if collector is not None:
            message = replace(message, sender_name=collector.name, reply_to=collector.email)
        if fallback is not None:
            key = f"reply_to_fallback:{inp.step.key}"
            if not already_recorded(session, inp.invoice_id, key):
                add_event(
                    session,
                    inp.invoice_id,
                    "reply_to_fallback",
                    {
                        "step": inp.step.key,
                        "collector_id": collector.id if collector is not None else None,
                        "collector": assigned[:100],
                        "reason": fallback,
                        "reply_to": "email_reply_to",
                    },
                    dedupe_key=key,
                )
        return message

    def _not_sent(
        self,
        session: Session,
        inp: SendReminderInput,
        invoice: Invoice,
        customer: Customer,
        status: str,
        why: str,
        row: OutboxMessage | None = None,
    ) -> SendOutcome:
        """Record that this channel could not take the step (the workflow tries the next)."""
        if row is None:
            try:
                row = self.sender.queue(session, inp, invoice, customer, status, detail=why[:500])
            except IntegrityError:
                outcome = self._after_conflict(session, inp)
                if not isinstance(outcome, SendOutcome):
                    raise
                return outcome
        add_event(
            session,
            inp.invoice_id,
            "channel_unavailable",
            {"step": inp.step.key, "channel": inp.step.channel, "outcome": status, "reason": why},
            dedupe_key=f"unavailable:{inp.step.key}:{inp.step.channel}",
        )
        commit_once(session, inp.invoice_id, f"unavailable:{inp.step.key}:{inp.step.channel}")
        return SendOutcome(status, why)

    def _outbox_row(self, session: Session, inp: SendReminderInput) -> OutboxMessage | None:
        return session.exec(
            select(OutboxMessage).where(
                OutboxMessage.invoice_id == inp.invoice_id,
                OutboxMessage.step_key == inp.step.key,
                OutboxMessage.channel == inp.step.channel,
            )
        ).first()

    def _record_sent(
        self, session: Session, inp: SendReminderInput, row: OutboxMessage, status: str
    ) -> SendOutcome:
        """Record the message as sent (or put on the worklist, or printed), the step and the
        skipped steps, in one transaction."""
        step = inp.step
        now = utcnow()
        # The invoice's row locked first (PostgreSQL; SQLite has one writer anyway): a step's
        # outcomes are decided one transaction at a time, so a step is never both sent and
        # skipped (see ``_settled_elsewhere``).
        invoice = session.get(Invoice, inp.invoice_id, with_for_update=True)
        assert invoice is not None
        superseded = self._settled_elsewhere(session, inp, row)
        if superseded is not None:
            return superseded
        if row.status in ("queued", "sending"):  # never undo a webhook's "delivered"
            row.status = status
        row.sent_at = now
        row.updated_at = now
        session.add(row)
        skipped = [k for k in inp.skipped if not step_sent(session, inp.invoice_id, k)]
        record_skipped(session, inp.invoice_id, skipped, "a later step was already due")
        tasks.step_delivered(session, inp.invoice_id, row.channel, status)
        add_event(
            session,
            inp.invoice_id,
            "reminder_sent",
            {
                "step": step.key,
                "channel": step.channel,
                "outbox_id": row.id,
                "balance_minor": inp.balance_minor,
                "scheduled_for": step.at.isoformat(),
                **({"delivery": status} if status != "sent" else {}),
                **({"covered_by": row.detail} if status == "consolidated" else {}),
                **({"fallback": True} if not inp.first_try else {}),
                **({"note": inp.note} if inp.note else {}),
                **({"installment": inp.installment.n} if inp.installment else {}),
                **({"sent_early": True} if inp.requested_by else {}),
            },
            actor=inp.requested_by or WORKFLOW_ACTOR,
            dedupe_key=f"step:{step.key}:{step.channel}",
        )
        if inp.kind == "dunning":
            invoice.stage = step.key
        elif inp.kind == "ladder":
            invoice.escalation_stage = step.key
        invoice.updated_at = now
        set_next_action(invoice, inp.next_action)
        session.add(invoice)
        # A concurrent attempt (a covered step racing its retry) may have recorded it first.
        commit_once(session, inp.invoice_id, f"step:{step.key}:{step.channel}")
        return SendOutcome(status if status in ("task", "printed", "uncertain") else "sent")

    def _settled_elsewhere(
        self, session: Session, inp: SendReminderInput, row: OutboxMessage
    ) -> SendOutcome | None:
        """``superseded`` when this step was recorded as skipped meanwhile and nothing has left
        yet (the outbox channel: the row is the message): the attempt is dropped.

        A local activity can outlive the workflow task that started it (a task that timed out
        while PostgreSQL was away): the retried task, at a later time, decides afresh, sends a
        later step and skips this one, while the old attempt still runs. Whichever commits
        second sees the other: a late attempt stands down here, and a later step's send does
        not record as skipped a step that went out (``step_sent``). A provider's message that
        has left is recorded as sent whatever the timeline says: that is what happened."""
        channel = inp.step.channel
        if row.status != "queued" or channel == "letter" or self.channel_is_external(channel):
            return None  # a letter's PDF is in the print batch already
        if not already_recorded(session, inp.invoice_id, f"skip:{inp.step.key}"):
            return None
        session.rollback()
        return SendOutcome(SUPERSEDED, "the step was recorded as skipped meanwhile")


def step_sent(session: Session, invoice_id: int, step_key: str) -> bool:
    """True when ``step_key`` of the invoice went out (on any channel)."""
    stmt = select(InvoiceEvent.id).where(
        InvoiceEvent.invoice_id == invoice_id,
        InvoiceEvent.kind == "reminder_sent",
        InvoiceEvent.dedupe_key.startswith(f"step:{step_key}:", autoescape=True),  # type: ignore[union-attr,call-arg]
    )
    return session.exec(stmt).first() is not None
