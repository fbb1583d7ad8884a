"""The customer portal without Temporal (SQLite and PostgreSQL): signed links (expiry,
revocation, key rotation, forgery), what a link reaches (its own customer only: BOLA with
two customers), the pages in three languages, the PDFs and the EPC QR code, refused links and
the fresh link by email (sent once, blocked, limited), rate limits, and the portal link in
reminders. The customer's requests and card payments have their own test files
(test_portal_requests.py, test_stripe.py); the browser flows are in test_portal_browser.py."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import segno.helpers
from pypdf import PdfReader
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api.app import create_app
from arflow.config import Settings
from arflow.customers.contacts import block
from arflow.messages.channels import (
    DeliveryResult,
    OutboundMessage,
    OutboxOnlyChannel,
    PermanentDeliveryError,
)
from arflow.messages.delivery import StepDelivery
from arflow.policies import service as policies
from arflow.portal import fresh_links, links
from models import Customer, CustomerEvent, Invoice, OutboxMessage, PortalLinkRequest
from models.reference import payment_reference
from tests.conftest import API_KEYS, WEBHOOK_SECRET
from workflows.types import ScheduledStep, SendReminderInput

IBAN = "DE89370400440532013000"


def role(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[name]}"}


def settings_for(engine: Engine, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        link_secret="portal-test-link-secret-0123456789abcdef",
        data_dir=str(tmp_path / "data"),
        company_name="Muster Handel GmbH",
        company_iban=IBAN,
        public_url="http://arflow.test",
        **overrides,
    )


@dataclass
class Portal:
    http: httpx.AsyncClient
    engine: Engine
    settings: Settings

    def customer(self, **overrides: Any) -> Customer:
        with Session(self.engine) as s:
            row = Customer(
                external_id=f"C-{uuid.uuid4().hex[:8]}",
                name=overrides.pop("name", "Acme GmbH"),
                email=overrides.pop("email", f"ap-{uuid.uuid4().hex[:6]}@acme.example.com"),
                timezone=overrides.pop("timezone", "Europe/Berlin"),
                locale=overrides.pop("locale", "en"),
                **overrides,
            )
            s.add(row)
            s.commit()
            s.refresh(row)
            return row

    def invoice(self, customer_id: int, amount: int = 123456, **overrides: Any) -> Invoice:
        with Session(self.engine) as s:
            policy_id = policies.ensure_default_policy(s).id
            assert policy_id is not None
            row = Invoice(
                external_id=f"I-{uuid.uuid4().hex[:8]}",
                number=overrides.pop("number", f"INV-{uuid.uuid4().hex[:6]}"),
                currency=overrides.pop("currency", "EUR"),
                issued_on=date(2026, 11, 1),
                due_date=overrides.pop("due_date", date(2026, 11, 30)),
                customer_id=customer_id,
                policy_id=policy_id,
                amount_minor=amount,
                balance_minor=overrides.pop("balance_minor", amount),
                due_at=datetime(2026, 11, 30, 23, tzinfo=UTC),
                request_hash="x" * 64,
                **overrides,
            )
            s.add(row)
            s.commit()
            s.refresh(row)
            return row

    def link(self, customer_id: int, now: datetime | None = None) -> str:
        return "/portal/" + links.portal_token(self.settings, customer_id, now)


@pytest.fixture
async def portal(engine: Engine, tmp_path: Path) -> AsyncIterator[Portal]:
    settings = settings_for(engine, tmp_path)
    app = create_app(settings, engine=engine, temporal=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        yield Portal(http, engine, settings)


# -- the link ---------------------------------------------------------------------------------


def test_token_opens_its_customer_until_it_expires(engine: Engine, tmp_path: Path) -> None:
    settings = settings_for(engine, tmp_path, portal_link_days=30)
    with Session(engine) as s:
        customer = Customer(external_id=f"C-{uuid.uuid4().hex}", name="A", timezone="UTC")
        s.add(customer)
        s.commit()
        assert customer.id is not None
        made = datetime(2026, 12, 1, 10, tzinfo=UTC)
        token = links.portal_token(settings, customer.id, made)
        opened = links.open_link(s, settings, token, now=made + timedelta(days=29))
        assert opened.customer_id == customer.id
        assert opened.expires_at == made + timedelta(days=30)
        with pytest.raises(links.LinkRefused) as refused:
            links.open_link(s, settings, token, now=made + timedelta(days=30))
        assert (refused.value.reason, refused.value.customer_id) == ("expired", customer.id)


def test_forged_tokens_are_unknown_and_name_nobody(engine: Engine, tmp_path: Path) -> None:
    settings = settings_for(engine, tmp_path)
    with Session(engine) as s:
        a = Customer(external_id=f"C-{uuid.uuid4().hex}", name="A", timezone="UTC")
        b = Customer(external_id=f"C-{uuid.uuid4().hex}", name="B", timezone="UTC")
        s.add_all([a, b])
        s.commit()
        assert a.id is not None and b.id is not None
        token = links.portal_token(settings, a.id)
        cid, issued, kid, mac = token.split(".")
        other_secret = settings.model_copy(update={"link_secret": "another-secret-0123456789ab"})
        forged = [
            f"{b.id}.{issued}.{kid}.{mac}",  # another customer's id under A's signature
            f"{cid}.{int(issued) + 86400}.{kid}.{mac}",  # made later, to last longer
            f"{cid}.{issued}.k9.{mac}",  # an unknown key id
            links.portal_token(other_secret, a.id),  # signed with another secret
            f"{cid}.{issued}.{kid}.{mac[:-1]}",
            "999999999.1.k1.abc",
            "../../etc/passwd",
            "",
        ]
        for text in forged:
            with pytest.raises(links.LinkRefused) as refused:
                links.open_link(s, settings, text)
            assert refused.value.reason == "unknown", text
            assert refused.value.customer_id is None, text


def test_a_rotated_key_keeps_its_links_until_removed(engine: Engine, tmp_path: Path) -> None:
    old = settings_for(engine, tmp_path, link_key_id="k1")
    with Session(engine) as s:
        c = Customer(external_id=f"C-{uuid.uuid4().hex}", name="A", timezone="UTC")
        s.add(c)
        s.commit()
        assert c.id is not None
        token = links.portal_token(old, c.id)
        rotated = old.model_copy(
            update={
                "link_key_id": "k2",
                "link_secret": "the-new-link-secret-0123456789abcdef",
                "link_secrets_old": f"k1:{old.link_secret}",
            }
        )
        assert links.open_link(s, rotated, token).customer_id == c.id
        assert links.portal_token(rotated, c.id).split(".")[2] == "k2"
        retired = rotated.model_copy(update={"link_secrets_old": ""})
        with pytest.raises(links.LinkRefused):
            links.open_link(s, retired, token)


async def test_revoking_ends_the_links_made_before(portal: Portal) -> None:
    c = portal.customer()
    assert c.id is not None
    old = portal.link(c.id, datetime.now(UTC) - timedelta(minutes=5))
    assert (await portal.http.get(old)).status_code == 200
    resp = await portal.http.post(
        f"/v1/customers/{c.id}/portal-links/revoke",
        json={"reason": "link forwarded to a former employee"},
        headers=role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    refused = await portal.http.get(old)
    assert refused.status_code == 410
    assert "no longer works" in refused.text
    assert f"/portal/{old.removeprefix('/portal/')}/fresh-link" in refused.text
    made = await portal.http.post(f"/v1/customers/{c.id}/portal-links", headers=role("specialist"))
    assert made.status_code == 201, made.text
    fresh = made.json()["url"].removeprefix("http://arflow.test")
    assert (await portal.http.get(fresh)).status_code == 200
    with Session(portal.engine) as s:
        kinds = [
            e.kind
            for e in s.exec(select(CustomerEvent).where(CustomerEvent.customer_id == c.id)).all()
        ]
    assert kinds.count("portal_links_revoked") == 1 and kinds.count("portal_link_made") == 1
    # viewers may not revoke; a missing customer and a bad body are 4xx with a JSON body
    viewer = await portal.http.post(
        f"/v1/customers/{c.id}/portal-links/revoke", json={"reason": "x"}, headers=role("viewer")
    )
    assert viewer.status_code == 403
    missing = await portal.http.post(
        "/v1/customers/987654321/portal-links/revoke",
        json={"reason": "x"},
        headers=role("specialist"),
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    empty = await portal.http.post(
        f"/v1/customers/{c.id}/portal-links/revoke", json={}, headers=role("specialist")
    )
    assert empty.status_code == 422


async def test_refused_links_get_a_plain_page(portal: Portal) -> None:
    c = portal.customer()
    assert c.id is not None
    expired = portal.link(c.id, datetime.now(UTC) - timedelta(days=31))
    page = await portal.http.get(expired)
    assert page.status_code == 410
    assert "This link has expired" in page.text and "Send me a fresh link" in page.text
    assert "Traceback" not in page.text and c.name not in page.text
    german = portal.customer(locale="de")
    assert german.id is not None
    revoked_page = await portal.http.get(
        portal.link(german.id, datetime.now(UTC) - timedelta(days=40))
    )
    assert revoked_page.status_code == 410 and "Dieser Link ist abgelaufen" in revoked_page.text
    for forged in ("/portal/1.2.k1.xyz", "/portal/nonsense", "/portal/1.2.k1.xyz/invoices/1"):
        page = await portal.http.get(forged)
        assert page.status_code == 404, forged
        assert "This link is not valid" in page.text
        assert 'name="email"' in page.text  # asks for the address on file instead


# -- what a link reaches ----------------------------------------------------------------------


async def test_a_link_reaches_its_own_customer_only(portal: Portal) -> None:
    a, b = portal.customer(name="Alpha AG"), portal.customer(name="Beta GmbH")
    assert a.id is not None and b.id is not None
    mine = portal.invoice(a.id, number="A-1")
    theirs = portal.invoice(b.id, number="B-SECRET-1")
    link = portal.link(a.id)
    home = await portal.http.get(link)
    assert home.status_code == 200
    assert "A-1" in home.text and "B-SECRET-1" not in home.text and "Beta" not in home.text
    assert (await portal.http.get(f"{link}/invoices/{mine.id}")).status_code == 200
    for path in (
        f"/invoices/{theirs.id}",
        f"/invoices/{theirs.id}/pdf",
        f"/invoices/{theirs.id}/qr.svg",
        "/invoices/987654321",
        "/invoices/-1",
        "/invoices/1e3",
        "/invoices/99999999999999999999999",
    ):
        resp = await portal.http.get(link + path)
        assert resp.status_code == 404, path
        assert "B-SECRET-1" not in resp.text and "Beta" not in resp.text, path
    for action, data in (
        ("dispute", {"reason": "damaged", "text": "x"}),
        ("plan", {"count": "2", "first": date.today().isoformat()}),
        ("promise", {"promised": date.today().isoformat()}),
    ):
        resp = await portal.http.post(f"{link}/invoices/{theirs.id}/{action}", data=data)
        assert resp.status_code == 404, action
    with Session(portal.engine) as s:
        after = s.get(Invoice, theirs.id)
        assert after is not None and after.status == "open" and after.hold is None
    # the statement lists the customer's own invoices only
    pdf = await portal.http.get(f"{link}/statement.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "A-1" in text and "B-SECRET-1" not in text


async def test_pages_in_the_customer_language_and_the_switcher(portal: Portal) -> None:
    c = portal.customer(locale="de-DE", name="Müller KG")
    assert c.id is not None
    inv = portal.invoice(c.id, number="R-77", amount=123456)
    link = portal.link(c.id)
    home = await portal.http.get(link)
    assert '<html lang="de">' in home.text
    assert "Offene Rechnungen" in home.text and "1.234,56\xa0€" in home.text
    fr = await portal.http.get(f"{link}?lang=fr")
    assert '<html lang="fr">' in fr.text and "Factures à régler" in fr.text
    assert "1\u202f234,56\xa0€" in fr.text
    # the choice is kept in the page's links
    assert f"/invoices/{inv.id}?lang=fr" in fr.text
    en = await portal.http.get(f"{link}/invoices/{inv.id}?lang=en")
    assert "Pay by bank transfer" in en.text and "€1,234.56" in en.text
    assert payment_reference(inv.id or 0)[:4] in en.text
    unknown = await portal.http.get(f"{link}?lang=xx")
    assert '<html lang="de">' in unknown.text  # not one of ours: the customer's language


def test_every_language_has_every_word() -> None:
    from arflow.portal.i18n import STRINGS

    english = set(STRINGS["en"])
    for lang, words in STRINGS.items():
        assert set(words) == english, lang


async def test_invoice_copy_and_epc_qr_code(portal: Portal) -> None:
    c = portal.customer()
    assert c.id is not None
    inv = portal.invoice(c.id, number="INV-QR-1", amount=25050)
    usd = portal.invoice(c.id, number="INV-USD", currency="USD")
    link = portal.link(c.id)
    pdf = await portal.http.get(f"{link}/invoices/{inv.id}/pdf")
    assert pdf.status_code == 200
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "INV-QR-1" in text
    qr = await portal.http.get(f"{link}/invoices/{inv.id}/qr.svg")
    assert qr.status_code == 200 and qr.headers["content-type"].startswith("image/svg+xml")
    expected = segno.helpers.make_epc_qr(
        name="Muster Handel GmbH",
        iban=IBAN,
        amount=Decimal("250.50"),
        reference=payment_reference(inv.id or 0),
    )
    out = io.BytesIO()
    expected.save(out, kind="svg", scale=5, border=2, title="EPC QR")
    assert qr.content == out.getvalue()  # the EPC payload: our name, IBAN, amount, reference
    page = await portal.http.get(f"{link}/invoices/{inv.id}")
    assert f"/invoices/{inv.id}/qr.svg" in page.text and "DE89 3704 0044 0532 0130 00" in page.text
    # EPC codes are for euros: none for a dollar invoice
    assert (await portal.http.get(f"{link}/invoices/{usd.id}/qr.svg")).status_code == 404
    page = await portal.http.get(f"{link}/invoices/{usd.id}")
    assert "qr.svg" not in page.text


async def test_no_card_payment_without_stripe_settings(portal: Portal) -> None:
    c = portal.customer()
    assert c.id is not None
    inv = portal.invoice(c.id)
    link = portal.link(c.id)
    page = await portal.http.get(f"{link}/invoices/{inv.id}")
    assert "Pay by card" not in page.text and "Pay by bank transfer" in page.text
    resp = await portal.http.post(f"{link}/checkout", data={"invoice": str(inv.id)})
    assert resp.status_code == 303 and resp.headers["location"] == link


async def test_portal_pages_are_rate_limited(engine: Engine, tmp_path: Path) -> None:
    settings = settings_for(engine, tmp_path, portal_rate_limit="3/minute")
    app = create_app(settings, engine=engine, temporal=None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://arflow.test"
    ) as http:
        answers = [(await http.get("/portal/1.2.k1.abc")).status_code for _ in range(4)]
        assert answers == [404, 404, 404, 429]
        limited = await http.get("/portal/1.2.k1.abc")
        assert int(limited.headers["Retry-After"]) >= 1
        assert "Too many requests" in limited.text


async def test_webhooks_are_rate_limited(engine: Engine, tmp_path: Path) -> None:
    settings = settings_for(engine, tmp_path, webhook_rate_limit="2/minute")
    app = create_app(settings, engine=engine, temporal=None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://arflow.test"
    ) as http:
        codes = [
            (await http.post("/v1/webhooks/payments", content=b"{}")).status_code for _ in range(3)
        ]
        assert 429 not in codes[:2] and codes[2] == 429, codes  # (no Temporal here: 503s)
        limited = await http.post("/v1/webhooks/payments", content=b"{}")
        assert limited.json()["error"]["code"] == "too_many_attempts"
        assert int(limited.headers["Retry-After"]) >= 1


# -- a fresh link by email --------------------------------------------------------------------


class Recorder:
    external = True

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[OutboundMessage] = []
        self.fail = fail

    def deliver(self, message: OutboundMessage) -> DeliveryResult:
        if self.fail:
            raise PermanentDeliveryError("550 no such mailbox")
        self.sent.append(message)
        return DeliveryResult(provider_id=f"rec-{len(self.sent)}")


def test_a_fresh_link_goes_once_to_the_address_on_file(engine: Engine, tmp_path: Path) -> None:
    settings = settings_for(engine, tmp_path)
    with Session(engine) as s:
        c = Customer(
            external_id=f"C-{uuid.uuid4().hex}",
            name="Dupont SARL",
            email="compta@dupont.example.fr",
            timezone="Europe/Paris",
            locale="fr",
        )
        s.add(c)
        s.commit()
        s.refresh(c)
        row = fresh_links.request_link(s, c, "expired")
        assert row.id is not None and row.status == "queued"
        channel = Recorder()
        assert fresh_links.send(s, settings, channel, row.id) == "sent"
        assert fresh_links.send(s, settings, channel, row.id) == "sent"  # a retry: not again
        assert len(channel.sent) == 1
        message = channel.sent[0]
        assert message.recipient == "compta@dupont.example.fr"
        assert "Votre espace client" in message.subject and "/portal/" in message.body
        token = message.body.split("/portal/")[1].split()[0]
        assert links.open_link(s, settings, token).customer_id == c.id
        # three an hour: the fourth request is recorded as limited and sends nothing
        rows = [fresh_links.request_link(s, c, "expired") for _ in range(3)]
        assert [r.status for r in rows] == ["queued", "queued", "limited"]
        # an opted-out address gets nothing; a refusal for good is recorded
        assert c.id is not None
        block(s, c.id, "email", "unsubscribed", "link", address=c.email)
        s.commit()
        assert rows[0].id is not None and rows[1].id is not None
        assert fresh_links.send(s, settings, channel, rows[0].id) == "blocked"
        assert len(channel.sent) == 1
        stored = s.exec(select(PortalLinkRequest).where(PortalLinkRequest.customer_id == c.id))
        statuses = sorted(r.status for r in stored.all())
        assert statuses == ["blocked", "limited", "queued", "sent"]


def test_a_refused_provider_is_recorded(engine: Engine, tmp_path: Path) -> None:
    settings = settings_for(engine, tmp_path)
    with Session(engine) as s:
        c = Customer(
            external_id=f"C-{uuid.uuid4().hex}", name="X", email="x@x.example.com", timezone="UTC"
        )
        s.add(c)
        s.commit()
        s.refresh(c)
        row = fresh_links.request_link(s, c, "revoked")
        assert row.id is not None
        assert fresh_links.send(s, settings, Recorder(fail=True), row.id) == "failed"
        s.refresh(row)
        assert row.detail == "550 no such mailbox"


async def test_asking_by_address_answers_the_same_either_way(portal: Portal) -> None:
    c = portal.customer(email="known@acme.example.com")
    known = await portal.http.post("/portal/fresh-link", data={"email": "KNOWN@acme.example.com"})
    unknown = await portal.http.post("/portal/fresh-link", data={"email": "who@else.example"})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    with Session(portal.engine) as s:
        rows = s.exec(select(PortalLinkRequest).where(PortalLinkRequest.customer_id == c.id))
        # no Temporal in this test: the request is recorded and its failure to start too
        assert [(r.reason, r.status) for r in rows.all()] == [("unknown", "failed")]


# -- the link in messages ---------------------------------------------------------------------


def test_reminders_carry_the_portal_link(engine: Engine, tmp_path: Path) -> None:
    settings = settings_for(engine, tmp_path)
    with Session(engine) as s:
        c = Customer(
            external_id=f"C-{uuid.uuid4().hex}",
            name="Acme",
            email="ap@acme.example.com",
            timezone="UTC",
        )
        s.add(c)
        s.commit()
        s.refresh(c)
        assert c.id is not None
    inv = Portal(None, engine, settings).invoice(c.id)  # type: ignore[arg-type]
    delivery = StepDelivery(
        OutboxOnlyChannel(),
        settings.pay_url,
        portal_url=lambda cid: links.portal_url(settings, cid),
    )
    step = ScheduledStep(
        key="reminder-1", channel="email", template="reminder", at=datetime.now(UTC)
    )
    with Session(engine) as s:
        delivery.send(
            s,
            SendReminderInput(
                invoice_id=inv.id or 0,
                step=step,
                balance_minor=inv.balance_minor,
                skipped=[],
                next_action=None,
            ),
        )
        row = s.exec(select(OutboxMessage).where(OutboxMessage.invoice_id == inv.id)).one()
    assert "http://arflow.test/portal/" in row.body
    token = row.body.split("/portal/")[1].split()[0]
    with Session(engine) as s:
        assert links.open_link(s, settings, token).customer_id == c.id


NASTY = ["", " ", "0", "-1", "1e9999", "NaN", "inf", "9" * 40, "ä\u0000x", "2026-02-30", "x" * 5000]


async def test_no_portal_form_value_is_a_server_error(portal: Portal) -> None:
    """What a browser or a script may post to each portal form: a 4xx page, never a 500, and
    the invoice unchanged (no Temporal here: a valid request is a 503 page)."""
    c = portal.customer()
    assert c.id is not None
    inv = portal.invoice(c.id)
    link = portal.link(c.id)
    forms = {
        "dispute": ("reason", "text", "amount"),
        "plan": ("count", "first", "every", "note"),
        "promise": ("promised", "amount", "note"),
    }
    for action, fields in forms.items():
        for value in NASTY:
            data = dict.fromkeys(fields, value)
            resp = await portal.http.post(f"{link}/invoices/{inv.id}/{action}", data=data)
            assert resp.status_code < 500 or resp.status_code == 503, (action, value)
            assert "Traceback" not in resp.text
    for value in NASTY:
        resp = await portal.http.post(f"{link}/checkout", data={"invoice": value, "back": value})
        assert resp.status_code < 500, value
        resp = await portal.http.post("/portal/fresh-link", data={"email": value})
        assert resp.status_code in (200, 422, 429), value
    with Session(portal.engine) as s:
        after = s.get(Invoice, inv.id)
        assert after is not None and (after.status, after.hold) == ("open", None)


async def test_the_dispute_form_takes_documents_over_a_megabyte(portal: Portal) -> None:
    """The API's 1 MiB body limit does not cut off a customer's documents (three of up to
    10 MiB); past that, 413."""
    c = portal.customer()
    assert c.id is not None
    inv = portal.invoice(c.id)
    url = f"{portal.link(c.id)}/invoices/{inv.id}/dispute"
    two_mb = b"%PDF-1.4\n" + b"0" * (2 * 1024 * 1024)
    resp = await portal.http.post(
        url, data={"reason": "damaged"}, files={"files": ("scan.pdf", two_mb, "application/pdf")}
    )
    assert resp.status_code == 503  # read whole; no Temporal in this test
    assert "not available right now" in resp.text
    huge = b"0" * (31 * 1024 * 1024)
    resp = await portal.http.post(
        url, data={"reason": "damaged"}, files={"files": ("big.pdf", huge, "application/pdf")}
    )
    assert resp.status_code == 413
