"""One write path for money in. Every payment, whichever way it came (provider webhook, bank
statement, the unmatched queue, customer credit), is stored once as a ``Payment`` row with a
unique ``event_id`` and then delivered to its invoice's workflow, which alone applies it.

Storing and delivering are apart on purpose: the row is committed first, so a delivery that
fails (Temporal down) is retried later from what is stored (``redeliver``), and a delivery that
happens twice is applied once (the workflow remembers payment ids).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select
from temporalio.client import Client

from arflow import gateway
from arflow.charges.service import settle_charges
from arflow.config import Settings
from arflow.errors import DomainError, NotFound, Unavailable, conflict, not_found, unprocessable
from arflow.invoices.confirm import confirm
from arflow.invoices.service import (
    find_referenced,
    get_invoice,
    running_spec,
    workflow_input,
)
from arflow.invoices.timeline import add_event
from models import (
    CreditEntry,
    Customer,
    DunningPolicy,
    Invoice,
    InvoiceEvent,
    OutboxMessage,
    Payment,
    PaymentPlan,
    ReceivedLine,
)
from models.bank import UNMATCHED, overpayment
from models.payment import PaymentAck, PaymentWebhook
from models.types import utcnow
from workflows.types import CLOSED_STATUSES, PAID, InvoiceWorkflowInput, PaymentSignal

log = logging.getLogger("arflow.payments")
REVERSALS = ("refund", "chargeback")


@dataclass(frozen=True)
class Delivery:
    """What a stored payment did: ``delivered`` to a running workflow, ``reopened`` a paid
    invoice, ``recorded`` as credit on a closed one, or ``pending`` (Temporal unreachable)."""

    payment_id: int
    invoice_id: int
    outcome: str


def signal_of(payment: Payment) -> PaymentSignal:
    assert payment.id is not None
    return PaymentSignal(
        payment_id=payment.id,
        amount_minor=abs(payment.amount_minor),
        currency=payment.currency,
        kind=payment.kind,
        paid_at=payment.paid_at,
    )


# -- storing ------------------------------------------------------------------------


def store_payment(session: Session, payment: Payment) -> tuple[Payment, bool]:
    """Insert ``payment`` unless its event id is known; returns (row, created). Flushes only:
    the caller commits (with whatever else belongs to the same fact)."""
    existing = session.exec(select(Payment).where(Payment.event_id == payment.event_id)).first()
    if existing is not None:
        return existing, False
    session.add(payment)
    session.flush()
    return payment, True


def credit_balances(session: Session, customer_id: int) -> dict[str, int]:
    """The customer's credit per currency (only currencies with a non-zero balance)."""
    rows = session.exec(
        select(CreditEntry.currency, func.sum(CreditEntry.amount_minor))
        .where(CreditEntry.customer_id == customer_id)
        .group_by(col(CreditEntry.currency))
    ).all()
    return {currency: int(total) for currency, total in rows if total}


def credit_of(session: Session, customer_id: int) -> tuple[dict[str, int], list[CreditEntry]]:
    """The customer's credit per currency and every entry of it, oldest first."""
    if session.get(Customer, customer_id) is None:
        raise not_found("customer", customer_id)
    entries = session.exec(
        select(CreditEntry)
        .where(CreditEntry.customer_id == customer_id)
        .order_by(col(CreditEntry.id))
    ).all()
    return credit_balances(session, customer_id), list(entries)


def _credit_after_close(session: Session, invoice: Invoice, payment: Payment) -> None:
    """Money for an invoice that is already closed is the customer's credit (or, for a
    reversal of a cancelled or written-off invoice, only a note on the timeline)."""
    assert invoice.id is not None and payment.id is not None
    payment.status = "unapplied"
    session.add(payment)
    reversal = payment.kind in REVERSALS
    credited = 0
    if not reversal:
        # A late fee or interest paid after the invoice: it settles those charges first.
        credited = payment.amount_minor
        if payment.currency == invoice.currency:
            credited = settle_charges(session, invoice.id, credited, payment.id, payment.source)
    if credited:
        session.add(
            overpayment(
                invoice.customer_id,
                payment.currency,
                credited,
                invoice.id,
                payment.id,
                payment.source,
            )
        )
    add_event(
        session,
        invoice.id,
        "reversal_after_close" if reversal else "payment_after_close",
        {
            "payment_id": payment.id,
            "amount_minor": payment.amount_minor,
            "invoice_status": invoice.status,
            **({} if reversal else {"credited_minor": credited}),
        },
        actor=payment.source,
        dedupe_key=f"payment:{payment.id}",
    )
    try:
        session.commit()
    except IntegrityError:  # recorded by a concurrent delivery of the same payment
        session.rollback()


# -- delivering -----------------------------------------------------------------------


def _release(session: Session) -> None:
    """End the session's (read) transaction so its connection goes back to the pool before
    waiting on Temporal. Held across the wait, a burst of webhooks took every pooled
    connection, and the next request's checkout blocked the event loop the holders needed to
    finish: the API froze for the pool timeout and answered 500 (issue 16, webhook storm).

    The same holds for a wait for a thread: each step run with ``asyncio.to_thread`` ends
    its transaction before it returns. Holding a connection while queued for one of the few
    threads, 32 webhooks took every connection of SQLite's pool (15) while the threads
    waited for a connection: every webhook failed after the pool timeout."""
    session.commit()


def _invoice_now(session: Session, invoice_id: int) -> Invoice:
    """The invoice as stored now, its read transaction ended (see ``_release``)."""
    invoice = get_invoice(session, invoice_id)
    session.refresh(invoice)
    _release(session)
    return invoice


async def deliver(session: Session, client: Client, settings: Settings, payment: Payment) -> str:
    """Hand a stored payment to its invoice's workflow (see ``Delivery`` for the outcomes).
    Raises ``Unavailable`` when Temporal does not answer; the payment stays stored and
    ``received``, and a later ``redeliver`` (or the same request again) finishes the job.

    The database work runs in a thread, never on the event loop: a burst of webhooks in an
    API process otherwise held the loop in the database driver most of the time, and every
    other request waited behind them (issue 16, bench/storm.py)."""
    assert payment.id is not None
    invoice = await asyncio.to_thread(_invoice_now, session, payment.invoice_id)
    if payment.status != "received":
        return "duplicate"
    for _ in range(2):
        if invoice.status in CLOSED_STATUSES:
            if payment.kind in REVERSALS and invoice.status == PAID:
                await _reopen(session, client, settings, invoice, payment)
                return "reopened"
            await asyncio.to_thread(_credit_after_close, session, invoice, payment)
            return "recorded"
        invoice_id, signal = invoice.id, signal_of(payment)
        assert invoice_id is not None
        if await gateway.signal_payment(client, settings, invoice_id, signal):
            if payment.kind == "payment" and settings.confirm_payments:
                # the customer hears it arrived (once per payment: the id is its key)
                await confirm(session, client, settings, invoice_id, "payment", payment.id)
            return "delivered"
        # The workflow completed in between: look at the invoice again.
        invoice = await asyncio.to_thread(_invoice_now, session, invoice_id)
    raise Unavailable(
        f"invoice {invoice.id} has no workflow to apply to", code="workflow_unavailable"
    )


async def _reopen(
    session: Session, client: Client, settings: Settings, invoice: Invoice, payment: Payment
) -> None:
    """A refund or chargeback of a paid invoice: start a new run of its workflow with the
    reversal queued (signal-with-start, so a run that is already back just gets the signal).
    The run carries the steps already sent or skipped, so dunning goes on where it stood."""
    inp = await asyncio.to_thread(_reopen_input_of, session, invoice)
    signal = signal_of(payment)
    inp.search_attributes = await gateway.search_attributes_ready(client, settings)
    inp.external_delivery = settings.external_delivery
    await gateway.reopen_with_payment(client, settings, inp, signal)


def _reopen_input_of(session: Session, invoice: Invoice) -> InvoiceWorkflowInput:
    customer = session.get(Customer, invoice.customer_id)
    policy = session.get(DunningPolicy, invoice.policy_id)
    assert customer is not None and policy is not None and invoice.id is not None
    inp = reopen_input(session, invoice, customer, policy)
    _release(session)
    return inp


def reopen_input(
    session: Session, invoice: Invoice, customer: Customer, policy: DunningPolicy
) -> InvoiceWorkflowInput:
    inp = workflow_input(invoice, customer, policy, spec=running_spec(session, invoice, policy))
    inp.status = invoice.status
    inp.sent_steps = sorted(
        set(
            session.exec(
                select(OutboxMessage.step_key).where(OutboxMessage.invoice_id == invoice.id)
            ).all()
        )
    )
    skipped = session.exec(
        select(InvoiceEvent.data).where(
            InvoiceEvent.invoice_id == invoice.id, InvoiceEvent.kind == "reminder_skipped"
        )
    ).all()
    inp.skipped_steps = sorted({str(d["step"]) for d in skipped} - set(inp.sent_steps))
    inp.plans_agreed = len(
        session.exec(select(PaymentPlan.id).where(PaymentPlan.invoice_id == invoice.id)).all()
    )
    inp.discount_taken_minor = invoice.discount_taken_minor
    return inp


async def deliver_all(
    session: Session, client: Client, settings: Settings, payment_ids: list[int]
) -> list[Delivery]:
    """Deliver several stored payments; one that Temporal refuses stays ``pending``."""
    done = []
    for payment_id in payment_ids:
        payment = session.get(Payment, payment_id)
        assert payment is not None
        try:
            outcome = await deliver(session, client, settings, payment)
        except DomainError as exc:
            log.warning("payment %s not delivered yet: %s", payment_id, exc.message)
            outcome = "pending"
        done.append(Delivery(payment_id, payment.invoice_id, outcome))
    return done


async def redeliver(session: Session, client: Client, settings: Settings) -> list[Delivery]:
    """Deliver every payment that was stored but never applied (a delivery that failed)."""
    ids = session.exec(
        select(Payment.id).where(Payment.status == "received").order_by(col(Payment.id))
    ).all()
    return await deliver_all(session, client, settings, [i for i in ids if i is not None])


# -- provider webhook -------------------------------------------------------------------


async def receive_webhook(
    session: Session, client: Client, settings: Settings, body: PaymentWebhook
) -> PaymentAck:
    """A provider's payment, refund or chargeback for one invoice. The database work runs
    in a thread (see ``deliver``)."""
    stored = await asyncio.to_thread(_store_webhook, session, body)
    if isinstance(stored, PaymentAck):
        return stored
    payment, created = stored
    outcome = await deliver(session, client, settings, payment)
    status = {
        "delivered": "accepted" if created else "duplicate",
        "reopened": "reopened",
        "recorded": "recorded",
        "duplicate": "duplicate",
    }[outcome]
    assert payment.id is not None
    return PaymentAck(status=status, payment_id=payment.id, invoice_id=payment.invoice_id)


def _store_webhook(session: Session, body: PaymentWebhook) -> tuple[Payment, bool] | PaymentAck:
    """The webhook's payment stored (or found, for a repeated event) with whether it is new;
    the acknowledgement instead when it is queued as an unmatched line."""
    invoice = find_referenced(
        session, Invoice, body.invoice_id, body.invoice_external_id, "invoice"
    )
    assert invoice.id is not None
    if body.currency != invoice.currency:
        line = _queue_currency_mismatch(session, invoice, body)
        return PaymentAck(status="unmatched", invoice_id=invoice.id, line_id=line.id)
    sign = -1 if body.type in REVERSALS else 1
    try:
        payment, created = store_payment(
            session,
            Payment(
                event_id=body.event_id,
                invoice_id=invoice.id,
                amount_minor=sign * body.amount_minor,
                currency=body.currency,
                paid_at=body.paid_at.astimezone(UTC),
                method=body.method,
                kind=body.type,
                source="webhook",
            ),
        )
        session.commit()
    except IntegrityError:  # the same event delivered twice at once
        session.rollback()
        stmt = select(Payment).where(Payment.event_id == body.event_id)
        payment, created = session.exec(stmt).one(), False
    if (payment.invoice_id, payment.amount_minor, payment.currency, payment.kind) != (
        invoice.id,
        sign * body.amount_minor,
        body.currency,
        body.type,
    ):
        raise conflict(f"event {body.event_id!r} was already received with different data")
    _release(session)
    return payment, created


def _queue_currency_mismatch(
    session: Session, invoice: Invoice, body: PaymentWebhook
) -> ReceivedLine:
    key = f"webhook:{body.event_id}"
    line = session.exec(select(ReceivedLine).where(ReceivedLine.dedupe_key == key)).first()
    if line is not None:
        return line
    sign = -1 if body.type in REVERSALS else 1
    line = ReceivedLine(
        dedupe_key=key,
        source="webhook",
        bank_transaction_id=body.event_id,
        booking_date=body.paid_at.astimezone(UTC).date(),
        amount_minor=sign * body.amount_minor,
        currency=body.currency,
        remittance=f"{body.method} {body.type} for invoice {invoice.number}",
        status=UNMATCHED,
        reason=f"paid in {body.currency}, the invoice is in {invoice.currency}",
        customer_id=invoice.customer_id,
        candidates=[invoice.id or 0],
    )
    session.add(line)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return session.exec(select(ReceivedLine).where(ReceivedLine.dedupe_key == key)).one()
    return line


# -- customer credit ---------------------------------------------------------------------


async def apply_credit(
    session: Session,
    client: Client,
    settings: Settings,
    customer_id: int,
    invoice_id: int,
    amount_minor: int,
    actor: str,
    key: str,
) -> tuple[Payment, str]:
    """Use part of a customer's credit balance to pay one of their open invoices."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"customer {customer_id} not found")
    invoice = find_referenced(session, Invoice, invoice_id, None, "invoice")
    assert invoice.id is not None
    event_id = f"credit:{customer_id}:{key}"
    existing = session.exec(select(Payment).where(Payment.event_id == event_id)).first()
    if existing is not None:
        if (existing.invoice_id, existing.amount_minor) != (invoice.id, amount_minor):
            raise conflict(f"Idempotency-Key {key!r} was already used with different data")
        return existing, await deliver(session, client, settings, existing)
    if invoice.customer_id != customer_id:
        raise unprocessable(f"invoice {invoice.id} belongs to another customer")
    if invoice.status in CLOSED_STATUSES:
        raise conflict(f"invoice {invoice.id} is {invoice.status}")
    if amount_minor > invoice.balance_minor:
        raise unprocessable(
            f"amount {amount_minor} exceeds the invoice's open balance {invoice.balance_minor}"
        )
    # Lock the customer row (PostgreSQL; SQLite writers are serialised anyway) so two
    # concurrent uses of the same credit cannot both pass the balance check.
    session.exec(select(Customer).where(Customer.id == customer_id).with_for_update()).one()
    available = credit_balances(session, customer_id).get(invoice.currency, 0)
    if amount_minor > available:
        session.rollback()
        raise conflict(
            f"customer {customer_id} has {available} {invoice.currency} of credit, "
            f"not {amount_minor}"
        )
    payment, _ = store_payment(
        session,
        Payment(
            event_id=event_id,
            invoice_id=invoice.id,
            amount_minor=amount_minor,
            currency=invoice.currency,
            paid_at=utcnow(),
            method="credit",
            source="credit",
        ),
    )
    session.add(
        CreditEntry(
            dedupe_key=f"applied:{payment.id}",
            customer_id=customer_id,
            currency=invoice.currency,
            amount_minor=-amount_minor,
            kind="applied",
            invoice_id=invoice.id,
            payment_id=payment.id,
            actor=actor,
        )
    )
    session.commit()
    return payment, await deliver(session, client, settings, payment)


def credit_holders(session: Session, limit: int = 200) -> list[tuple[int, str, int]]:
    """``(customer id, currency, balance)`` of every positive credit balance, largest first
    (the dashboard's list of customers whose credit can pay an invoice)."""
    total = func.sum(CreditEntry.amount_minor)
    rows = session.exec(
        select(CreditEntry.customer_id, CreditEntry.currency, total)
        .group_by(col(CreditEntry.customer_id), col(CreditEntry.currency))
        .having(total > 0)
        .order_by(total.desc(), col(CreditEntry.customer_id))
        .limit(limit)
    ).all()
    return [(customer_id, currency, int(balance)) for customer_id, currency, balance in rows]
