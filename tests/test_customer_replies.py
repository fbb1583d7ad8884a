"""Customer replies (SendGrid Inbound Parse, Twilio inbound SMS) and contact-block requests.

Inbound Parse posts are real multipart bodies built by httpx and signed as SendGrid signs
them (ECDSA P-256 over timestamp + body, with a key pair made here); Twilio posts are signed
with the SDK's ``RequestValidator``. SQLite and PostgreSQL in turn.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from twilio.request_validator import RequestValidator

from api.app import create_app
from arflow.config import Settings
from arflow.messages.replies import EXCERPT_CHARS, html_to_text
from arflow.policies import service as policies
from models import ContactBlock, Customer, CustomerEvent, Invoice, InvoiceEvent, Task
from models.reference import payment_reference

from .conftest import API_KEYS, WEBHOOK_SECRET

PUBLIC_URL = "https://arflow.example.com"
TWILIO_TOKEN = "twilio-test-token"
INBOUND = "/v1/webhooks/sendgrid/inbound"
SMS = "/v1/webhooks/twilio/inbound"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def counted(channel: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "arflow_inbound_replies_total", {"channel": channel, "outcome": outcome}
    )
    return value or 0.0


def parse_post(
    *,
    sender: str = "Jürgen Ébert <AP@Ebert.Example>",
    subject: str = "Re: Reminder",
    text: str | None = "Hello, we paid last week.",
    html: str | None = None,
    message_id: str | None = None,
    files: dict[str, tuple[str, bytes, str]] | None = None,
    key: ec.EllipticCurvePrivateKey = KEY,
    at: float | None = None,
) -> dict[str, Any]:
    """A multipart body as SendGrid's Inbound Parse posts it, and its signed headers."""
    message_id = message_id or f"<{uuid.uuid4().hex}@mail.ebert.example>"
    data = {
        "headers": f"Received: by mx.sendgrid.net\nMessage-ID: {message_id}\nFrom: {sender}\n",
        "dkim": "{@ebert.example : pass}",
        "to": "replies@arflow.example.com",
        "from": sender,
        "subject": subject,
        "sender_ip": "192.0.2.1",
        "envelope": '{"to":["replies@arflow.example.com"],"from":"ap@ebert.example"}',
        "attachments": str(len(files or {})),
        "charsets": '{"to":"UTF-8","html":"UTF-8","subject":"UTF-8","from":"UTF-8","text":"UTF-8"}',
        "SPF": "pass",
    }
    if text is not None:
        data["text"] = text
    if html is not None:
        data["html"] = html
    # Every field a part of the multipart body (httpx sends a data-only form urlencoded; a
    # part without a filename is a plain field, as SendGrid posts it).
    parts: list[tuple[str, Any]] = [(k, (None, v.encode())) for k, v in data.items()]
    parts += list((files or {}).items())
    request = httpx.Request("POST", f"http://internal.test{INBOUND}", files=parts)
    body = request.read()
    timestamp = str(int(time.time() if at is None else at))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content": body,
        "headers": {
            "Content-Type": request.headers["Content-Type"],
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    }


def twilio_signed(form: dict[str, str], token: str = TWILIO_TOKEN) -> dict[str, Any]:
    signature = RequestValidator(token).compute_signature(PUBLIC_URL + SMS, form)
    return {
        "content": urlencode(form),
        "headers": {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    }


def sms(text: str, sender: str = "+4915112345678", sid: str | None = None) -> dict[str, str]:
    return {
        "From": sender,
        "To": "+15005550006",
        "Body": text,
        "MessageSid": sid or f"SM{uuid.uuid4().hex}",
        "NumMedia": "0",
    }


@dataclass
class World:
    http: httpx.AsyncClient
    engine: Engine
    customer_id: int
    other_customer_id: int
    invoice_id: int  # 2026-0042, open, due later
    old_invoice_id: int  # 2026-0007, open, due first
    paid_invoice_id: int  # 2026-0001, paid

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEYS[role]}"}

    def customer_events(self, kind: str = "customer_replied") -> list[CustomerEvent]:
        with Session(self.engine) as s:
            stmt = select(CustomerEvent).where(CustomerEvent.kind == kind)
            return list(s.exec(stmt.order_by(col(CustomerEvent.id))).all())

    def invoice_events(self) -> list[InvoiceEvent]:
        with Session(self.engine) as s:
            stmt = select(InvoiceEvent).where(InvoiceEvent.kind == "customer_replied")
            return list(s.exec(stmt.order_by(col(InvoiceEvent.id))).all())

    def tasks(self) -> list[Task]:
        with Session(self.engine) as s:
            stmt = select(Task).where(Task.kind == "customer_replied")
            return list(s.exec(stmt.order_by(col(Task.id))).all())

    def blocks(self, customer_id: int | None = None) -> list[tuple[str, str, str]]:
        with Session(self.engine) as s:
            stmt = select(ContactBlock).where(
                ContactBlock.customer_id == (customer_id or self.customer_id)
            )
            rows = s.exec(stmt.order_by(col(ContactBlock.channel))).all()
            return [(b.channel, b.reason, b.source) for b in rows]


def world_settings(engine: Engine, tmp_path: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "environment": "test",
        "database_url": str(engine.url),
        "api_keys": ",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        "webhook_secret": WEBHOOK_SECRET,
        "data_dir": str(tmp_path / "data"),
        "public_url": PUBLIC_URL,
        "sendgrid_inbound_public_key": PUBLIC_KEY,
        "twilio_auth_token": TWILIO_TOKEN,
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_from": "+15005550006",
    }
    return Settings(**(fields | overrides))


def invoice(customer_id: int, policy_id: int, number: str, due: date, status: str) -> Invoice:
    return Invoice(
        external_id=f"INV-{uuid.uuid4().hex[:8]}",
        number=number,
        currency="EUR",
        issued_on=date(2026, 1, 1),
        due_date=due,
        customer_id=customer_id,
        policy_id=policy_id,
        amount_minor=10_000,
        balance_minor=0 if status == "paid" else 10_000,
        due_at=datetime(due.year, due.month, due.day, 23, tzinfo=UTC),
        status=status,
        collector="anna" if number == "2026-0042" else None,
        request_hash="x" * 64,
    )


@pytest.fixture
async def world(engine: Engine, tmp_path: Path) -> AsyncIterator[World]:
    app = create_app(world_settings(engine, tmp_path), engine=engine, temporal=None)
    with Session(engine, expire_on_commit=False) as s:
        policy = policies.ensure_default_policy(s)
        people = [
            Customer(
                external_id=f"C-{uuid.uuid4().hex[:8]}",
                name=name,
                email=email,
                phone=phone,
                timezone="Europe/Berlin",
                locale="de",
                assigned_collector="bert" if name == "Jürgen Ébert" else None,
            )
            for name, email, phone in (
                ("Jürgen Ébert", "ap@ebert.example", "+4915112345678"),
                ("Other GmbH", "ap@other.example", "+4915199999999"),
            )
        ]
        s.add_all(people)
        s.flush()
        first, other = people[0].id or 0, people[1].id or 0
        rows = [
            invoice(first, policy.id or 0, "2026-0042", date(2026, 3, 1), "open"),
            invoice(first, policy.id or 0, "2026-0007", date(2026, 2, 1), "open"),
            invoice(first, policy.id or 0, "2026-0001", date(2026, 1, 15), "paid"),
            invoice(other, policy.id or 0, "2026-0099", date(2026, 2, 1), "open"),
        ]
        s.add_all(rows)
        s.commit()
        ids = [r.id or 0 for r in rows]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://internal.test") as http:
        yield World(http, engine, first, other, ids[0], ids[1], ids[2])


# -- email replies ----------------------------------------------------------------------------


async def test_reply_naming_an_invoice_lands_on_both_timelines_and_one_task(world: World) -> None:
    post = parse_post(subject="Re: Reminder for invoice 2026-0042", text="We paid it.\n" * 3)
    before = counted("email", "invoice")
    resp = await world.http.post(INBOUND, **post)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"outcome": "invoice"}
    assert counted("email", "invoice") == before + 1

    (event,) = world.customer_events()
    assert event.customer_id == world.customer_id and event.actor == "sendgrid"
    assert event.data["channel"] == "email"
    assert event.data["from"] == "ap@ebert.example"  # parsed from "Name <addr>", lower case
    assert event.data["subject"] == "Re: Reminder for invoice 2026-0042"
    assert event.data["excerpt"] == "We paid it.\nWe paid it.\nWe paid it."
    assert event.data["invoice_id"] == world.invoice_id
    (on_invoice,) = world.invoice_events()
    assert on_invoice.invoice_id == world.invoice_id
    assert on_invoice.data["excerpt"] == event.data["excerpt"]
    (task,) = world.tasks()
    assert task.invoice_id == world.invoice_id and task.status == "open"
    assert task.assignee == "anna"  # the invoice's collector (tasks.new_task)
    assert task.data["invoice_named"] is True

    # Shown on the customer's timeline and the invoice's, as the API serves them.
    listed = await world.http.get(
        f"/v1/customers/{world.customer_id}/events",
        params={"kind": "customer_replied"},
        headers=world.auth("viewer"),
    )
    assert [e["data"]["invoice_id"] for e in listed.json()] == [world.invoice_id]
    timeline = await world.http.get(
        f"/v1/invoices/{world.invoice_id}/timeline", headers=world.auth("viewer")
    )
    assert "customer_replied" in [e["kind"] for e in timeline.json()]


async def test_payment_reference_in_the_text_names_the_invoice(world: World) -> None:
    reference = payment_reference(world.old_invoice_id)
    text = f"Paid with reference {reference[:4]} {reference[4:]} today."
    resp = await world.http.post(INBOUND, **parse_post(subject="Payment", text=text))
    assert resp.json() == {"outcome": "invoice"}
    assert [e.invoice_id for e in world.invoice_events()] == [world.old_invoice_id]
    # A number that only starts like one of theirs names nothing.
    resp = await world.http.post(INBOUND, **parse_post(subject="about 2026-00421", text="hi"))
    assert resp.json() == {"outcome": "customer"}


async def test_redelivery_is_recorded_once(world: World) -> None:
    post = parse_post(subject="Invoice 2026-0042", message_id="<same@mail.ebert.example>")
    first = await world.http.post(INBOUND, **post)
    before = counted("email", "duplicate")
    again = await world.http.post(
        INBOUND, **parse_post(subject="Invoice 2026-0042", message_id="<same@mail.ebert.example>")
    )
    assert first.json() == {"outcome": "invoice"}
    assert again.status_code == 200 and again.json() == {"outcome": "duplicate"}
    assert counted("email", "duplicate") == before + 1
    assert len(world.customer_events()) == 1
    assert len(world.invoice_events()) == 1
    assert len(world.tasks()) == 1


async def test_reply_without_an_invoice_goes_to_the_oldest_open_one(world: World) -> None:
    resp = await world.http.post(INBOUND, **parse_post(subject="Question", text="Who are you?"))
    assert resp.json() == {"outcome": "customer"}
    (event,) = world.customer_events()
    assert event.data["invoice_id"] is None
    assert world.invoice_events() == []  # no invoice named: the customer's timeline only
    (task,) = world.tasks()
    assert task.invoice_id == world.old_invoice_id  # open and due first (the paid one is not)
    assert task.assignee == "bert" and task.data["invoice_named"] is False


async def test_customer_without_open_invoices_gets_the_event_only(world: World) -> None:
    with Session(world.engine) as s:
        for invoice_id in (world.invoice_id, world.old_invoice_id):
            row = s.get(Invoice, invoice_id)
            assert row is not None
            row.status = "paid"
            s.add(row)
        s.commit()
    resp = await world.http.post(INBOUND, **parse_post(subject="Thanks", text="All settled?"))
    assert resp.json() == {"outcome": "customer"}
    assert len(world.customer_events()) == 1
    assert world.tasks() == []


async def test_unknown_sender_is_answered_200_counted_and_stores_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    before = counted("email", "unknown_sender")
    post = parse_post(sender="Stranger <someone@elsewhere.example>", subject="2026-0042")
    with caplog.at_level("WARNING", logger="arflow.replies"):
        resp = await world.http.post(INBOUND, **post)
    assert resp.status_code == 200 and resp.json() == {"outcome": "unknown_sender"}
    assert counted("email", "unknown_sender") == before + 1
    (line,) = [r for r in caplog.records if r.name == "arflow.replies"]
    assert line.levelname == "WARNING" and line.__dict__["sender"] == "***@elsewhere.example"
    assert world.customer_events() == [] and world.invoice_events() == [] and world.tasks() == []


async def test_bad_signatures_stale_timestamps_and_unconfigured(
    world: World, engine: Engine, tmp_path: Path
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    good = parse_post()
    tampered = dict(good, content=good["content"].replace(b"we paid", b"we never paid"))
    before = counted("email", "rejected")
    cases = [
        parse_post(key=other),
        parse_post(at=time.time() - 3600),  # replayed an hour later
        tampered,
        dict(good, headers={"Content-Type": good["headers"]["Content-Type"]}),  # unsigned
    ]
    for case in cases:
        resp = await world.http.post(INBOUND, **case)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["code"] == "unauthorized"
    assert counted("email", "rejected") == before + len(cases)
    assert world.customer_events() == []

    # Without the setting: 401, as the event webhook answers when it is not configured.
    app = create_app(
        world_settings(engine, tmp_path, sendgrid_inbound_public_key=""),
        engine=engine,
        temporal=None,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://internal.test"
    ) as http:
        resp = await http.post(INBOUND, **parse_post())
    assert resp.status_code == 401
    assert "not configured" in resp.json()["error"]["message"]
    assert world.customer_events() == []


async def test_not_multipart_is_422(world: World) -> None:
    body = b'{"from": "ap@ebert.example"}'
    timestamp = str(int(time.time()))
    signature = KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    resp = await world.http.post(
        INBOUND,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )
    assert resp.status_code == 422 and "multipart" in resp.json()["error"]["message"]


async def test_oversized_body_is_413_and_attachments_are_counted(world: World) -> None:
    big = parse_post(files={"attachment1": ("scan.pdf", b"\x00" * (5 * 1024 * 1024), "x/y")})
    resp = await world.http.post(INBOUND, **big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"
    assert world.customer_events() == []

    # Larger than the default limit (1 MiB), within this route's, and not UTF-8: verified.
    pdf = b"%PDF-1.4\n\xff\xfe\x00binary" * 70_000
    resp = await world.http.post(
        INBOUND, **parse_post(files={"attachment1": ("remittance.pdf", pdf, "application/pdf")})
    )
    assert resp.status_code == 200, resp.text
    (event,) = world.customer_events()
    assert event.data["attachments"] == 1


async def test_html_only_email_is_excerpted_as_text(world: World) -> None:
    html = (
        "<html><head><style>p {color: red}</style><title>x</title></head><body>"
        "<p>Dear team,</p><p>we will pay invoice <b>2026-0042</b> on Friday &amp; "
        "not before.</p><script>alert(1)</script><div>Regards<br>J&uuml;rgen</div>"
        + "<p>"
        + "long " * 1000
        + "</p></body></html>"
    )
    resp = await world.http.post(INBOUND, **parse_post(text=None, html=html, subject="Re"))
    assert resp.json() == {"outcome": "invoice"}
    (event,) = world.customer_events()
    excerpt = event.data["excerpt"]
    assert excerpt.startswith(
        "Dear team,\nwe will pay invoice 2026-0042 on Friday & not before.\nRegards\nJürgen\nlong"
    )
    assert "<" not in excerpt and "alert" not in excerpt and "color" not in excerpt
    assert len(excerpt) == EXCERPT_CHARS and excerpt.endswith("…")


def test_html_to_text() -> None:
    assert html_to_text("<ul><li>a</li><li>b &lt;c&gt;</li></ul>") == "a\nb <c>"


# -- SMS replies ------------------------------------------------------------------------------


async def test_sms_reply_and_stop_still_works(world: World) -> None:
    resp = await world.http.post(SMS, **twilio_signed(sms("Paid 2026-0042 yesterday", sid="SM1")))
    assert resp.status_code == 200, resp.text
    assert resp.text.endswith("<Response></Response>")
    (event,) = world.customer_events()
    assert event.data["channel"] == "sms" and event.data["from"] == "+4915112345678"
    assert event.data["subject"] is None and event.actor == "twilio"
    assert [e.invoice_id for e in world.invoice_events()] == [world.invoice_id]
    assert len(world.tasks()) == 1
    # Twilio retries the same MessageSid: recorded once.
    await world.http.post(SMS, **twilio_signed(sms("Paid 2026-0042 yesterday", sid="SM1")))
    assert len(world.customer_events()) == 1 and len(world.tasks()) == 1

    # STOP blocks SMS and is no reply; a stranger's message is counted, nothing stored.
    resp = await world.http.post(SMS, **twilio_signed(sms("STOP")))
    assert resp.status_code == 200
    assert world.blocks() == [("sms", "stop", "twilio")]
    assert len(world.customer_events()) == 1
    before = counted("sms", "unknown_sender")
    resp = await world.http.post(SMS, **twilio_signed(sms("who is this", "+19999999999")))
    assert resp.status_code == 200
    assert counted("sms", "unknown_sender") == before + 1
    assert len(world.customer_events()) == 1
    # A forged one is refused before anything is read.
    resp = await world.http.post(SMS, **twilio_signed(sms("hi"), token="wrong"))
    assert resp.status_code == 401
    assert len(world.customer_events()) == 1


# -- contact-block requests -------------------------------------------------------------------


async def test_opt_out_request(world: World) -> None:
    path = f"/v1/customers/{world.customer_id}/contact-blocks"
    specialist = world.auth("specialist")
    bad = [
        {"channel": "fax", "reason": "opt_out"},
        {"channel": "sms", "reason": "because"},
        {"reason": "opt_out"},  # which channel?
        {"channel": "sms", "reason": "opt_out", "note": "x" * 501},
        {"channel": "sms", "reason": "opt_out", "extra": 1},
    ]
    for body in bad:
        resp = await world.http.post(path, json=body, headers=specialist)
        assert resp.status_code == 422, body
        assert resp.json()["error"]["code"] == "invalid"
    body = {"channel": "sms", "reason": "opt_out", "note": "said so on the phone"}
    viewer = await world.http.post(path, json=body, headers=world.auth("viewer"))
    assert viewer.status_code == 403
    missing = await world.http.post(
        "/v1/customers/999999/contact-blocks", json=body, headers=specialist
    )
    assert missing.status_code == 404
    assert world.blocks() == []

    resp = await world.http.post(path, json=body, headers=specialist)
    assert resp.status_code == 201, resp.text
    assert [(b["channel"], b["reason"], b["address"]) for b in resp.json()] == [
        ("sms", "opt_out", "+4915112345678")
    ]
    again = await world.http.post(path, json=body, headers=specialist)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert world.blocks() == [("sms", "opt_out", "specialist")]
    (event,) = world.customer_events("contact_blocked")
    assert event.actor.startswith("specialist") and event.data["channels"] == ["sms"]
    assert event.data["note"] == "said so on the phone"


async def test_cease_contact_blocks_every_channel(world: World) -> None:
    with Session(world.engine) as s:
        s.add(
            ContactBlock(
                customer_id=world.customer_id, channel="email", reason="bounced", source="sendgrid"
            )
        )
        s.commit()
    path = f"/v1/customers/{world.customer_id}/contact-blocks"
    body = {"reason": "cease_contact", "note": "letter of 2026-03-02"}
    resp = await world.http.post(path, json=body, headers=world.auth("specialist"))
    assert resp.status_code == 201, resp.text
    assert sorted(b["channel"] for b in resp.json()) == ["call", "email", "letter", "sms"]
    assert world.blocks() == [
        ("call", "cease_contact", "specialist"),
        ("email", "cease_contact", "specialist"),  # the bounce's block now says why it stays
        ("letter", "cease_contact", "specialist"),
        ("sms", "cease_contact", "specialist"),
    ]
    assert world.blocks(world.other_customer_id) == []
    (event,) = world.customer_events("contact_blocked")
    assert event.data["replaced"] == {"email": "bounced"}
    again = await world.http.post(
        path, json=body | {"channel": "sms"}, headers=world.auth("specialist")
    )
    assert again.status_code == 409
    # START does not lift what the customer asked for.
    await world.http.post(SMS, **twilio_signed(sms("START")))
    assert ("sms", "cease_contact", "specialist") in world.blocks()
