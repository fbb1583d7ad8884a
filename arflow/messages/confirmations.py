"""Confirmations to a customer of what they (or a specialist, on their behalf) agreed: plan
agreed, plan proposal declined, promise noted, dispute received, dispute outcome, payment
received. By email, in the customer's locale (template ``confirmation``).

Why not let the invoice workflow send them after its update: the workflow's command sequence
is replayed from saved histories, and a new activity after each update would need a
``workflow.patched`` branch in every handler, for messages that decide nothing about
collection. A confirmation is instead its own small workflow (``ConfirmationWorkflow``),
started by the domain after the fact is recorded, with an id derived from its step key
(``confirm-<kind>-<id>``): a second start for the same fact is refused by Temporal, and the
outbox row, unique per (invoice, step key, channel), makes the send itself once-only even if
the activity is retried.

Delivery follows the reminders' rules (``sending.py``): the row is committed ``queued``, then
``sending`` before the provider is called; a transient error puts it back to ``queued`` and
Temporal retries; a permanent one marks it ``failed``; an ambiguous one ``uncertain`` (never
resent, a ``delivery_uncertain`` task). A customer whose email is blocked (opted out) or who
has no address gets no email: the row is recorded ``blocked``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from arflow.customers.contacts import block
from arflow.invoices import tasks
from arflow.invoices.timeline import add_event
from arflow.messages.channels import (
    AmbiguousDeliveryError,
    Channel,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from arflow.messages.render import formatting_locale, local_date, money, render_message
from models import (
    ContactBlock,
    Customer,
    Dispute,
    Invoice,
    OutboxMessage,
    Payment,
    PaymentPlan,
    PlanProposal,
    Promise,
)
from models.types import utcnow
from workflows.confirmations import CONFIRMATION_KINDS, ConfirmationInput

TEMPLATE = "confirmation"
CHANNEL = "email"
FINISHED = ("sent", "delivered", "uncertain", "blocked", "failed")


class ConfirmationSender:
    """Sends one confirmation through ``channel`` (the outbox, or a provider)."""

    def __init__(
        self,
        channel: Channel,
        pay_url: Callable[[int, str, str], str],
        default_locale: str = "en",
    ) -> None:
        self.channel = channel
        self.pay_url = pay_url
        self.default_locale = default_locale
        # customer id -> the customer's signed portal link (in every confirmation when set)
        self.portal_url: Callable[[int], str] | None = None
        # The HTML body of a freshly queued row, by outbox id (not stored: the text is).
        self.html_of: dict[int, str] = {}

    def send(self, session: Session, inp: ConfirmationInput) -> str:
        """The confirmation's outcome: sent, uncertain, blocked or failed (once per step key)."""
        if inp.kind not in CONFIRMATION_KINDS:
            raise ValueError(f"unknown confirmation {inp.kind!r}")
        row = self._row(session, inp)
        if row is None:
            row = self._queue(session, inp)
        if row.status in FINISHED:
            return row.status
        if row.status == "sending":  # an earlier attempt died while the provider had it
            return self._uncertain(session, inp, row, "the attempt ended during the provider call")
        message = OutboundMessage(
            outbox_id=row.id or 0,
            invoice_id=inp.invoice_id,
            step_key=inp.step_key,
            channel=CHANNEL,
            recipient=row.recipient,
            subject=row.subject,
            body=row.body,
            html=self.html_of.pop(row.id or 0, None),
        )
        if not self._external():
            row.provider_id = self.channel.deliver(message).provider_id
            return self._done(session, inp, row, "sent")
        row.status = "sending"
        session.add(row)
        session.commit()
        try:
            row.provider_id = self.channel.deliver(message).provider_id
        except TransientDeliveryError:
            row.status = "queued"
            session.add(row)
            session.commit()
            raise
        except PermanentDeliveryError as exc:
            invoice = session.get(Invoice, inp.invoice_id)
            if exc.block_reason and invoice is not None:
                block(
                    session,
                    invoice.customer_id,
                    CHANNEL,
                    exc.block_reason,
                    "provider",
                    address=row.recipient,
                    detail=exc.reason[:500],
                )
            row.detail = exc.reason[:500]
            return self._done(session, inp, row, "failed")
        except AmbiguousDeliveryError as exc:
            return self._uncertain(session, inp, row, exc.reason)
        return self._done(session, inp, row, "sent")

    def _external(self) -> bool:
        is_external = getattr(self.channel, "is_external", None)
        return bool(is_external(CHANNEL)) if is_external else bool(self.channel.external)

    def _row(self, session: Session, inp: ConfirmationInput) -> OutboxMessage | None:
        return session.exec(
            select(OutboxMessage).where(
                OutboxMessage.invoice_id == inp.invoice_id,
                OutboxMessage.step_key == inp.step_key,
                OutboxMessage.channel == CHANNEL,
            )
        ).first()

    def _queue(self, session: Session, inp: ConfirmationInput) -> OutboxMessage:
        """The confirmation's outbox row, committed (``queued``, or ``blocked`` when the
        customer may not be emailed); a concurrent attempt's row when it won the key."""
        invoice = session.get(Invoice, inp.invoice_id)
        assert invoice is not None and invoice.id is not None
        customer = session.get(Customer, invoice.customer_id)
        assert customer is not None
        rendered = render_message(
            TEMPLATE,
            customer.locale,
            self.context(session, inp, invoice, customer),
            default_locale=self.default_locale,
        )
        why = unreachable(session, customer)
        row = OutboxMessage(
            invoice_id=invoice.id,
            step_key=inp.step_key,
            channel=CHANNEL,
            recipient=(customer.email or "")[:320] or None,
            subject=rendered.subject[:300],
            body=rendered.text,
            status="blocked" if why else "queued",
            detail=why,
        )
        session.add(row)
        if why:
            add_event(
                session,
                invoice.id,
                "confirmation_blocked",
                {"confirmation": inp.kind, "ref_id": inp.ref_id, "reason": why},
                dedupe_key=f"confirm:{inp.step_key}",
            )
        try:
            session.commit()
        except IntegrityError:  # a concurrent attempt queued it first
            session.rollback()
            found = self._row(session, inp)
            assert found is not None
            return found
        session.refresh(row)
        if row.id is not None:
            self.html_of[row.id] = rendered.html
        return row

    def context(
        self, session: Session, inp: ConfirmationInput, invoice: Invoice, customer: Customer
    ) -> dict[str, Any]:
        """The template's variables: the invoice, and what is confirmed, formatted for the
        customer's locale."""
        assert invoice.id is not None
        loc, tz = formatting_locale(customer.locale, self.default_locale), customer.timezone
        cur = invoice.currency

        def day(value: date | str) -> str:
            return local_date(
                date.fromisoformat(value) if isinstance(value, str) else value, tz, loc
            )

        ctx: dict[str, Any] = {
            "kind": inp.kind,
            "invoice": invoice,
            "customer": customer,
            "locale": loc,
            "balance": money(invoice.balance_minor, cur, loc),
            "pay_url": self.pay_url(invoice.id, invoice.number, invoice.external_id),
            "portal_url": self.portal_url(customer.id)
            if self.portal_url is not None and customer.id is not None
            else "",
            "amount": "",
            "date": "",
            "installments": [],
            "note": "",
            "outcome": "",
            "credit": "",
        }
        if inp.kind == "plan":
            plan = session.get(PaymentPlan, inp.ref_id)
            assert plan is not None
            ctx["installments"] = [
                {
                    "n": n,
                    "due": day(str(i["due_date"])),
                    "amount": money(int(i["amount_minor"]), cur, loc),
                }
                for n, i in enumerate(plan.installments, start=1)
            ]
        elif inp.kind == "plan-declined":
            proposal = session.get(PlanProposal, inp.ref_id)
            assert proposal is not None
            ctx["note"] = proposal.decision_note or ""
        elif inp.kind == "promise":
            promise = session.get(Promise, inp.ref_id)
            assert promise is not None
            ctx |= {
                "amount": money(promise.amount_minor, cur, loc),
                "date": day(promise.promised_date),
            }
        elif inp.kind in ("dispute", "dispute-outcome"):
            dispute = session.get(Dispute, inp.ref_id)
            assert dispute is not None
            ctx |= {
                "note": dispute.outcome_note or ""
                if inp.kind == "dispute-outcome"
                else dispute.reason,
                "outcome": dispute.status,
                "credit": money(dispute.credit_minor, cur, loc) if dispute.credit_minor else "",
                "date": local_date(dispute.opened_at, tz, loc),
            }
        else:
            payment = session.get(Payment, inp.ref_id)
            assert payment is not None
            ctx |= {
                "amount": money(payment.amount_minor, payment.currency, loc),
                "date": local_date(payment.paid_at, tz, loc),
            }
        return ctx

    def _uncertain(
        self, session: Session, inp: ConfirmationInput, row: OutboxMessage, why: str
    ) -> str:
        row.detail = why[:500]
        tasks.new_task(
            session,
            inp.invoice_id,
            tasks.DELIVERY_UNCERTAIN,
            {"step": inp.step_key, "channel": CHANNEL, "outbox_id": row.id},
            due_at=utcnow(),
        )
        return self._done(session, inp, row, "uncertain")

    def _done(
        self, session: Session, inp: ConfirmationInput, row: OutboxMessage, status: str
    ) -> str:
        now = utcnow()
        if row.status in ("queued", "sending"):  # never undo a webhook's "delivered"
            row.status = status
        row.sent_at = now if status in ("sent", "uncertain") else None
        row.updated_at = now
        session.add(row)
        add_event(
            session,
            inp.invoice_id,
            "confirmation_sent" if status != "failed" else "confirmation_failed",
            {
                "confirmation": inp.kind,
                "ref_id": inp.ref_id,
                "outbox_id": row.id,
                **({"delivery": status} if status != "sent" else {}),
            },
            dedupe_key=f"confirm:{inp.step_key}",
        )
        try:
            session.commit()
        except IntegrityError:  # a concurrent attempt recorded it first
            session.rollback()
        return status


def unreachable(session: Session, customer: Customer) -> str | None:
    """Why the customer may not be emailed (an opt-out or a bad address, no address)."""
    found = session.exec(
        select(ContactBlock).where(
            ContactBlock.customer_id == customer.id, ContactBlock.channel == CHANNEL
        )
    ).first()
    if found is not None:
        return f"email blocked: {found.reason}"
    if not customer.email:
        return "no email on file"
    return None
