"""The invoice workflow's activities: each one idempotent, each one a single transaction.

Thin adapters: they open a session, call the domain (``arflow.messages.delivery`` to send a
step, ``arflow.invoices.recording`` and ``arflow.payments.recording`` to record what the
workflow decided, ``arflow.charges``
to post charges) and turn a domain ``NotFound`` into a non-retryable failure.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.failures import not_found_is_final
from arflow.charges.service import charges_due, post_charge
from arflow.customers.segments import ensure_default_segments
from arflow.db import SessionFactory
from arflow.invoices import commands, recording
from arflow.invoices.corrections import load_customer_zone
from arflow.messages.delivery import StepDelivery
from arflow.payments import recording as payments
from workflows.types import (
    ChangeResult,
    ChangeSet,
    CheckCommandInput,
    CommandCheck,
    CustomerZone,
    LoadCustomerZoneInput,
    LoadedPayment,
    LoadPaymentInput,
    PostChargesInput,
    RecordClosedInput,
    RecordPaymentInput,
    SegmentMove,
    SendOutcome,
    SendReminderInput,
)


class InvoiceActivities:
    """Bound methods are registered on the worker; dependencies come in through the constructor."""

    def __init__(self, sessions: SessionFactory, delivery: StepDelivery) -> None:
        self.sessions = sessions
        self.delivery = delivery  # sends one step on one channel (channels, templates, PDFs)
        self.segments_ready = False  # the default segments exist (none is ever deleted)

    @activity.defn(name="send_reminder")
    def send_reminder(self, inp: SendReminderInput) -> SendOutcome:
        """One step on one channel, at most once (see arflow/messages/sending.py)."""
        with self.sessions() as session, not_found_is_final():
            return self.delivery.send(session, inp)

    @activity.defn(name="post_charges")
    def post_charges(self, inp: PostChargesInput) -> None:
        """Post the late fees, compensation and interest the workflow decided are due now;
        each charge once (its dedupe key), each with a ``charge_posted`` event."""
        with self.sessions() as session, not_found_is_final():
            for line in charges_due(session, inp):
                post_charge(session, inp.invoice_id, line)

    @activity.defn(name="load_payment")
    def load_payment(self, inp: LoadPaymentInput) -> LoadedPayment:
        """The stored payment a signal names (a refusal is recorded on the timeline)."""
        with self.sessions() as session, not_found_is_final():
            return payments.load_payment(session, inp)

    @activity.defn(name="load_customer_zone")
    def load_customer_zone(self, inp: LoadCustomerZoneInput) -> CustomerZone:
        """The stored zone and country of the invoice's customer (``customer_changed``)."""
        with self.sessions() as session, not_found_is_final():
            return load_customer_zone(session, inp.invoice_id)

    @activity.defn(name="check_command")
    def check_command(self, inp: CheckCommandInput) -> CommandCheck:
        """Whether an update is one the domain recorded (a refusal is recorded)."""
        with self.sessions() as session, not_found_is_final():
            return commands.check_command(session, inp)

    @activity.defn(name="record_payment")
    def record_payment(self, inp: RecordPaymentInput) -> SegmentMove | None:
        """Record a payment (or its reversal) the workflow applied."""
        self._segments_exist()
        with self.sessions() as session, not_found_is_final():
            return payments.record_payment(session, inp)

    @activity.defn(name="record_closed")
    def record_closed(self, inp: RecordClosedInput) -> None:
        """Record that the workflow closed the invoice (e.g. cancelled) and why."""
        with self.sessions() as session, not_found_is_final():
            recording.record_closed(session, inp)

    @activity.defn(name="record_change")
    def record_change(self, change: ChangeSet) -> ChangeResult:
        """Record one change of collection state the workflow made (see
        ``arflow.invoices.recording.record_change``)."""
        if recording.figures_changed(change):
            self._segments_exist()
        with self.sessions() as session, not_found_is_final():
            return recording.record_change(session, change)

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
            self.load_payment,
            self.load_customer_zone,
            self.check_command,
            self.record_payment,
            self.record_closed,
            self.record_change,
            self.post_charges,
        ]
