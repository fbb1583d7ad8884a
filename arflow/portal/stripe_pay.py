"""Card payments through Stripe Checkout: one checkout for one or several of a customer's
invoices, and Stripe's events about it turned into payments, refunds and chargebacks.

Money reaches the invoices only through the payments service (``receive_webhook``), as a
provider's webhook would: each invoice's share is one ``PaymentWebhook`` with an event id
derived from the Stripe object it comes from (the checkout session, the charge and its
cumulative refunded amount, the dispute), never from Stripe's event id. So a retried event, or
the same fact in another event, is applied once.

The official ``stripe`` SDK does the HTTP and the signature check; ``stripe_api_base`` points
it elsewhere (a local fake in the tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.config import Settings
from arflow.errors import BadRequest, NotFound, Unavailable, not_found, unprocessable
from arflow.invoices.timeline import add_event
from arflow.payments import service as payments
from models import Invoice, StripeCheckout, StripeReversal
from models.checkout import StripeAck
from models.payment import PaymentAck, PaymentWebhook
from models.types import MAX_ID, utcnow
from workflows.types import CLOSED_STATUSES

log = logging.getLogger("arflow.portal.stripe")

CUSTOMER_ACTOR = "customer"
STRIPE_ACTOR = "stripe"
COMPLETED = "checkout.session.completed"
REFUNDED = "charge.refunded"
DISPUTED = "charge.dispute.created"


def stripe_client(settings: Settings) -> stripe.StripeClient:
    """The SDK's client on the configured API base (``base_addresses["api"]``)."""
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=2,  # safe: every create carries an idempotency key
    )


# -- checkout -------------------------------------------------------------------------------


def create_checkout(
    session: Session,
    settings: Settings,
    customer_id: int,
    invoice_ids: list[int],
    success_url: str,
    cancel_url: str,
) -> str:
    """A Stripe Checkout Session paying the open balance of each of ``invoice_ids`` (all of
    ``customer_id``, one currency); returns the URL to send the customer to.

    An invoice of another customer is ``not_found`` (as a missing one); a closed or fully paid
    invoice, or invoices in several currencies, are refused (422). Synchronous (the SDK's HTTP
    call blocks): an async caller runs it with ``asyncio.to_thread``. The same request again
    (a double click) gets the same session back (Stripe's idempotency key)."""
    if not settings.stripe_enabled:
        raise NotFound("card payments are not configured", code="stripe_not_configured")
    ids = sorted(set(invoice_ids))
    if not ids:
        raise unprocessable("choose at least one invoice to pay")
    invoices = [_payable(session, customer_id, invoice_id) for invoice_id in ids]
    currencies = sorted({inv.currency for inv in invoices})
    if len(currencies) > 1:
        raise unprocessable(
            "invoices in different currencies cannot be paid in one checkout",
            {"currencies": currencies},
        )
    currency = currencies[0]
    allocations = [{"invoice_id": inv.id, "amount_minor": inv.balance_minor} for inv in invoices]
    total = sum(inv.balance_minor for inv in invoices)
    key = _idempotency_key(customer_id, currency, allocations, success_url, cancel_url)
    metadata = {
        "arflow_customer_id": str(customer_id),
        "arflow_invoice_ids": ",".join(str(i) for i in ids),
    }
    params: dict[str, Any] = {
        "mode": "payment",
        "payment_method_types": ["card"],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": f"customer-{customer_id}",
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": currency.lower(),
                    "unit_amount": inv.balance_minor,
                    "product_data": {"name": f"Invoice {inv.number}"},
                },
            }
            for inv in invoices
        ],
    }
    _release(session)  # no transaction held across the call to Stripe
    try:
        checkout = stripe_client(settings).v1.checkout.sessions.create(
            params,  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
    except stripe.StripeError as exc:
        log.warning("Stripe refused or did not answer a checkout: %s", exc)
        raise Unavailable(
            "the card payment service did not answer; try again shortly", code="stripe_error"
        ) from None
    session_id, url = str(checkout.id), str(checkout.url)
    _record_checkout(session, customer_id, session_id, allocations, total, currency)
    return url


def _payable(session: Session, customer_id: int, invoice_id: int) -> Invoice:
    # An id beyond the database's integers (SQLite raises binding it) names no invoice.
    invoice = session.get(Invoice, invoice_id) if 0 < invoice_id <= MAX_ID else None
    if invoice is None or invoice.customer_id != customer_id:
        raise not_found("invoice", invoice_id)
    if invoice.status in CLOSED_STATUSES or invoice.balance_minor <= 0:
        raise unprocessable(
            f"invoice {invoice.number} has nothing left to pay",
            {"invoice_id": invoice_id, "status": invoice.status},
        )
    return invoice


def _idempotency_key(
    customer_id: int,
    currency: str,
    allocations: list[dict[str, Any]],
    success_url: str,
    cancel_url: str,
) -> str:
    """The same checkout asked for twice (same invoices, balances and pages) is one session;
    anything different is another (Stripe refuses a key reused with other parameters)."""
    text = json.dumps([customer_id, currency, allocations, success_url, cancel_url])
    return "arflow-checkout-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def _record_checkout(
    session: Session,
    customer_id: int,
    session_id: str,
    allocations: list[dict[str, Any]],
    total: int,
    currency: str,
) -> None:
    if _checkout_of(session, session_id) is not None:
        return  # the same request again: Stripe answered with the same session
    session.add(
        StripeCheckout(
            session_id=session_id,
            customer_id=customer_id,
            allocations=allocations,
            amount_minor=total,
            currency=currency,
        )
    )
    for share in allocations:
        add_event(
            session,
            int(share["invoice_id"]),
            "checkout_started",
            {"checkout": session_id, "amount_minor": share["amount_minor"], "method": "card"},
            actor=CUSTOMER_ACTOR,
            dedupe_key=f"checkout:{session_id}",
        )
    try:
        session.commit()
    except IntegrityError:  # a concurrent copy of the same request recorded it
        session.rollback()


def _checkout_of(session: Session, session_id: str) -> StripeCheckout | None:
    stmt = select(StripeCheckout).where(StripeCheckout.session_id == session_id)
    return session.exec(stmt).first()


def _release(session: Session) -> None:
    session.commit()


# -- webhook --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What one Stripe event asks of the payments service."""

    status: str
    bodies: list[PaymentWebhook]
    checkout: str | None = None


async def receive_event(
    session: Session,
    client: Client,
    settings: Settings,
    payload: bytes,
    signature: str | None,
) -> StripeAck:
    """A Stripe webhook event, verified with the SDK against ``stripe_webhook_secret``.

    A missing or bad signature is ``BadRequest`` (400) and changes nothing. A completed
    checkout pays each of its invoices; a refund or a dispute reverses what is new, spread
    over the checkout's invoices. Any other event, and one about a checkout we do not know,
    is acknowledged (logged) and changes nothing. ``Unavailable`` (503, Stripe retries) when
    Temporal did not take a payment: it is stored, and the retry delivers it."""
    if not settings.stripe_enabled:
        raise NotFound("card payments are not configured", code="stripe_not_configured")
    try:
        event = stripe.Webhook.construct_event(
            payload,
            signature,
            settings.stripe_webhook_secret,
            tolerance=settings.webhook_tolerance_seconds,
        )
    except (stripe.SignatureVerificationError, ValueError, LookupError, AttributeError):
        # AttributeError: a signed body that is JSON but not an object
        raise BadRequest(
            "the Stripe-Signature header is missing or does not match the body (or the body "
            "is not a Stripe event)",
            code="bad_signature",
        ) from None
    raw = json.loads(payload)
    kind = str(event.type)
    obj = raw.get("data", {}).get("object", {})
    created = raw.get("created")
    paid_at = datetime.fromtimestamp(int(created), UTC) if created else utcnow()
    if kind == COMPLETED:
        plan = await asyncio.to_thread(_plan_completed, session, obj, paid_at)
    elif kind == REFUNDED:
        plan = await asyncio.to_thread(_plan_refund, session, obj, paid_at)
    elif kind == DISPUTED:
        plan = await asyncio.to_thread(_plan_dispute, session, obj, paid_at)
    else:
        return StripeAck(status="ignored", event_type=kind)
    acks, pending = await _apply(session, client, settings, plan.bodies)
    if pending:
        raise Unavailable(
            f"payments {pending} are stored but not applied yet; send the event again",
            code="workflow_unavailable",
        )
    return StripeAck(status=plan.status, event_type=kind, checkout=plan.checkout, payments=acks)


async def _apply(
    session: Session, client: Client, settings: Settings, bodies: list[PaymentWebhook]
) -> tuple[list[PaymentAck], list[str]]:
    """Each body through the payments service; one Temporal did not take does not stop the
    others (it is stored, and the event's retry delivers it)."""
    acks: list[PaymentAck] = []
    pending: list[str] = []
    for body in bodies:
        try:
            acks.append(await payments.receive_webhook(session, client, settings, body))
        except Unavailable as exc:
            log.warning("Stripe payment %s stored, not applied: %s", body.event_id, exc.message)
            pending.append(body.event_id)
    return acks, pending


def _plan_completed(session: Session, obj: dict[str, Any], paid_at: datetime) -> _Plan:
    session_id = str(obj.get("id") or "")
    checkout = _checkout_of(session, session_id)
    if checkout is None:
        log.warning("Stripe checkout %r is not one of ours: acknowledged, ignored", session_id)
        _release(session)
        return _Plan("unknown", [], session_id or None)
    if obj.get("payment_status") != "paid":
        log.info("Stripe checkout %s completed unpaid: waiting", session_id)
        _release(session)
        return _Plan("ignored", [], session_id)
    amount, currency = obj.get("amount_total"), str(obj.get("currency") or "").upper()
    if (amount, currency) != (checkout.amount_minor, checkout.currency):
        return _mismatch(session, checkout, amount, currency)
    intent = obj.get("payment_intent")
    if checkout.status != "completed":
        checkout.status = "completed"
        checkout.payment_intent_id = str(intent) if intent else None
        checkout.completed_at = paid_at
        session.add(checkout)
    _release(session)
    bodies = [
        _body(f"stripe:{session_id}:{share['invoice_id']}", share, checkout, paid_at, "payment")
        for share in checkout.allocations
    ]
    return _Plan("applied", bodies, session_id)


def _mismatch(session: Session, checkout: StripeCheckout, amount: Any, currency: str) -> _Plan:
    """Stripe says another amount was paid than the checkout asked for: nothing is applied,
    each invoice's timeline says so (a specialist sorts it out)."""
    log.warning(
        "Stripe checkout %s paid %s %s, expected %s %s: not applied",
        checkout.session_id,
        amount,
        currency,
        checkout.amount_minor,
        checkout.currency,
    )
    for share in checkout.allocations:
        add_event(
            session,
            int(share["invoice_id"]),
            "card_payment_mismatch",
            {"checkout": checkout.session_id, "paid_minor": amount, "paid_currency": currency},
            actor=STRIPE_ACTOR,
            dedupe_key=f"checkout-mismatch:{checkout.session_id}",
        )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
    return _Plan("mismatch", [], checkout.session_id)


def _plan_refund(session: Session, obj: dict[str, Any], paid_at: datetime) -> _Plan:
    """``charge.refunded`` carries the charge's cumulative ``amount_refunded``: what is new
    is that minus what the checkout's earlier refunds already took back."""
    charge_id = str(obj.get("id") or "")
    refunded = int(obj.get("amount_refunded") or 0)
    return _plan_reversal(
        session,
        obj.get("payment_intent"),
        key=f"refund:{charge_id}:{refunded}",
        kind="refund",
        amount=lambda checkout: refunded - checkout.refunded_minor,
        paid_at=paid_at,
    )


def _plan_dispute(session: Session, obj: dict[str, Any], paid_at: datetime) -> _Plan:
    dispute_id = str(obj.get("id") or "")
    amount = int(obj.get("amount") or 0)
    return _plan_reversal(
        session,
        obj.get("payment_intent"),
        key=f"dispute:{dispute_id}",
        kind="chargeback",
        amount=lambda _: amount,
        paid_at=paid_at,
    )


def _plan_reversal(
    session: Session,
    intent: Any,
    key: str,
    kind: str,
    amount: Any,
    paid_at: datetime,
) -> _Plan:
    """Record the reversal ``key`` once (its spread over the invoices), then hand its shares
    to the payments service. A redelivered event finds the recorded spread and sends the same
    shares again (applied once: same event ids)."""
    checkout = None
    if intent:
        stmt = select(StripeCheckout).where(StripeCheckout.payment_intent_id == str(intent))
        checkout = session.exec(stmt).first()
    if checkout is None:
        log.warning("Stripe %s for payment intent %r: no checkout of ours, ignored", key, intent)
        _release(session)
        return _Plan("unknown", [])
    for _ in range(5):  # another reversal of the same checkout in between: read again
        reversal = _reversal_of(session, key)
        if reversal is None:
            session.refresh(checkout)
            new = int(amount(checkout))
            if new <= 0:
                _release(session)
                return _Plan("duplicate", [], checkout.session_id)
            reversal = _record_reversal(session, checkout, key, kind, new)
            if reversal is None:
                continue
        _release(session)
        bodies = [
            _body(f"stripe:{key}:{share['invoice_id']}", share, checkout, paid_at, kind)
            for share in reversal.allocations
        ]
        return _Plan("applied", bodies, checkout.session_id)
    raise Unavailable(f"Stripe {key} raced other reversals; send it again")


def _reversal_of(session: Session, key: str) -> StripeReversal | None:
    return session.exec(select(StripeReversal).where(StripeReversal.key == key)).first()


def _record_reversal(
    session: Session, checkout: StripeCheckout, key: str, kind: str, amount: int
) -> StripeReversal | None:
    """Spread ``amount`` over the checkout's invoices, last first, none beyond what it was
    paid less what earlier reversals took; store it with the checkout's totals moved on, or
    None when another reversal of this checkout got in first (the caller reads again)."""
    assert checkout.id is not None
    earlier = session.exec(
        select(StripeReversal).where(StripeReversal.checkout_id == checkout.id)
    ).all()
    taken: dict[int, int] = {}
    for rev in earlier:
        for share in rev.allocations:
            taken[int(share["invoice_id"])] = taken.get(int(share["invoice_id"]), 0) + int(
                share["amount_minor"]
            )
    left, shares = amount, []
    for share in reversed(checkout.allocations):
        invoice_id = int(share["invoice_id"])
        room = int(share["amount_minor"]) - taken.get(invoice_id, 0)
        part = min(left, room)
        if part > 0:
            shares.append({"invoice_id": invoice_id, "amount_minor": part})
            left -= part
    if left:
        log.warning("Stripe %s: %s more than the checkout paid, not reversed", key, left)
    spread = amount - left
    moved = session.exec(
        update(StripeCheckout)
        .where(
            col(StripeCheckout.id) == checkout.id,
            col(StripeCheckout.reversed_minor) == checkout.reversed_minor,
        )
        .values(
            reversed_minor=checkout.reversed_minor + spread,
            refunded_minor=checkout.refunded_minor + (amount if kind == "refund" else 0),
        )
    )
    if moved.rowcount != 1:
        session.rollback()
        return None
    reversal = StripeReversal(
        checkout_id=checkout.id, key=key, kind=kind, amount_minor=spread, allocations=shares
    )
    session.add(reversal)
    try:
        session.commit()
    except IntegrityError:  # the same event at the same time: its copy recorded it
        session.rollback()
        return _reversal_of(session, key)
    return reversal


def _body(
    event_id: str, share: dict[str, Any], checkout: StripeCheckout, at: datetime, kind: str
) -> PaymentWebhook:
    return PaymentWebhook(
        event_id=event_id,
        invoice_id=int(share["invoice_id"]),
        amount_minor=int(share["amount_minor"]),
        currency=checkout.currency,
        paid_at=at,
        method="card",
        type=kind,
    )


__all__ = ["StripeAck", "create_checkout", "receive_event", "stripe_client"]
