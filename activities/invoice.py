"""The invoice workflow's activities: each one idempotent, each one a single transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels import Attachment, Channel, OutboundMessage
from activities.documents import Seller
from activities.sending import (
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    ReminderSender,
    TransientDeliveryError,
    outbound,
    segment_of,
)
from api.charges import charges_due, post_charge, settle_charges
from api.contacts import block
from api.profiles import CustomerRefresh, refresh_customer
from api.segments import ensure_default_segments
from arflow.db import SessionFactory
from models import (
    Customer,
    Dispute,
    Invoice,
    InvoiceEvent,
    OutboxMessage,
    Payment,
    PaymentPlan,
    Promise,
    Task,
)
from models.bank import overpayment
from models.types import utcnow
from workflows.types import (
    CLOSED_STATUSES,
    ChangeResult,
    ChangeSet,
    EventSpec,
    NextAction,
    PostChargesInput,
    RecordClosedInput,
    RecordPaymentInput,
    SegmentMove,
    SendOutcome,
    SendReminderInput,
)

log = logging.getLogger("arflow.activities")
WORKFLOW_ACTOR = "workflow"
CHANGE_IDS = ("dispute_id", "plan_id", "promise_id")


def set_next_action(invoice: Invoice, nxt: NextAction | None) -> None:
    invoice.next_action = nxt.kind if nxt else None
    invoice.next_action_at = nxt.at if nxt else None
    invoice.next_action_step = nxt.step_key if nxt else None


def add_event(
    session: Session,
    invoice_id: int,
    kind: str,
    data: dict[str, Any],
    actor: str = WORKFLOW_ACTOR,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> None:
    session.add(
        InvoiceEvent(
            invoice_id=invoice_id,
            kind=kind,
            data=data,
            actor=actor,
            dedupe_key=dedupe_key,
            at=at or utcnow(),
        )
    )


def record_skipped(session: Session, invoice_id: int, steps: list[str], reason: str) -> None:
    """One ``reminder_skipped`` event per step that will never be sent."""
    for step in steps:
        add_event(
            session,
            invoice_id,
            "reminder_skipped",
            {"step": step, "reason": reason},
            dedupe_key=f"skip:{step}",
        )


def _stored_id(session: Session, row: Dispute | PaymentPlan | Promise) -> int:
    """Insert or update ``row`` now and return its id."""
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def commit_once(session: Session, invoice_id: int, dedupe_key: str) -> None:
    """Commit; if an earlier attempt already recorded ``dedupe_key``, this one was a retry."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if not already_recorded(session, invoice_id, dedupe_key):
            raise


def figures_changed(change: ChangeSet) -> bool:
    """Whether the change counts in the customer's behaviour figures (and so their risk)."""
    resolved = change.dispute is not None and change.dispute.status in ("upheld", "rejected")
    return resolved or change.customer_counter is not None


def refresh(session: Session, customer_id: int) -> SegmentMove | None:
    """Re-evaluate the customer after a change of their figures (in the caller's
    transaction): their credit hold, and their segment; the move when it changed and open
    invoices must switch policy."""
    return segment_move(customer_id, refresh_customer(session, customer_id, actor=WORKFLOW_ACTOR))


def segment_move(customer_id: int, refreshed: CustomerRefresh) -> SegmentMove | None:
    """The switch a re-evaluation calls for, if any."""
    moved = refreshed.segment
    if not (moved.changed and moved.invoice_ids and moved.event_id is not None):
        return None
    return SegmentMove(
        customer_id=customer_id,
        segment=moved.segment,
        previous=moved.previous,
        policy_name=moved.policy_name,
        invoice_ids=moved.invoice_ids,
        event_id=moved.event_id,
    )


def already_recorded(session: Session, invoice_id: int, dedupe_key: str) -> bool:
    stmt = select(InvoiceEvent.id).where(
        InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.dedupe_key == dedupe_key
    )
    return session.exec(stmt).first() is not None


class InvoiceActivities:
    """Bound methods are registered on the worker; dependencies come in through the constructor."""

    def __init__(
        self,
        sessions: SessionFactory,
        channel: Channel,
        pay_url: Callable[[int, str, str], str],
        print_folder: str = "data/print",
        seller: Seller | None = None,
        default_locale: str = "en",
        unsubscribe_url: Callable[[int], str] | None = None,
    ) -> None:
        self.sessions = sessions
        self.channel = channel
        self.segments_ready = False  # the default segments exist (none is ever deleted)
        self.pay_url = pay_url  # (invoice id, number, external id) -> the payment page
        self.unsubscribe_url = unsubscribe_url  # customer id -> one-click unsubscribe link
        self.sender = ReminderSender(
            channel, pay_url, print_folder, seller or Seller("arflow"), default_locale
        )

    def _invoice(self, session: Session, invoice_id: int) -> Invoice:
        invoice = session.get(Invoice, invoice_id)
        if invoice is None:
            raise ApplicationError(f"invoice {invoice_id} not found", non_retryable=True)
        return invoice

    @activity.defn(name="send_reminder")
    def send_reminder(self, inp: SendReminderInput) -> SendOutcome:
        """One step on one channel, at most once (see activities/sending.py for the rules)."""
        sender = self.sender
        with self.sessions() as session:
            row = self._outbox_row(session, inp)
            if row is not None and row.status == "consolidated":
                # Another invoice's message already covered this step today.
                if already_recorded(session, inp.invoice_id, f"step:{inp.step.key}:{row.channel}"):
                    return SendOutcome("sent")
                return self._record_sent(session, inp, row, "consolidated")
            if row is not None and row.status == "sending":
                # An earlier attempt died (or timed out) while the provider had the request:
                # it may have been accepted, so it is not sent again.
                row.detail = "the attempt ended while the provider had the request"
                return self._uncertain(session, inp, row)
            if row is not None:
                done = sender.outcome_so_far(row)
                if done is not None:
                    return done  # an earlier attempt finished: the same answer, nothing twice
            invoice = self._invoice(session, inp.invoice_id)
            customer = session.get(Customer, invoice.customer_id)
            assert customer is not None and customer.id is not None
            channel = inp.step.channel
            if row is None:
                why = sender.unreachable(session, customer, channel)
                if why is not None:
                    return self._not_sent(session, inp, invoice, customer, "blocked", why)
                capped = sender.capped(session, inp, customer, invoice)
                if capped is not None:
                    session.rollback()
                    return capped
                others = sender.siblings(session, inp, invoice, customer)
                try:
                    row = sender.queue(
                        session, inp, invoice, customer, status="queued", others=others
                    )
                    sender.cover(session, inp, row, others)
                    session.flush()
                except IntegrityError:  # a concurrent attempt inserted it: its answer counts
                    session.rollback()
                    return SendOutcome("sent")
            if channel == "call":
                sender.call_task(session, inp, row)
                return self._record_sent(session, inp, row, "task")
            if channel == "letter":
                row.provider_id = sender.print_letter(inp, row, customer)
                return self._record_sent(session, inp, row, "printed")
            if not self.channel_is_external(channel):
                row.provider_id = sender.deliver(
                    self._message(session, inp, row, invoice, customer)
                )
                return self._record_sent(session, inp, row, "sent")
            # A provider: mark the row ``sending`` and commit before calling out, so an attempt
            # that dies while the provider has the request is never repeated (see above);
            # outbox_id travels with the message.
            message = self._message(session, inp, row, invoice, customer)
            row.status = "sending"
            session.add(row)
            session.commit()
            try:
                row.provider_id = sender.deliver(message)
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
        session.add(
            Task(
                invoice_id=inp.invoice_id,
                kind="delivery_uncertain",
                due_at=inp.now or utcnow(),
                data={"step": inp.step.key, "channel": row.channel, "outbox_id": row.id},
            )
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
        collector = invoice.collector or customer.assigned_collector
        if inp.step.channel == "email" and collector:
            segment = segment_of(session, customer)
            if segment is not None and segment.sender == "collector":
                # Key accounts hear from their collector in person (the invoice's, else the
                # account's): their name as the sender, replies to them when it is an address.
                reply_to = collector if "@" in collector else None
                message = replace(message, sender_name=collector, reply_to=reply_to)
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
                session.rollback()
                return SendOutcome(status, why)
        add_event(
            session,
            inp.invoice_id,
            "channel_unavailable",
            {"step": inp.step.key, "channel": inp.step.channel, "outcome": status, "reason": why},
            dedupe_key=f"unavailable:{inp.step.key}:{inp.step.channel}",
        )
        session.commit()
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
        if row.status in ("queued", "sending"):  # never undo a webhook's "delivered"
            row.status = status
        row.sent_at = now
        row.updated_at = now
        session.add(row)
        record_skipped(session, inp.invoice_id, inp.skipped, "a later step was already due")
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
        invoice = self._invoice(session, inp.invoice_id)
        if inp.kind == "dunning":
            invoice.stage = step.key
        elif inp.kind == "ladder":
            invoice.escalation_stage = step.key
        invoice.updated_at = now
        set_next_action(invoice, inp.next_action)
        session.add(invoice)
        session.commit()
        return SendOutcome(status if status in ("task", "printed", "uncertain") else "sent")

    @activity.defn(name="post_charges")
    def post_charges(self, inp: PostChargesInput) -> None:
        """Post the late fees, compensation and interest the workflow decided are due now;
        each charge once (its dedupe key), each with a ``charge_posted`` event."""
        with self.sessions() as session:
            for line in charges_due(session, inp):
                post_charge(session, inp.invoice_id, line)

    @activity.defn(name="record_payment")
    def record_payment(self, inp: RecordPaymentInput) -> SegmentMove | None:
        """Record a payment (or its reversal) the workflow applied: the new balance and status,
        a timeline event, the discount granted, and any overpayment as customer credit."""
        self._segments_exist()
        with self.sessions() as session:
            key = f"payment:{inp.payment_id}"
            if already_recorded(session, inp.invoice_id, key):
                return None  # a retry of an attempt that committed
            invoice = self._invoice(session, inp.invoice_id)
            payment = session.get(Payment, inp.payment_id)
            now = utcnow()
            if payment is not None:
                payment.status = "applied"
                payment.applied_at = now
                session.add(payment)
            reversal = inp.kind != "payment"
            add_event(
                session,
                inp.invoice_id,
                "payment_reversed" if reversal else "payment_applied",
                {
                    "payment_id": inp.payment_id,
                    "amount_minor": inp.amount_minor,
                    "balance_before": invoice.balance_minor,
                    "balance_after": inp.balance_after,
                    **({"kind": inp.kind} if reversal else {}),
                    **({"overpaid_minor": inp.overpaid_minor} if inp.overpaid_minor else {}),
                    **({"discount_minor": inp.discount_minor} if inp.discount_minor else {}),
                },
                dedupe_key=key,
            )
            # What the balance could not take pays the invoice's charges, then is credit.
            left = settle_charges(
                session, inp.invoice_id, inp.overpaid_minor, inp.payment_id, WORKFLOW_ACTOR
            )
            if left:
                assert invoice.id is not None
                session.add(
                    overpayment(
                        invoice.customer_id,
                        invoice.currency,
                        left,
                        invoice.id,
                        inp.payment_id,
                        WORKFLOW_ACTOR,
                    )
                )
            if inp.discount_minor:
                invoice.discount_taken_minor += inp.discount_minor
            elif reversal and inp.reopened:
                invoice.discount_taken_minor = 0
            invoice.balance_minor = inp.balance_after
            invoice.updated_at = now
            if inp.status_after != invoice.status:
                add_event(
                    session,
                    inp.invoice_id,
                    "reopened" if inp.reopened else inp.status_after,
                    {"from": invoice.status},
                    dedupe_key=f"{key}:status",
                )
                invoice.status = inp.status_after
                if inp.status_after in CLOSED_STATUSES:
                    invoice.closed_at = now
                    invoice.hold = None
                else:
                    invoice.closed_at = None
            set_next_action(invoice, inp.next_action)
            session.add(invoice)
            session.flush()
            # A payment changes the customer's figures: it may move them to another segment,
            # and lift (or a reversal cause) a credit hold on the account.
            move = refresh(session, invoice.customer_id)
            commit_once(session, inp.invoice_id, key)
            return move

    @activity.defn(name="record_closed")
    def record_closed(self, inp: RecordClosedInput) -> None:
        """Record that the workflow closed the invoice (e.g. cancelled) and why."""
        with self.sessions() as session:
            key = f"status:{inp.status}"
            invoice = self._invoice(session, inp.invoice_id)
            now = utcnow()
            add_event(
                session,
                inp.invoice_id,
                inp.status,
                {"from": invoice.status, "reason": inp.reason},
                actor=inp.actor,
                dedupe_key=key,
            )
            invoice.status = inp.status
            invoice.hold = None
            invoice.closed_at = now
            invoice.updated_at = now
            set_next_action(invoice, None)
            session.add(invoice)
            commit_once(session, inp.invoice_id, key)

    @activity.defn(name="record_change")
    def record_change(self, change: ChangeSet) -> ChangeResult:
        """Record one change of collection state the workflow made: its events, the invoice's
        status, hold, balance and next action, and the dispute/plan/promise/task row. A change
        of the customer's figures (a promise or plan broken, a dispute resolved) re-evaluates
        their segment: ``moved`` when they changed segment."""
        if figures_changed(change):
            self._segments_exist()
        with self.sessions() as session:
            try:
                result = self._apply_change(session, change)
                session.commit()
                return result
            except IntegrityError:
                session.rollback()
                done = session.exec(
                    select(InvoiceEvent).where(
                        InvoiceEvent.invoice_id == change.invoice_id,
                        InvoiceEvent.dedupe_key == change.dedupe_key,
                    )
                ).first()
                if done is None:
                    raise
                # A retry of a recorded change: answer with the ids recorded the first time.
                return ChangeResult(**{k: done.data[k] for k in CHANGE_IDS if k in done.data})

    def _apply_change(self, session: Session, change: ChangeSet) -> ChangeResult:
        now = utcnow()
        invoice = self._invoice(session, change.invoice_id)
        result = ChangeResult()
        if change.dispute is not None:
            result.dispute_id = self._save_dispute(session, change, now)
        if change.plan is not None:
            result.plan_id = self._save_plan(session, change, now)
        if change.promise is not None:
            result.promise_id = self._save_promise(session, change, now)
        if change.task is not None:
            task = change.task
            session.add(
                Task(
                    invoice_id=change.invoice_id, kind=task.kind, due_at=task.due_at, data=task.data
                )
            )
        if change.customer_counter in ("broken_promises", "broken_plans"):
            customer = session.get(Customer, invoice.customer_id)
            assert customer is not None
            counter = change.customer_counter
            setattr(customer, counter, getattr(customer, counter) + 1)
            session.add(customer)
        ids = {k: v for k, v in asdict(result).items() if v is not None}
        events = change.events or [EventSpec("state_recorded", {})]
        for i, spec in enumerate(events):
            add_event(
                session,
                change.invoice_id,
                spec.kind,
                ids | dict(spec.data),
                actor=change.actor,
                dedupe_key=change.dedupe_key if i == 0 else None,
                at=now,
            )
        if change.status != invoice.status and change.status in CLOSED_STATUSES:
            invoice.closed_at = now
        invoice.status = change.status
        invoice.hold = change.hold
        invoice.balance_minor = change.balance_minor
        invoice.updated_at = now
        set_next_action(invoice, change.next_action)
        session.add(invoice)
        session.flush()
        if figures_changed(change):
            result.moved = refresh(session, invoice.customer_id)
        return result

    def _save_dispute(self, session: Session, change: ChangeSet, now: datetime) -> int:
        rec = change.dispute
        assert rec is not None
        if rec.dispute_id is None:
            row = Dispute(
                invoice_id=change.invoice_id,
                status=rec.status,
                reason=rec.reason,
                amount_minor=rec.amount_minor,
                opened_by=change.actor,
                opened_at=now,
                sla_at=rec.sla_at,
            )
        else:
            found = session.get(Dispute, rec.dispute_id)
            assert found is not None
            row = found
            row.status = rec.status
            row.resolved_by = change.actor
            row.resolved_at = now
            row.outcome_note = rec.outcome_note
            row.credit_minor = rec.credit_minor
        return _stored_id(session, row)

    def _save_plan(self, session: Session, change: ChangeSet, now: datetime) -> int:
        rec = change.plan
        assert rec is not None
        installments = [asdict(i) | {"due_at": i.due_at.isoformat()} for i in rec.installments]
        if rec.plan_id is None:
            row = PaymentPlan(
                invoice_id=change.invoice_id,
                status=rec.status,
                installments=installments,
                note=rec.note,
                created_by=change.actor,
                created_at=now,
                updated_at=now,
            )
        else:
            found = session.get(PaymentPlan, rec.plan_id)
            assert found is not None
            row = found
            row.status = rec.status
            row.installments = installments
            row.updated_at = now
        return _stored_id(session, row)

    def _save_promise(self, session: Session, change: ChangeSet, now: datetime) -> int:
        rec = change.promise
        assert rec is not None
        if rec.promise_id is None:
            row = Promise(
                invoice_id=change.invoice_id,
                status=rec.status,
                promised_date=date.fromisoformat(rec.promised_date),
                amount_minor=rec.amount_minor,
                created_by=change.actor,
                created_at=now,
                updated_at=now,
            )
        else:
            found = session.get(Promise, rec.promise_id)
            assert found is not None
            row = found
            row.status = rec.status
            row.updated_at = now
        return _stored_id(session, row)

    def _segments_exist(self) -> None:
        """The segment rules exist before a recording transaction re-evaluates a customer:
        creating the defaults commits (or, when a concurrent payment created them, rolls back),
        which must not happen inside that transaction. Checked once per worker."""
        if not self.segments_ready:
            with self.sessions() as session:
                ensure_default_segments(session)
            self.segments_ready = True

    def all(self) -> list[Any]:
        return [
            self.send_reminder,
            self.record_payment,
            self.record_closed,
            self.record_change,
            self.post_charges,
        ]
