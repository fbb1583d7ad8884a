"""Email and SMS providers, documents and provider webhooks, without the internet.

The real SendGrid and Twilio SDKs talk to a local fake HTTP server that records each request
and answers as told (accepted, 400, 429, 500, too late, no answer). Webhooks are signed as the
providers sign them: SendGrid with an ECDSA P-256 key pair made here, Twilio with the auth
token (``RequestValidator.compute_signature``).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError
from pypdf import PdfReader
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from twilio.request_validator import RequestValidator

from api.app import create_app
from arflow.config import Settings
from arflow.messages.channels import (
    AmbiguousDeliveryError,
    Attachment,
    ChannelRouter,
    DeliveryError,
    OutboundMessage,
    OutboxOnlyChannel,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from arflow.messages.documents import Seller, invoice_copy_pdf, letter_pdf, statement_pdf
from arflow.messages.providers import SendGridEmailChannel, TwilioSmsChannel, channel_for
from arflow.messages.render import money
from arflow.policies import service as policies
from models import ContactBlock, Customer, Invoice, OutboxMessage
from models.reference import payment_reference

from .conftest import API_KEYS, WEBHOOK_SECRET
from .faults.fakes import Answer, FakeProvider

PUBLIC_URL = "https://arflow.example.com"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-test-token"
PAY_URL = f"{PUBLIC_URL}/pay/RF18AR42"
UNSUBSCRIBE_URL = f"{PUBLIC_URL}/unsubscribe/abc"


def closed_port_url() -> str:
    """A URL nothing listens on: the connection is refused before anything is sent."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def message(channel: str = "email", **overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "outbox_id": 7,
        "invoice_id": 42,
        "step_key": "first_late_day",
        "channel": channel,
        "recipient": "ap@müller.example" if channel == "email" else "+4915112345678",
        "subject": "Reminder: invoice 2026-0042",
        "body": f"Dear Jürgen,\n1.234,56 € is open.\nPay online: {PAY_URL}",
        "html": f'<p>Dear Jürgen,</p><p><a href="{PAY_URL}">Pay</a></p>',
        "pay_url": PAY_URL,
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "customer_id": 3,
    }
    return OutboundMessage(**(fields | overrides))


# -- documents ------------------------------------------------------------------------------

SELLER = Seller(
    name="Acme Forderungen GmbH",
    address="Musterweg 2\n80331 München",
    iban="DE89370400440532013000",
)


def sample_customer(locale: str = "de") -> Customer:
    return Customer(
        id=3,
        external_id="C-3",
        name="Jürgen Ébert & Söhne",
        email="ap@example.com",
        timezone="Europe/Berlin",
        locale=locale,
        address="Hauptstraße 1\n10115 Berlin",
    )


def sample_invoice(**overrides: Any) -> Invoice:
    fields: dict[str, Any] = {
        "id": 42,
        "external_id": "INV-42",
        "number": "2026-0042",
        "currency": "EUR",
        "issued_on": date(2026, 1, 5),
        "due_date": date(2026, 2, 4),
        "customer_id": 3,
        "policy_id": 1,
        "amount_minor": 123_456,
        "balance_minor": 23_456,
        "due_at": datetime(2026, 2, 4, 23, tzinfo=UTC),
        "request_hash": "x" * 64,
        "lines": [
            {
                "description": "Beratung Café Zürich",
                "quantity": "2.5",
                "unit_price_minor": 40_000,
                "amount_minor": 100_000,
            },
            {
                "description": "Reisekosten",
                "quantity": "1",
                "unit_price_minor": 23_456,
                "amount_minor": 23_456,
            },
        ],
    }
    return Invoice(**(fields | overrides))


def pdf_text(pdf: bytes) -> str:
    assert pdf.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return " ".join(text.replace("\xa0", " ").replace("\u202f", " ").split())


def plain(text: str) -> str:
    return " ".join(text.replace("\xa0", " ").replace("\u202f", " ").split())


def test_invoice_copy_pdf_has_lines_totals_and_payment_instructions() -> None:
    pdf = invoice_copy_pdf(sample_invoice(), sample_customer(), SELLER, PAY_URL)
    text = pdf_text(pdf)
    assert "Jürgen Ébert & Söhne" in text  # embedded Unicode font, extractable
    assert "Hauptstraße 1" in text and "Acme Forderungen GmbH" in text
    assert "Rechnung 2026-0042" in text
    assert "5. Januar 2026" in text and "4. Februar 2026" in text  # localized dates
    assert "Beratung Café Zürich" in text and "Reisekosten" in text
    assert "2,5" in text  # quantity in the locale's notation
    for minor in (40_000, 100_000, 123_456, 23_456):
        assert plain(money(minor, "EUR", "de")) in text
    assert plain(money(123_456 - 23_456, "EUR", "de")) in text  # paid
    reference = payment_reference(42)
    assert f"{reference[:4]} {reference[4:]}" in text  # printed in groups of four
    assert "DE89 3704 0044 0532 0130 00" in text
    assert PAY_URL in text


def test_invoice_copy_without_lines_and_in_english() -> None:
    pdf = invoice_copy_pdf(
        sample_invoice(lines=[], currency="USD", amount_minor=5_000, balance_minor=5_000),
        sample_customer(locale="en"),
        Seller(name="Acme Inc."),
        PAY_URL,
    )
    text = pdf_text(pdf)
    assert "Invoice 2026-0042" in text and "Balance due" in text
    assert "$50.00" in text
    assert "Please quote the reference" in text  # no IBAN configured


def test_letter_pdf() -> None:
    pdf = letter_pdf(
        SELLER,
        "Jürgen Ébert & Söhne",
        "Hauptstraße 1\n10115 Berlin",
        "Letzte Mahnung: Rechnung 2026-0042",
        ["Sehr geehrte Damen und Herren,", "bitte überweisen Sie 234,56 € bis zum 1. März."],
        date(2026, 2, 20),
        locale="de",
    )
    text = pdf_text(pdf)
    assert "Jürgen Ébert & Söhne" in text and "10115 Berlin" in text
    assert "20. Februar 2026" in text
    assert "Letzte Mahnung: Rechnung 2026-0042" in text
    assert "bitte überweisen Sie 234,56 € bis zum 1. März." in text


def test_statement_pdf_ages_open_items() -> None:
    as_of = date(2026, 4, 1)
    invoices = [
        sample_invoice(id=1, number="A-1", due_date=date(2026, 4, 10), balance_minor=10_000),
        sample_invoice(id=2, number="A-2", due_date=date(2026, 3, 22), balance_minor=20_000),
        sample_invoice(id=3, number="A-3", due_date=date(2025, 12, 1), balance_minor=30_000),
        sample_invoice(id=4, number="A-4", due_date=date(2026, 1, 1), balance_minor=0),
    ]
    text = pdf_text(statement_pdf(SELLER, sample_customer(locale="en"), invoices, as_of))
    assert "Statement of account" in text and "As of April 1, 2026" in text
    assert "Jürgen Ébert & Söhne" in text
    assert "A-1" in text and "A-2" in text and "A-3" in text
    assert "A-4" not in text  # paid: not an open item
    assert "A-2 January 5, 2026 March 22, 2026 10 €200.00" in text  # 10 days overdue
    assert "A-3 January 5, 2026 December 1, 2025 121 €300.00" in text
    assert "Not yet due €100.00" in text
    assert "1-30 days overdue €200.00" in text
    assert "31-60 days overdue €0.00" in text
    assert "Over 90 days overdue €300.00" in text
    assert "Total €600.00" in text


# -- SendGrid -------------------------------------------------------------------------------


def sendgrid(base_url: str, timeout: float = 2.0) -> SendGridEmailChannel:
    return SendGridEmailChannel(
        api_key="SG.test-key",
        from_email="Acme AR <ar@acme.example>",
        base_url=base_url,
        reply_to="collections@acme.example",
        timeout=timeout,
    )


def test_sendgrid_request_as_the_sdk_sends_it(fake: FakeProvider) -> None:
    fake.answer(Answer(202, headers={"X-Message-Id": "sg-msg-1"}))
    pdf = invoice_copy_pdf(sample_invoice(), sample_customer(), SELLER, PAY_URL)
    result = sendgrid(fake.url).deliver(
        message(attachments=(Attachment("invoice-2026-0042.pdf", pdf, "application/pdf"),))
    )
    assert result.provider_id == "sg-msg-1"
    [req] = fake.requests
    assert req.path == "/v3/mail/send"
    assert req.headers["Authorization"] == "Bearer SG.test-key"
    body = req.json()
    assert body["personalizations"][0]["to"] == [{"email": "ap@müller.example"}]
    assert body["from"] == {"email": "ar@acme.example", "name": "Acme AR"}
    assert body["reply_to"] == {"email": "collections@acme.example"}
    assert body["subject"] == "Reminder: invoice 2026-0042"
    content = {c["type"]: c["value"] for c in body["content"]}
    assert PAY_URL in content["text/plain"] and "Jürgen" in content["text/plain"]
    assert PAY_URL in content["text/html"]
    [att] = body["attachments"]
    assert att["filename"] == "invoice-2026-0042.pdf"
    assert att["type"] == "application/pdf" and att["disposition"] == "attachment"
    attached = base64.b64decode(att["content"])
    assert attached == pdf and attached.startswith(b"%PDF")
    assert body["headers"] == {
        "List-Unsubscribe": f"<{UNSUBSCRIBE_URL}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert body["custom_args"] == {"outbox_id": "7", "invoice_id": "42"}


def test_sendgrid_from_the_collector_in_person(fake: FakeProvider) -> None:
    """Key accounts' emails show their collector as the sender, and replies go to them."""
    fake.answer(Answer(202, headers={"X-Message-Id": "sg-msg-2"}))
    sendgrid(fake.url).deliver(
        message(sender_name="Jana Weber", reply_to="jana.weber@acme.example")
    )
    body = fake.requests[0].json()
    assert body["from"] == {"email": "ar@acme.example", "name": "Jana Weber"}
    assert body["reply_to"] == {"email": "jana.weber@acme.example"}


def test_sendgrid_text_only_without_unsubscribe(fake: FakeProvider) -> None:
    fake.answer(Answer(202))
    sendgrid(fake.url).deliver(message(html=None, unsubscribe_url=None))
    body = fake.requests[0].json()
    assert [c["type"] for c in body["content"]] == ["text/plain"]
    assert "headers" not in body and "attachments" not in body


@pytest.mark.parametrize(
    ("answer", "error", "status"),
    [
        (
            Answer(400, b'{"errors":[{"message":"Does not contain a valid address."}]}'),
            PermanentDeliveryError,
            400,
        ),
        (Answer(403, b'{"errors":[{"message":"forbidden"}]}'), PermanentDeliveryError, 403),
        (Answer(429, headers={"Retry-After": "7"}), TransientDeliveryError, 429),
        (Answer(500, b"oops"), TransientDeliveryError, 500),
        (Answer(503), TransientDeliveryError, 503),
        (Answer(202, delay=1.5), AmbiguousDeliveryError, None),
        (Answer(hang_up=True), AmbiguousDeliveryError, None),
    ],
    ids=["400", "403", "429", "500", "503", "too-late", "hang-up"],
)
def test_sendgrid_errors_map_to_the_delivery_rule(
    fake: FakeProvider, answer: Answer, error: type[DeliveryError], status: int | None
) -> None:
    fake.answer(answer)
    with pytest.raises(error) as caught:
        sendgrid(fake.url, timeout=0.5).deliver(message())
    assert len(fake.requests) == 1  # one request, no retry inside the SDK
    assert caught.value.status == status
    assert caught.value.non_retryable is (error is not TransientDeliveryError)
    if answer.status == 429:
        assert caught.value.next_retry_delay == timedelta(seconds=7)
    if answer.status == 400:
        assert "valid address" in caught.value.reason


def test_sendgrid_unreachable_is_transient() -> None:
    with pytest.raises(TransientDeliveryError):
        sendgrid(closed_port_url(), timeout=0.5).deliver(message())


def test_no_address_is_permanent_without_a_request(fake: FakeProvider) -> None:
    with pytest.raises(PermanentDeliveryError):
        sendgrid(fake.url).deliver(message(recipient=None))
    with pytest.raises(PermanentDeliveryError, match="not an email address"):
        sendgrid(fake.url).deliver(message(recipient="+4915112345678"))
    with pytest.raises(PermanentDeliveryError):
        twilio(fake.url).deliver(message("sms", recipient=None))
    assert fake.requests == []
    with pytest.raises(ValueError, match="not an email address"):
        SendGridEmailChannel(api_key="SG.x", from_email="Acme AR", base_url=fake.url)


# -- Twilio ---------------------------------------------------------------------------------


def twilio(base_url: str, timeout: float = 2.0, from_: str = "+15005550006") -> TwilioSmsChannel:
    return TwilioSmsChannel(
        account_sid=TWILIO_SID,
        auth_token=TWILIO_TOKEN,
        from_=from_,
        public_url=PUBLIC_URL + "/",
        base_url=base_url,
        timeout=timeout,
    )


def twilio_created(sid: str = "SM" + "1" * 32) -> Answer:
    body = {"sid": sid, "status": "queued", "account_sid": TWILIO_SID, "to": "+4915112345678"}
    return Answer(201, json.dumps(body).encode(), {"Content-Type": "application/json"})


def twilio_error(status: int, code: int, text: str) -> Answer:
    body = {"code": code, "message": text, "status": status, "more_info": ""}
    return Answer(status, json.dumps(body).encode(), {"Content-Type": "application/json"})


def test_twilio_request_as_the_sdk_sends_it(fake: FakeProvider) -> None:
    fake.answer(twilio_created())
    sms = message("sms", body="Invoice 2026-0042: 234,56 € open.")
    result = twilio(fake.url).deliver(sms)
    assert result.provider_id == "SM" + "1" * 32
    [req] = fake.requests
    assert req.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    user, _, password = base64.b64decode(req.headers["Authorization"].split()[1]).partition(b":")
    assert (user.decode(), password.decode()) == (TWILIO_SID, TWILIO_TOKEN)
    form = req.form()
    assert form["To"] == "+4915112345678" and form["From"] == "+15005550006"
    assert form["Body"] == f"Invoice 2026-0042: 234,56 € open.\n{PAY_URL}\nReply STOP to opt out"
    assert form["StatusCallback"] == f"{PUBLIC_URL}/v1/webhooks/twilio/status?outbox_id=7"


def test_twilio_keeps_the_callers_link_and_opt_out_and_uses_a_messaging_service(
    fake: FakeProvider,
) -> None:
    fake.answer(twilio_created())
    text = f"Pay {PAY_URL} - reply STOP to opt out"
    twilio(fake.url, from_="MG" + "2" * 32).deliver(message("sms", body=text))
    form = fake.requests[0].form()
    assert form["Body"] == text
    assert form["MessagingServiceSid"] == "MG" + "2" * 32 and "From" not in form


@pytest.mark.parametrize(
    ("answer", "error", "block"),
    [
        (twilio_error(400, 21211, "Invalid 'To' Phone Number"), PermanentDeliveryError, "failed"),
        (twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"), None, "stop"),
        (twilio_error(401, 20003, "Authenticate"), PermanentDeliveryError, None),
        (twilio_error(429, 20429, "Too Many Requests"), TransientDeliveryError, None),
        (twilio_error(500, 20500, "Internal Server Error"), TransientDeliveryError, None),
        (Answer(201, b"{}", delay=1.5), AmbiguousDeliveryError, None),
        (Answer(hang_up=True), AmbiguousDeliveryError, None),
    ],
    ids=["21211", "21610", "401", "429", "500", "too-late", "hang-up"],
)
def test_twilio_errors_map_to_the_delivery_rule(
    fake: FakeProvider, answer: Answer, error: type[DeliveryError] | None, block: str | None
) -> None:
    fake.answer(answer)
    with pytest.raises(error or PermanentDeliveryError) as caught:
        twilio(fake.url, timeout=0.5).deliver(message("sms"))
    assert len(fake.requests) == 1
    if isinstance(caught.value, PermanentDeliveryError):
        assert caught.value.block_reason == block
        assert caught.value.code is not None


def test_twilio_too_many_requests_carries_retry_after(fake: FakeProvider) -> None:
    """Twilio's exception drops the answer's headers; the retry still waits for Retry-After."""
    answer = twilio_error(429, 20429, "Too Many Requests")
    answer.headers["Retry-After"] = "42"
    fake.answer(answer)
    with pytest.raises(TransientDeliveryError) as caught:
        twilio(fake.url).deliver(message("sms"))
    assert caught.value.next_retry_delay == timedelta(seconds=42)
    fake.answer(twilio_error(503, 20503, "Service Unavailable"))  # no header: the backoff
    with pytest.raises(TransientDeliveryError) as caught:
        twilio(fake.url).deliver(message("sms"))
    assert caught.value.next_retry_delay is None


def test_twilio_unreachable_is_transient() -> None:
    with pytest.raises(TransientDeliveryError):
        twilio(closed_port_url(), timeout=0.5).deliver(message("sms"))


# -- routing and settings -------------------------------------------------------------------


def test_channel_for_routes_only_configured_providers(fake: FakeProvider) -> None:
    nothing = channel_for(Settings(environment="test"))
    assert not nothing.external
    assert not any(nothing.is_external(c) for c in ("email", "sms", "letter", "call"))
    result = nothing.deliver(message("letter"))
    assert result.provider_id == "outbox-7"

    router = channel_for(
        Settings(
            environment="test",
            sendgrid_api_key="SG.test-key",
            sendgrid_base_url=fake.url,
            email_from="ar@acme.example",
        )
    )
    assert router.external
    assert router.is_external("email") and not router.is_external("sms")
    assert isinstance(router.channel("email"), SendGridEmailChannel)
    fake.answer(Answer(202, headers={"X-Message-Id": "sg-2"}))
    assert router.deliver(message("email")).provider_id == "sg-2"
    assert router.deliver(message("sms")).provider_id == "outbox-7"  # no Twilio configured
    assert len(fake.requests) == 1

    both = channel_for(
        Settings(
            environment="test",
            twilio_account_sid=TWILIO_SID,
            twilio_auth_token=TWILIO_TOKEN,
            twilio_from="+15005550006",
            twilio_base_url=fake.url,
        )
    )
    assert both.is_external("sms") and not both.is_external("email")


def test_half_configured_providers_are_refused() -> None:
    with pytest.raises(ValidationError, match="EMAIL_FROM"):
        Settings(environment="test", sendgrid_api_key="SG.x")
    with pytest.raises(ValidationError, match="TWILIO_AUTH_TOKEN"):
        Settings(environment="test", twilio_account_sid=TWILIO_SID)
    with pytest.raises(ValidationError, match="TWILIO_FROM"):
        Settings(environment="test", twilio_account_sid=TWILIO_SID, twilio_auth_token="t")


def test_old_style_messages_still_work() -> None:
    """The fields the core passes today are enough (the new ones are optional)."""
    msg = OutboundMessage(
        outbox_id=1,
        invoice_id=2,
        step_key="s",
        channel="email",
        recipient=None,
        subject="x",
        body="y",
    )
    assert OutboxOnlyChannel().deliver(msg).provider_id == "outbox-1"
    assert ChannelRouter({}).deliver(msg).provider_id == "outbox-1"


# -- webhooks (SQLite and PostgreSQL) -------------------------------------------------------

SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC_KEY = base64.b64encode(
    SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def sendgrid_signed(
    payload: bytes, key: ec.EllipticCurvePrivateKey = SIGNING_KEY, at: float | None = None
) -> dict[str, str]:
    """Headers as SendGrid signs: ECDSA P-256 SHA-256 over timestamp + body, base64 DER."""
    timestamp = str(int(time.time() if at is None else at))
    signature = key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def twilio_signed(path: str, form: dict[str, str], token: str = TWILIO_TOKEN) -> dict[str, Any]:
    signature = RequestValidator(token).compute_signature(PUBLIC_URL + path, form)
    return {
        "content": urlencode(form),
        "headers": {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    }


@dataclass
class World:
    http: httpx.AsyncClient
    engine: Engine
    customer_id: int
    other_customer_id: int
    invoice_id: int
    email_rows: list[int]
    sms_row: int

    def row(self, row_id: int) -> OutboxMessage:
        with Session(self.engine) as s:
            row = s.get(OutboxMessage, row_id)
            assert row is not None
            return row

    def blocks(self) -> list[tuple[int, str, str, str]]:
        with Session(self.engine) as s:
            rows = s.exec(select(ContactBlock).order_by(ContactBlock.customer_id)).all()  # type: ignore[arg-type]
            return [(b.customer_id, b.channel, b.reason, b.source) for b in rows]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEYS[role]}"}


@pytest.fixture
async def world(engine: Engine, tmp_path: Path) -> AsyncIterator[World]:
    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
        public_url=PUBLIC_URL,
        sendgrid_webhook_public_key=SENDGRID_PUBLIC_KEY,
        twilio_auth_token=TWILIO_TOKEN,
        twilio_account_sid=TWILIO_SID,
        twilio_from="+15005550006",
    )
    app = create_app(settings, engine=engine, temporal=None)
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
            )
            for name, email, phone in (
                ("Jürgen Ébert", "ap@ebert.example", "+4915112345678"),
                ("Other GmbH", "ap@other.example", "+4915199999999"),
            )
        ]
        s.add_all(people)
        s.flush()
        invoice = Invoice(
            external_id=f"INV-{uuid.uuid4().hex[:8]}",
            number="2026-0042",
            currency="EUR",
            issued_on=date(2026, 1, 5),
            due_date=date(2026, 2, 4),
            customer_id=people[0].id or 0,
            policy_id=policy.id or 0,
            amount_minor=23_456,
            balance_minor=23_456,
            due_at=datetime(2026, 2, 4, 23, tzinfo=UTC),
            request_hash="x" * 64,
        )
        s.add(invoice)
        s.flush()
        rows = [
            OutboxMessage(
                invoice_id=invoice.id or 0,
                step_key=step,
                channel=channel,
                recipient=people[0].phone if channel == "sms" else people[0].email,
                subject="Reminder",
                body="...",
                status="sent",
                provider_id="SM-row" if channel == "sms" else None,
            )
            for step, channel in (("a", "email"), ("b", "email"), ("c", "email"), ("a", "sms"))
        ]
        s.add_all(rows)
        s.commit()
        ids = [r.id or 0 for r in rows]
        w_ids = (people[0].id or 0, people[1].id or 0, invoice.id or 0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://internal.test") as http:
        yield World(http, engine, w_ids[0], w_ids[1], w_ids[2], ids[:3], ids[3])


def sendgrid_event(world: World, kind: str, row: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": "ap@ebert.example",
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "outbox_id": str(row),
        "invoice_id": str(world.invoice_id),
    } | extra


async def test_sendgrid_events_settle_rows_and_block_the_address(world: World) -> None:
    delivered, bounced, spam = world.email_rows
    events = [
        sendgrid_event(world, "processed", delivered),
        sendgrid_event(world, "delivered", delivered),
        sendgrid_event(world, "bounce", bounced, type="bounce", reason="550 5.1.1 no such user"),
        sendgrid_event(world, "delivered", 999_999),  # not ours
        sendgrid_event(world, "delivered", spam, invoice_id="123456"),  # another deployment's
    ]
    payload = json.dumps(events).encode()
    resp = await world.http.post(
        "/v1/webhooks/sendgrid", content=payload, headers=sendgrid_signed(payload)
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"applied": 2, "ignored": 3}
    assert world.row(delivered).status == "delivered"
    failed = world.row(bounced)
    assert failed.status == "failed" and "no such user" in (failed.detail or "")
    assert world.row(spam).status == "sent"
    assert world.blocks() == [(world.customer_id, "email", "bounced", "sendgrid")]

    # The same batch again (SendGrid redelivers): nothing changes.
    resp = await world.http.post(
        "/v1/webhooks/sendgrid", content=payload, headers=sendgrid_signed(payload)
    )
    assert resp.status_code == 200
    assert world.row(bounced).status == "failed"
    assert world.blocks() == [(world.customer_id, "email", "bounced", "sendgrid")]

    # A specialist removes the block (new address); a spam report blocks it again.
    path = f"/v1/customers/{world.customer_id}/contact-blocks"
    listed = await world.http.get(path, headers=world.auth("viewer"))
    assert [(b["channel"], b["reason"], b["address"]) for b in listed.json()] == [
        ("email", "bounced", "ap@ebert.example")
    ]
    assert (
        await world.http.delete(f"{path}/email", headers=world.auth("viewer"))
    ).status_code == 403
    removed = await world.http.delete(f"{path}/email", headers=world.auth("specialist"))
    assert removed.status_code == 204
    again = await world.http.delete(f"{path}/email", headers=world.auth("specialist"))
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    assert (await world.http.get(path, headers=world.auth("viewer"))).json() == []
    missing = await world.http.get(
        "/v1/customers/999999/contact-blocks", headers=world.auth("viewer")
    )
    assert missing.status_code == 404

    payload = json.dumps(
        [
            sendgrid_event(world, "spamreport", spam),
            sendgrid_event(world, "group_unsubscribe", spam),
        ]
    ).encode()
    resp = await world.http.post(
        "/v1/webhooks/sendgrid", content=payload, headers=sendgrid_signed(payload)
    )
    assert resp.status_code == 200
    assert world.row(spam).status == "sent"  # opting out says nothing about this delivery
    assert world.blocks() == [(world.customer_id, "email", "spam_report", "sendgrid")]


async def test_sendgrid_webhook_refuses_bad_signatures(world: World) -> None:
    payload = json.dumps([sendgrid_event(world, "bounce", world.email_rows[0])]).encode()
    other_key = ec.generate_private_key(ec.SECP256R1())
    tampered = payload.replace(b"bounce", b"bounce ")
    cases = [
        {"Content-Type": "application/json"},  # unsigned
        sendgrid_signed(payload, key=other_key),
        sendgrid_signed(payload, at=time.time() - 3600),  # replayed an hour later
        sendgrid_signed(payload) | {"X-Twilio-Email-Event-Webhook-Signature": "bm90IGEgc2ln"},
    ]
    for headers in cases:
        resp = await world.http.post("/v1/webhooks/sendgrid", content=payload, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json()["error"]["code"] == "unauthorized"
    resp = await world.http.post(
        "/v1/webhooks/sendgrid", content=tampered, headers=sendgrid_signed(payload)
    )
    assert resp.status_code == 401
    assert world.row(world.email_rows[0]).status == "sent"
    assert world.blocks() == []


async def test_twilio_status_callbacks(world: World) -> None:
    path = f"/v1/webhooks/twilio/status?outbox_id={world.sms_row}"
    delivered = {
        "MessageSid": "SM-row",
        "MessageStatus": "delivered",
        "To": "+4915112345678",
        "AccountSid": TWILIO_SID,
    }
    resp = await world.http.post(path, **twilio_signed(path, delivered))
    assert resp.status_code == 204, resp.text
    assert world.row(world.sms_row).status == "delivered"

    failed = delivered | {"MessageStatus": "undelivered", "ErrorCode": "30006"}
    resp = await world.http.post(path, **twilio_signed(path, failed, token="wrong-token"))
    assert resp.status_code == 401
    resp = await world.http.post(
        path,
        content=urlencode(failed),
        headers=twilio_signed(path, failed)["headers"] | {"X-Twilio-Signature": ""},
    )
    assert resp.status_code == 401
    wrong_url = f"/v1/webhooks/twilio/status?outbox_id={world.email_rows[0]}"
    resp = await world.http.post(wrong_url, **twilio_signed(path, failed))  # signed for another row
    assert resp.status_code == 401
    assert world.row(world.sms_row).status == "delivered"

    for _ in range(2):  # Twilio may call twice: the same outcome
        resp = await world.http.post(path, **twilio_signed(path, failed))
        assert resp.status_code == 204
    row = world.row(world.sms_row)
    assert row.status == "failed" and "30006" in (row.detail or "")
    assert world.blocks() == [(world.customer_id, "sms", "failed", "twilio")]

    other = delivered | {"MessageSid": "SM-someone-else"}
    resp = await world.http.post(path, **twilio_signed(path, other))
    assert resp.status_code == 204
    assert world.row(world.sms_row).status == "failed"  # not this row's message


async def test_twilio_inbound_stop_and_start(world: World) -> None:
    path = "/v1/webhooks/twilio/inbound"

    def sms(text: str, sender: str = "+4915112345678") -> dict[str, str]:
        return {"From": sender, "To": "+15005550006", "Body": text, "MessageSid": "SM-in"}

    resp = await world.http.post(path, **twilio_signed(path, sms(" stop ")))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/xml")
    assert resp.text.endswith("<Response></Response>")
    assert world.blocks() == [(world.customer_id, "sms", "stop", "twilio")]

    resp = await world.http.post(path, **twilio_signed(path, sms("Hello, I paid yesterday")))
    assert resp.status_code == 200
    resp = await world.http.post(path, **twilio_signed(path, sms("UNSTOP"), token="wrong"))
    assert resp.status_code == 401
    assert world.blocks() == [(world.customer_id, "sms", "stop", "twilio")]

    resp = await world.http.post(path, **twilio_signed(path, sms("Start")))
    assert resp.status_code == 200
    assert world.blocks() == []

    # A specialist's block is not lifted by START; a stranger's STOP blocks nobody.
    with Session(world.engine) as s:
        s.add(
            ContactBlock(
                customer_id=world.other_customer_id,
                channel="sms",
                reason="manual",
                source="specialist",
            )
        )
        s.commit()
    await world.http.post(path, **twilio_signed(path, sms("START", "+4915199999999")))
    await world.http.post(path, **twilio_signed(path, sms("STOP", "+19999999999")))
    assert world.blocks() == [(world.other_customer_id, "sms", "manual", "specialist")]
