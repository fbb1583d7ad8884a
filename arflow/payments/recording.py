"""A payment (or its reversal) the invoice's workflow applied, recorded in one transaction:
the new balance and status, the timeline event, the discount granted, the invoice's charges
paid from what the balance could not take, and the rest as the customer's credit. And, before
that, the stored payment a ``payment_received`` signal names (``load_payment``)."""

from __future__ import annotations

from sqlmodel import Session

from arflow.charges.service import settle_charges
from arflow.invoices import tasks
from arflow.invoices.recording import refresh
from arflow.invoices.service import get_invoice
from arflow.invoices.timeline import (
    WORKFLOW_ACTOR,
    add_event,
    already_recorded,
    commit_once,
    set_next_action,
)
from arflow.payments.service import signal_of
from models import Payment
from models.bank import overpayment
from models.types import utcnow
from workflows.types import (
    CLOSED_STATUSES,
    LoadedPayment,
    LoadPaymentInput,
    RecordPaymentInput,
    SegmentMove,
)


def load_payment(session: Session, inp: LoadPaymentInput) -> LoadedPayment:
    """The stored payment a signal names, as the workflow is to apply it: amount, currency,
    kind and date from its row, whatever the signal said. Refused, with a
    ``payment_signal_rejected`` event (once per payment id), when no such payment exists, it
    belongs to another invoice, it is not waiting to be applied (``received``; or
    ``applied`` by this invoice's workflow, when a retried workflow task runs this local
    activity again), or it is in another currency than the invoice."""
    invoice = get_invoice(session, inp.invoice_id)
    payment = session.get(Payment, inp.payment_id)
    if payment is None:
        reason = "unknown payment"
    elif payment.invoice_id != inp.invoice_id:
        reason = "the payment belongs to another invoice"
    elif payment.status != "received" and not _applied_here(session, payment):
        reason = f"the payment is {payment.status}, not waiting to be applied"
    elif payment.currency != invoice.currency:
        reason = f"the payment is in {payment.currency}, the invoice in {invoice.currency}"
    else:
        return LoadedPayment(payment=signal_of(payment))
    key = f"payment:{inp.payment_id}:rejected"
    if not already_recorded(session, inp.invoice_id, key):
        add_event(
            session,
            inp.invoice_id,
            "payment_signal_rejected",
            {"payment_id": inp.payment_id, "reason": reason},
            dedupe_key=key,
        )
        commit_once(session, inp.invoice_id, key)
    return LoadedPayment(reason=reason)


def _applied_here(session: Session, payment: Payment) -> bool:
    """Whether this invoice's workflow applied ``payment`` already (``record_payment``
    marked it applied and wrote its ``payment:{id}`` event). ``load_payment`` is a local
    activity, which runs again when its workflow task is retried: that second look is at
    the payment this very workflow took, and must not refuse it."""
    return payment.status == "applied" and already_recorded(
        session, payment.invoice_id, f"payment:{payment.id}"
    )


def record_payment(session: Session, inp: RecordPaymentInput) -> SegmentMove | None:
    """Record a payment (or its reversal) the workflow applied: the new balance and status,
    a timeline event, the discount granted, and any overpayment as customer credit."""
    key = f"payment:{inp.payment_id}"
    if already_recorded(session, inp.invoice_id, key):
        return None  # a retry of an attempt that committed
    invoice = get_invoice(session, inp.invoice_id)
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
            # a refund that overtook its payment, and the payment that cancels it out
            **({"parked_minor": inp.parked_minor} if inp.parked_minor else {}),
            **({"offset_minor": inp.offset_minor} if inp.offset_minor else {}),
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
            tasks.invoice_closed(session, inp.invoice_id, inp.status_after, WORKFLOW_ACTOR)
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
