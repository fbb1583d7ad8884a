"""Customer replies: an email (SendGrid Inbound Parse) or an SMS (Twilio) from a customer lands
on their timeline and on the owner's worklist.

**Who.** The sender is matched to customers by address: an email's ``from`` (``"Name <addr>"``
read with ``email.utils.parseaddr``, compared case-insensitively with ``Customer.email``), an
SMS's ``From`` (in E.164 form, as customers' phones are stored). Several customers may share
an address; an invoice named in the reply then says which one it is about.

**What about.** The reply names an invoice when its subject or text (the first
``MATCH_CHARS`` characters: quoted text below a reply usually carries our reminder) contains
one of those customers' payment references (``models.reference``, check digits and all) or
invoice numbers (as a whole word: ``2026-0042`` does not match ``2026-00421``). A reference
wins over a number, an earlier number over a later one. Otherwise the reply is for the
customer only.

**What is recorded.** A ``customer_replied`` event on the timeline of each matched customer
(one, when an invoice was named) and, when an invoice was named, on the invoice's timeline;
each with the channel, the sender's address, the subject and a plain-text excerpt of at most
``EXCERPT_CHARS`` characters (an HTML-only email is reduced to its text). And one
``customer_replied`` task for the owner (the invoice's collector, else the customer's): on the
named invoice, or, when none was named, on the customer's oldest open invoice (earliest due
date); a customer with no open invoice gets the timeline event only, no task (a task needs
an invoice). Attachments are counted, not stored.

**Once.** Each reply has a key from the provider's message id (the email's ``Message-ID``
header, else a digest of its content; the SMS's ``MessageSid``). The customers' rows are
locked while the key is looked up, so a redelivery, even a concurrent one, finds the reply
already recorded and changes nothing; the invoice event also carries the key as its
``dedupe_key``.

**Unknown senders** are not stored anywhere (there is no customer to store them on): a
WARNING log line with the address masked, and ``arflow_inbound_replies_total{outcome=
"unknown_sender"}``. The provider gets a 2xx all the same, or it would retry for days.

The functions here add to the session; the caller commits.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesParser, Parser
from email.utils import parseaddr
from html.parser import HTMLParser
from typing import Any

import phonenumbers
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from arflow.customers.events import record_customer_event
from arflow.errors import Invalid
from arflow.invoices import tasks
from arflow.invoices.timeline import add_event
from arflow.observability import INBOUND_REPLIES
from models import Customer, CustomerEvent, Invoice, Task
from models.reference import references_in
from models.types import utcnow
from workflows.types import CLOSED_STATUSES

log = logging.getLogger("arflow.replies")

CUSTOMER_REPLIED = "customer_replied"  # the event kind (customer and invoice timelines)
EXCERPT_CHARS = 2000
SUBJECT_CHARS = 300
MATCH_CHARS = 20_000
_KEY_PREFIX = "reply"


@dataclass(frozen=True)
class InboundReply:
    """One message from someone outside, as the provider handed it to us."""

    channel: str  # email, sms
    provider: str  # sendgrid, twilio
    message_id: str  # the provider's id, or a digest of the content when it gave none
    sender: str  # the email address (lower case) or the phone number (E.164 when it parses)
    subject: str | None
    text: str  # the plain-text body
    attachments: int = 0

    @property
    def key(self) -> str:
        """The reply's key on the timelines (an invoice event's ``dedupe_key`` is 120 chars)."""
        digest = hashlib.sha256(self.message_id.encode()).hexdigest()[:40]
        return f"{_KEY_PREFIX}:{self.channel}:{digest}"


@dataclass(frozen=True)
class ReplyOutcome:
    """``invoice`` (an invoice was named), ``customer``, ``duplicate`` or ``unknown_sender``."""

    outcome: str
    customer_ids: tuple[int, ...] = ()
    invoice_id: int | None = None
    task_id: int | None = None


# -- reading what the providers send ---------------------------------------------------------


class _TextOf(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title", "template"})
    _BREAK = frozenset(
        {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "hr"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML body: no tags, scripts or styles; entities decoded; one
    line per paragraph, line break or list item."""
    parser = _TextOf()
    parser.feed(html)
    parser.close()
    return _tidy("".join(parser.parts), blank_lines=False)


def _tidy(text: str, blank_lines: bool = True) -> str:
    """Runs of spaces as one, lines stripped; at most one blank line in a row (none at all
    without ``blank_lines``)."""
    lines = [re.sub(r"[ \t\f\v\u00a0]+", " ", ln).strip() for ln in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (blank_lines and out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of ``text``, cut with an ellipsis when it is longer."""
    text = _tidy(text.replace("\x00", ""))
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _charset(name: Any) -> str:
    try:
        return codecs.lookup(str(name)).name if name else "utf-8"
    except LookupError:
        return "utf-8"


def multipart_fields(body: bytes, content_type: str) -> tuple[dict[str, str], int]:
    """The text fields of a ``multipart/form-data`` body and the number of files in it.

    Each field is decoded with the charset SendGrid's ``charsets`` field names for it (UTF-8
    when it names none or an unknown one; undecodable bytes are replaced, never an error).
    """
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in (
        content_type.lower()
    ):
        raise Invalid("the body must be multipart/form-data with a boundary")
    head = b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode("latin-1", "replace")
    message = BytesParser(policy=policy.default).parsebytes(head + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise Invalid("the multipart body has no parts")
    raw: dict[str, bytes] = {}
    files = 0
    for part in message.iter_parts():
        if part.get_filename() is not None:
            files += 1
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        payload = part.get_payload(decode=True)
        raw[name] = payload if isinstance(payload, bytes) else b""
    try:
        charsets = json.loads(raw.get("charsets", b"{}").decode("utf-8", "replace"))
    except ValueError:
        charsets = {}
    if not isinstance(charsets, dict):
        charsets = {}
    fields = {
        name: value.decode(_charset(charsets.get(name)), "replace") for name, value in raw.items()
    }
    return fields, files


def _attachment_count(fields: Mapping[str, str], files: int) -> int:
    try:
        return max(files, int(fields.get("attachments") or 0))
    except ValueError:
        return files


def email_reply(fields: Mapping[str, str], files: int = 0) -> InboundReply:
    """An Inbound Parse post (its form fields) as a reply; the sender is ``""`` when ``from``
    holds no address."""
    _, address = parseaddr(fields.get("from") or "")
    address = address.strip().lower() if "@" in address else ""
    subject = (fields.get("subject") or "").strip() or None
    text = fields.get("text") or ""
    if not text.strip() and fields.get("html"):
        text = html_to_text(fields["html"])
    headers = Parser(policy=policy.compat32).parsestr(fields.get("headers") or "", True)
    message_id = str(headers.get("Message-ID") or "").strip()
    if not message_id:  # a redelivery carries the same content: its digest is the id
        parts = [fields.get(k) or "" for k in ("from", "to", "subject", "text", "html")]
        message_id = "sha256:" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return InboundReply(
        channel="email",
        provider="sendgrid",
        message_id=message_id[:500],
        sender=address,
        subject=subject[:SUBJECT_CHARS] if subject else None,
        text=text,
        attachments=_attachment_count(fields, files),
    )


def normalise_phone(number: str) -> str:
    """A phone number in E.164 form when it parses as one, else as given (stripped)."""
    number = number.strip()
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def sms_reply(params: Mapping[str, str]) -> InboundReply:
    """A Twilio inbound message as a reply."""
    sid = (params.get("MessageSid") or params.get("SmsSid") or "").strip()
    body = params.get("Body") or ""
    sender = normalise_phone(params.get("From") or "")
    if not sid:
        sid = "sha256:" + hashlib.sha256(f"{sender}\x00{body}".encode()).hexdigest()
    media = params.get("NumMedia") or "0"
    return InboundReply(
        channel="sms",
        provider="twilio",
        message_id=sid[:500],
        sender=sender,
        subject=None,
        text=body,
        attachments=int(media) if media.isdigit() else 0,
    )


def masked(sender: str) -> str:
    """The sender for a log line: an email's domain, a phone's last three digits."""
    if "@" in sender:
        return "***@" + sender.rsplit("@", 1)[1]
    return "***" + sender[-3:] if len(sender) > 3 else "***"


# -- matching --------------------------------------------------------------------------------


def senders(session: Session, reply: InboundReply) -> list[Customer]:
    """The customers whose address is the reply's sender (oldest first)."""
    if not reply.sender:
        return []
    if reply.channel == "email":
        where = func.lower(col(Customer.email)) == reply.sender
    else:
        where = col(Customer.phone) == reply.sender
    return list(session.exec(select(Customer).where(where).order_by(col(Customer.id))).all())


def _number_at(number: str, text: str) -> int | None:
    found = re.search(
        rf"(?<![0-9A-Za-z]){re.escape(number)}(?![0-9A-Za-z])", text, flags=re.IGNORECASE
    )
    return found.start() if found else None


def named_invoice(
    session: Session, customer_ids: Sequence[int], subject: str | None, text: str
) -> Invoice | None:
    """The invoice of these customers that the reply names (see the module doc), or None."""
    haystack = f"{subject or ''}\n{text[:MATCH_CHARS]}"
    for referenced in references_in(haystack):
        invoice = session.get(Invoice, referenced)
        if invoice is not None and invoice.customer_id in customer_ids:
            return invoice
    numbers = session.exec(
        select(Invoice.id, Invoice.number)
        .where(col(Invoice.customer_id).in_(customer_ids))
        .order_by(col(Invoice.id))
    ).all()
    best: tuple[int, int] | None = None
    for row_id, number in numbers:
        at = _number_at(number, haystack) if number else None
        if at is not None and row_id is not None and (best is None or at < best[0]):
            best = (at, row_id)
    return session.get(Invoice, best[1]) if best else None


def oldest_open_invoice(session: Session, customer_ids: Iterable[int]) -> Invoice | None:
    """The open invoice of these customers that fell due first."""
    return session.exec(
        select(Invoice)
        .where(
            col(Invoice.customer_id).in_(list(customer_ids)),
            col(Invoice.status).not_in(CLOSED_STATUSES),
        )
        .order_by(col(Invoice.due_at), col(Invoice.id))
    ).first()


# -- recording -------------------------------------------------------------------------------


def already_recorded(session: Session, customer_ids: Sequence[int], key: str) -> bool:
    stmt = select(CustomerEvent.id).where(
        col(CustomerEvent.customer_id).in_(customer_ids),
        CustomerEvent.kind == CUSTOMER_REPLIED,
        col(CustomerEvent.data)["reply_key"].as_string() == key,
    )
    return session.exec(stmt).first() is not None


def reply_task(
    session: Session,
    invoice: Invoice,
    customer: Customer,
    data: Mapping[str, Any],
    named: bool,
    at: datetime,
) -> Task:
    """The one ``customer_replied`` task of a reply, owned as every new task is
    (``tasks.new_task``: the invoice's collector, else the customer's; None: the team's)."""
    assert invoice.id is not None
    task = tasks.new_task(
        session,
        invoice.id,
        tasks.CUSTOMER_REPLIED,
        {
            "customer_id": customer.id,
            "channel": data["channel"],
            "reply_key": data["reply_key"],
            "invoice_named": named,
        },
        due_at=at,
        created_at=at,
    )
    session.flush()
    return task


def record_reply(session: Session, reply: InboundReply, at: datetime | None = None) -> ReplyOutcome:
    """Record one reply (see the module doc); the caller commits."""
    customers = senders(session, reply)
    if not customers:
        log.warning(
            "reply from an unknown sender",
            extra={
                "channel": reply.channel,
                "provider": reply.provider,
                "sender": masked(reply.sender),
            },
        )
        INBOUND_REPLIES.labels(reply.channel, "unknown_sender").inc()
        return ReplyOutcome("unknown_sender")
    ids = [c.id for c in customers if c.id is not None]
    # Lock the customers' rows (PostgreSQL row locks; SQLite's write lock): a concurrent
    # delivery of the same reply waits here, then finds it recorded.
    session.exec(update(Customer).where(col(Customer.id).in_(ids)).values(id=Customer.id))
    if already_recorded(session, ids, reply.key):
        INBOUND_REPLIES.labels(reply.channel, "duplicate").inc()
        return ReplyOutcome("duplicate", tuple(ids))
    now = at or utcnow()
    invoice = named_invoice(session, ids, reply.subject, reply.text)
    about = [c for c in customers if invoice is None or c.id == invoice.customer_id]
    data: dict[str, Any] = {
        "channel": reply.channel,
        "provider": reply.provider,
        "from": reply.sender,
        "subject": reply.subject,
        "excerpt": excerpt(reply.text),
        "attachments": reply.attachments,
        "message_id": reply.message_id[:200],
        "reply_key": reply.key,
    }
    for customer in about:
        assert customer.id is not None
        record_customer_event(
            session,
            customer.id,
            CUSTOMER_REPLIED,
            data | {"invoice_id": invoice.id if invoice else None},
            actor=reply.provider,
            at=now,
        )
    if invoice is not None:
        assert invoice.id is not None
        add_event(
            session,
            invoice.id,
            CUSTOMER_REPLIED,
            data,
            actor=reply.provider,
            dedupe_key=reply.key,
            at=now,
        )
    target = invoice or oldest_open_invoice(session, [c.id for c in about if c.id is not None])
    task = None
    if target is not None:
        owner = next(c for c in about if c.id == target.customer_id)
        task = reply_task(session, target, owner, data, invoice is not None, now)
    session.flush()
    outcome = "invoice" if invoice is not None else "customer"
    INBOUND_REPLIES.labels(reply.channel, outcome).inc()
    log.info(
        "customer reply recorded",
        extra={
            "channel": reply.channel,
            "customer_ids": [c.id for c in about],
            "invoice_id": invoice.id if invoice else None,
            "task_id": task.id if task else None,
        },
    )
    return ReplyOutcome(
        outcome,
        tuple(c.id for c in about if c.id is not None),
        invoice.id if invoice else None,
        task.id if task else None,
    )
