"""Applying payments, refunds and chargebacks to the invoice: pure decisions, no I/O, safe
inside the workflow.

The functions change the workflow's state (``InvoiceWorkflowInput``) they are given and return
what the ``record_payment`` activity records (its ``next_action`` is left for the workflow to
fill in, from the state after the payment).
"""

from __future__ import annotations

from datetime import datetime

from workflows.ladder import hold_back_escalation
from workflows.schedule import local_today
from workflows.types import (
    CLOSED_STATUSES,
    OPEN,
    PAID,
    InvoiceWorkflowInput,
    Movement,
    PaymentSignal,
    RecordPaymentInput,
)


def record_movement(inp: InvoiceWorkflowInput, amount_minor: int, at: datetime) -> None:
    """Note a change of the balance at ``at`` (for interest): negative paid or credited."""
    if amount_minor:
        day = local_today(at, inp.timezone)
        inp.movements.append(Movement(day.isoformat(), amount_minor))


def apply(
    inp: InvoiceWorkflowInput, payment: PaymentSignal, now: datetime, park: bool = True
) -> RecordPaymentInput:
    """A payment, or a refund or chargeback (any other ``kind``), applied at ``now``.
    ``park``: keep what a reversal takes back beyond what was paid (see ``reverse_payment``);
    False only for histories recorded before reversals were parked."""
    if payment.kind == "payment":
        return take_payment(inp, payment, now)
    return reverse_payment(inp, payment, now, park)


def take_payment(
    inp: InvoiceWorkflowInput, payment: PaymentSignal, now: datetime
) -> RecordPaymentInput:
    """Lower the balance; what is left over becomes credit; a payment inside the
    early-payment window that covers the discounted amount settles the invoice. ``now``
    dates the movement of a payment that carries no date. A reversal that arrived before
    this payment (parked) cancels as much of it first."""
    offset = min(inp.parked_reversal_minor, payment.amount_minor)
    inp.parked_reversal_minor -= offset
    amount = payment.amount_minor - offset
    taken = min(amount, inp.balance_minor)
    inp.balance_minor -= taken
    discount = 0
    if (
        0 < inp.balance_minor <= inp.discount_minor - inp.discount_taken_minor
        and inp.discount_until is not None
        and payment.paid_at is not None
        and payment.paid_at <= inp.discount_until
        and inp.status not in CLOSED_STATUSES
    ):
        discount = inp.balance_minor
        inp.discount_taken_minor += discount
        inp.balance_minor = 0
    if inp.balance_minor == 0 and inp.status not in CLOSED_STATUSES:
        inp.status = PAID
    record_movement(inp, -(taken + discount), payment.paid_at or now)
    return RecordPaymentInput(
        invoice_id=inp.invoice_id,
        payment_id=payment.payment_id,
        amount_minor=payment.amount_minor,
        balance_after=inp.balance_minor,
        status_after=inp.status,
        next_action=None,
        overpaid_minor=amount - taken,
        discount_minor=discount,
        offset_minor=offset,
    )


def reverse_payment(
    inp: InvoiceWorkflowInput, payment: PaymentSignal, now: datetime, park: bool = True
) -> RecordPaymentInput:
    """A refund or chargeback at ``now``: the balance goes back up (never above the invoice
    amount; a discount earned by the reversed payment is lost with it). A paid invoice opens
    again and dunning goes on from where it stood, as after a pause.

    What goes beyond the invoice amount reverses money not received yet: a provider's refund
    webhook overtook its payment's. It is parked and the next payments cancel it out, so the
    end state is the one of the two events in order (with ``park`` False it was dropped)."""
    back = payment.amount_minor
    if inp.status == PAID and inp.discount_taken_minor:
        back += inp.discount_taken_minor
        inp.discount_taken_minor = 0
    before = inp.balance_minor
    parked = max(0, before + back - inp.amount_minor) if park else 0
    inp.parked_reversal_minor += parked
    inp.balance_minor = min(inp.amount_minor, inp.balance_minor + back)
    record_movement(inp, inp.balance_minor - before, now)
    reopened = inp.status == PAID and inp.balance_minor > 0
    if reopened:
        inp.status = OPEN
        hold_back_escalation(inp, now)
        inp.catch_up_note = "payment_reversed"
    return RecordPaymentInput(
        invoice_id=inp.invoice_id,
        payment_id=payment.payment_id,
        amount_minor=payment.amount_minor,
        balance_after=inp.balance_minor,
        status_after=inp.status,
        next_action=None,
        kind=payment.kind,
        reopened=reopened,
        parked_minor=parked,
    )
