"""What the email and SMS providers tell us after a send: signatures, delivery, opt-outs.

SendGrid's event webhook (ECDSA-signed) and Twilio's status callback and inbound messages
(HMAC-signed with the auth token) settle outbox rows (``delivered``, ``failed``) and block
channels (``api.contacts``). Every event is idempotent: a row already settled or a block
already there stays as it is, so the providers' redeliveries change nothing.

An event names its outbox row by id (SendGrid's ``outbox_id`` custom arg, Twilio's
``outbox_id`` query parameter). The row must also match the event's channel, invoice and
recipient, so an event from another deployment sharing the provider account (whose row ids
overlap ours) is ignored instead of settling the wrong message.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlmodel import Session, select
from twilio.request_validator import RequestValidator

from arflow.customers import contacts
from arflow.errors import Unauthenticated
from arflow.invoices import tasks
from arflow.messages.providers import TWILIO_UNREACHABLE
from models import Customer, Invoice, OutboxMessage
from models.types import utcnow

log = logging.getLogger("arflow.providers")

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"
#: SendGrid event -> ContactBlock reason
SENDGRID_BLOCKS = {
    "bounce": "bounced",
    "dropped": "dropped",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
#: Twilio's standard opt-out and opt-in keywords (the whole message, any case)
SMS_OPT_OUT = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
SMS_OPT_IN = {"START", "UNSTOP"}
#: an SMS START lifts only blocks that STOP or a failed number made, not a specialist's
SMS_LIFTED_BY_START = {"stop", "failed"}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _unauthorized(message: str) -> Unauthenticated:
    return Unauthenticated(message)


@dataclass
class EventCounts:
    applied: int = 0
    ignored: int = 0


# -- signatures ---------------------------------------------------------------------------


def _key_body(public_key: str) -> str:
    """SendGrid shows the key as base64 DER; accept a full PEM too."""
    lines = [ln.strip() for ln in public_key.strip().splitlines()]
    return "".join(ln for ln in lines if ln and not ln.startswith("-----"))


@lru_cache(maxsize=4)
def _sendgrid_verifier(public_key: str) -> EventWebhook:
    return EventWebhook(_key_body(public_key))


def verify_sendgrid(
    public_key: str,
    payload: bytes,
    signature: str | None,
    timestamp: str | None,
    tolerance_seconds: int,
    now: float | None = None,
    webhook: str = "the SendGrid event webhook",
) -> None:
    """Raise 401 unless ``payload`` carries SendGrid's ECDSA signature over timestamp+body.

    The same scheme signs the event webhook and Inbound Parse (a security policy's key). The
    SDK's helper takes the body as text; an Inbound Parse body with a binary attachment is
    not UTF-8, so it is checked against the same key, loaded by the SDK, as bytes.
    """
    if not public_key:
        raise _unauthorized(f"{webhook} is not configured")
    if not signature or not timestamp:
        raise _unauthorized(f"missing {SENDGRID_SIGNATURE} or {SENDGRID_TIMESTAMP}")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise _unauthorized("bad signature timestamp") from None
    if abs((time.time() if now is None else now) - sent_at) > tolerance_seconds:
        raise _unauthorized("signature timestamp outside the tolerance")
    verifier = _sendgrid_verifier(public_key)  # a malformed key setting is a 500 (logged)
    try:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            valid = _verify_bytes(verifier, payload, signature, timestamp)
        else:
            valid = bool(verifier.verify_signature(text, signature, timestamp))
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise _unauthorized("bad signature")


def _verify_bytes(verifier: EventWebhook, payload: bytes, signature: str, timestamp: str) -> bool:
    """What ``EventWebhook.verify_signature`` does, on a body that is not text."""
    try:
        verifier.public_key.verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode() + payload,
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        return False
    return True


def verify_twilio(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> None:
    """Raise 401 unless ``X-Twilio-Signature`` signs ``url`` and the form ``params``."""
    if not auth_token:
        raise _unauthorized("Twilio is not configured")
    if not signature:
        raise _unauthorized(f"missing {TWILIO_SIGNATURE}")
    if not RequestValidator(auth_token).validate(url, dict(params), signature):
        raise _unauthorized("bad signature")


# -- outbox rows --------------------------------------------------------------------------


def _as_int(value: Any) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def outbox_row(
    session: Session,
    outbox_id: Any,
    channel: str,
    invoice_id: Any = None,
    recipient: str | None = None,
    provider_id: str | None = None,
) -> OutboxMessage | None:
    """The outbox row an event names, or None when it is not ours (see the module doc)."""
    row_id = _as_int(outbox_id)
    row = session.get(OutboxMessage, row_id) if row_id else None
    if row is None or row.channel != channel:
        return None
    if invoice_id is not None and _as_int(invoice_id) != row.invoice_id:
        return None
    if recipient and row.recipient and recipient.strip().lower() != row.recipient.lower():
        return None
    if provider_id and row.provider_id and not provider_id.startswith(row.provider_id):
        return None  # SendGrid's sg_message_id is "<X-Message-Id>.filter..."
    return row


def settle(session: Session, row: OutboxMessage, status: str, detail: str | None) -> bool:
    """Move the row to ``delivered`` or ``failed``; False when that changes nothing.

    ``delivered`` settles a queued, sent or uncertain row; ``failed`` anything not already
    failed or blocked (a bounce can follow a delivery).
    """
    if status == "delivered" and row.status not in ("queued", "sent", "uncertain"):
        return False
    if status == "failed" and row.status in ("failed", "blocked"):
        return False
    row.status = status
    if detail:
        row.detail = detail[:500]
    row.updated_at = utcnow()
    session.add(row)
    assert row.id is not None
    tasks.delivery_settled(session, row.invoice_id, row.id, status)
    return True


def lift_block(session: Session, customer_id: int, channel: str, actor: str) -> bool:
    """Use the channel again (a new address, START; the caller commits): the steps no
    channel could take are no longer a task for anyone. False when there was no block."""
    if not contacts.unblock(session, customer_id, channel):
        return False
    tasks.contact_fixed(session, customer_id, channel, actor)
    return True


def _customer_id(session: Session, row: OutboxMessage) -> int:
    invoice = session.get(Invoice, row.invoice_id)
    assert invoice is not None  # a foreign key
    return invoice.customer_id


# -- SendGrid -----------------------------------------------------------------------------


def apply_sendgrid_events(session: Session, events: list[Any]) -> EventCounts:
    """Apply a batch of SendGrid events (the caller commits)."""
    counts = EventCounts()
    for event in events:
        kind = event.get("event") if isinstance(event, dict) else None
        if kind != "delivered" and kind not in SENDGRID_BLOCKS:
            counts.ignored += 1  # processed, deferred, open, click ...
            continue
        email = str(event.get("email") or "")
        row = outbox_row(
            session,
            event.get("outbox_id"),
            "email",
            invoice_id=event.get("invoice_id"),
            recipient=email or None,
            provider_id=str(event.get("sg_message_id") or "") or None,
        )
        if row is None:
            counts.ignored += 1
            log.info("sendgrid event for no outbox row of ours", extra={"event": kind})
            continue
        counts.applied += 1
        why = str(event.get("reason") or event.get("response") or "")
        if kind == "delivered":
            settle(session, row, "delivered", None)
            continue
        if kind in ("bounce", "dropped"):
            settle(session, row, "failed", f"SendGrid {kind}: {why}".strip(" :"))
            if kind == "bounce" and event.get("type") == "blocked":
                continue  # the receiving server refused us, not the address: no block
        contacts.block(
            session,
            _customer_id(session, row),
            "email",
            SENDGRID_BLOCKS[kind],
            "sendgrid",
            address=email or row.recipient,
            detail=why or None,
        )
    return counts


# -- Twilio -------------------------------------------------------------------------------


def apply_twilio_status(session: Session, outbox_id: Any, params: Mapping[str, str]) -> bool:
    """A Twilio status callback (the caller commits); False when it changed nothing."""
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    if status not in ("delivered", "undelivered", "failed"):
        return False  # queued, sending, sent, read ...
    row = outbox_row(
        session,
        outbox_id,
        "sms",
        recipient=params.get("To"),
        provider_id=params.get("MessageSid") or None,
    )
    if row is None:
        log.info("twilio status for no outbox row of ours", extra={"status": status})
        return False
    if status == "delivered":
        return settle(session, row, "delivered", None)
    code = _as_int(params.get("ErrorCode"))
    changed = settle(session, row, "failed", f"Twilio {status} (error {code or 'none'})")
    if code in TWILIO_UNREACHABLE:
        contacts.block(
            session,
            _customer_id(session, row),
            "sms",
            TWILIO_UNREACHABLE[code],
            "twilio",
            address=row.recipient,
            detail=f"Twilio error {code}",
        )
    return changed


def apply_twilio_inbound(session: Session, params: Mapping[str, str]) -> str | None:
    """An SMS to our number: STOP blocks SMS for every customer with that phone, START lifts
    it. Returns ``"stop"``, ``"start"`` or None (any other text: nothing to do here)."""
    keyword = (params.get("Body") or "").strip().strip(".!").upper()
    phone = (params.get("From") or "").strip()
    if not phone or keyword not in SMS_OPT_OUT | SMS_OPT_IN:
        return None
    customer_ids = session.exec(select(Customer.id).where(Customer.phone == phone)).all()
    for customer_id in customer_ids:
        assert customer_id is not None
        if keyword in SMS_OPT_OUT:
            contacts.block(
                session, customer_id, "sms", "stop", "twilio", address=phone, detail=keyword
            )
        else:
            found = contacts.find(session, customer_id, "sms")
            if found is not None and found.reason in SMS_LIFTED_BY_START:
                lift_block(session, customer_id, "sms", actor="twilio")
    return "stop" if keyword in SMS_OPT_OUT else "start"
