"""The customer portal in a browser (Playwright driving Debian's Chromium against a real
uvicorn server, a worker and the dev server; card payments through the real Stripe SDK and the
fake Stripe server of tests/fake_stripe.py, whose hosted page sends the signed completion to
our webhook and redirects back, as Stripe Checkout does).

Each flow of the issue: open the link, pay two invoices by card, dispute with a document,
propose a plan inside and outside the policy's bounds, promise a date; then axe-core on every
portal page (0 serious or critical violations), and the pages on a phone-sized screen (no
sideways scrolling)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect, sync_playwright
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from arflow.db import make_engine
from arflow.migrate import upgrade
from arflow.portal import links
from models import Invoice, InvoiceEvent, OutboxMessage
from models.policy import DEFAULT_POLICY
from tests.conftest import API_KEYS, ROOT
from tests.fake_stripe import API_KEY, SECRET, FakeStripe
from tests.test_web import CHROMIUM_ARGS, LiveServer, chromium_path, web_settings  # noqa: F401

SHOTS = ROOT / "artifacts" / "screenshots"
BLOCKING = ("serious", "critical")
# A tiny valid PDF (what the portal reads the type from: the bytes, not the name).
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@dataclass
class PortalLive:
    url: str
    engine: object
    stripe: FakeStripe
    link: str
    ids: dict[str, int]
    settings: object

    def invoice(self, key: str) -> Invoice:
        with Session(self.engine) as s:  # type: ignore[arg-type]
            found = s.get(Invoice, self.ids[key])
            assert found is not None
            return found

    def kinds(self, key: str) -> list[tuple[str, str | None]]:
        with Session(self.engine) as s:  # type: ignore[arg-type]
            rows = s.exec(select(InvoiceEvent).where(InvoiceEvent.invoice_id == self.ids[key]))
            return [(e.kind, e.actor) for e in rows.all()]


@pytest.fixture(scope="module")
def portal_live(
    chromium_path: str,  # noqa: F811
    dev_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PortalLive]:
    tmp = tmp_path_factory.mktemp("portal")
    engine = make_engine(f"sqlite:///{tmp / 'arflow.db'}")
    upgrade(engine)
    stripe = FakeStripe()
    settings = web_settings(
        engine,
        tmp,
        stripe_api_key=API_KEY,
        stripe_webhook_secret=SECRET,
        stripe_api_base=stripe.url,
        stripe_checkout_origin=stripe.url,
        company_name="Muster Handel GmbH",
        company_iban="DE89370400440532013000",
        link_secret="portal-browser-link-secret-0123456789",
    )
    server = LiveServer(settings, engine, dev_env.client.service_client.config.target_host)
    server.settings = settings.model_copy(update={"public_url": server.url})
    stripe.webhook_url = f"{server.url}/v1/webhooks/stripe"
    server.start()
    server.ready.wait(timeout=60)
    if server.error is not None:
        raise server.error
    try:
        customer, ids = _seed(server.url)
        link = "/portal/" + links.portal_token(server.settings, customer)
        yield PortalLive(server.url, engine, stripe, link, ids, server.settings)
    finally:
        server.stop()
        stripe.close()
        engine.dispose()


def berlin_today() -> date:
    """The seeded customer's calendar day (Europe/Berlin): after 23:00 UTC it is tomorrow's."""
    return datetime.now(ZoneInfo("Europe/Berlin")).date()


def _seed(url: str) -> tuple[int, dict[str, int]]:
    """One customer with six open invoices under the default policy without a contact window
    (the flows must not depend on the hour the suite runs at)."""
    today = berlin_today()  # the customer's day: the page counts days overdue in it
    admin = {"Authorization": f"Bearer {API_KEYS['admin']}"}
    anytime = f"anytime-{uuid.uuid4().hex[:6]}"
    ids: dict[str, int] = {}
    with httpx.Client(base_url=url, headers=admin, timeout=30) as http:
        policy = DEFAULT_POLICY.model_copy(update={"name": anytime, "contact_window": None})
        resp = http.post("/v1/policies", json=policy.model_dump(mode="json"))
        assert resp.status_code == 201, resp.text
        resp = http.post(
            "/v1/customers",
            json={
                "external_id": f"C-portal-{uuid.uuid4().hex[:6]}",
                "name": "Bäckerei Sonnenschein",
                "email": "buchhaltung@sonnenschein.example.de",
                "timezone": "Europe/Berlin",
                "locale": "en",
            },
        )
        assert resp.status_code == 201, resp.text
        customer = int(resp.json()["id"])
        for number, amount, due_in in (
            ("P-1", 12_000, 10),
            ("P-2", 8_050, -5),
            ("P-3", 45_000, 20),
            ("P-4", 90_000, 15),
            ("P-5", 120_000, 15),
            ("P-6", 30_000, -3),
        ):
            resp = http.post(
                "/v1/invoices",
                json={
                    "external_id": f"{number}-{uuid.uuid4().hex[:6]}",
                    "number": number,
                    "customer_id": customer,
                    "amount_minor": amount,
                    "currency": "EUR",
                    "issued_on": (today - timedelta(days=30)).isoformat(),
                    "due_date": (today + timedelta(days=due_in)).isoformat(),
                    "policy_name": anytime,
                },
            )
            assert resp.status_code == 201, resp.text
            ids[number] = int(resp.json()["id"])
    return customer, ids


@pytest.fixture
def page(chromium_path: str) -> Iterator[Page]:  # noqa: F811
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            yield context.new_page()
        finally:
            browser.close()


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"portal-{name}.png"), full_page=True)


def _axe(page: Page, name: str) -> list[str]:
    violations = Axe().run(page).response["violations"]
    return [
        f"{name}: {v['id']} ({v['impact']}) on {len(v['nodes'])} element(s): {v['help']}"
        for v in violations
        if v["impact"] in BLOCKING
    ]


def _row(page: Page, number: str) -> str:
    return page.locator("tr", has_text=number).first.inner_text()


def test_browser_open_the_link_and_pay_two_invoices_by_card(
    portal_live: PortalLive, page: Page
) -> None:
    live = portal_live
    expect.set_options(timeout=20_000)
    refused: list[str] = []  # what the Content-Security-Policy blocked
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.goto(live.url + live.link)
    expect(page.locator("h1")).to_contain_text("Your account with Muster Handel GmbH")
    for number in ("P-1", "P-2", "P-3", "P-4", "P-5", "P-6"):
        expect(page.locator("table").first).to_contain_text(number)
    assert "Overdue by 5 days" in _row(page, "P-2")
    _shot(page, "home")
    # pay P-1 and P-2 only: untick the others
    for number in ("P-3", "P-4", "P-5", "P-6"):
        page.uncheck(f"#pay-{live.ids[number]}")
    page.click("text=Pay the selected invoices by card")
    # the fake's hosted page sends the signed completion and redirects back to us
    expect(page.locator(".notice")).to_contain_text("Thank you for your payment")
    created = live.stripe.creates()[-1]
    amounts = sorted(int(i["price_data"]["unit_amount"]) for i in created.line_items())
    assert amounts == [8_050, 12_000]
    assert live.stripe.deliveries and live.stripe.deliveries[-1] == 200
    for _ in range(60):  # the workflows record the payments
        if all(live.invoice(n).status == "paid" for n in ("P-1", "P-2")):
            break
        page.wait_for_timeout(500)
    assert live.invoice("P-1").status == "paid" and live.invoice("P-2").status == "paid"
    page.reload()
    expect(page.locator("h2", has_text="Paid in the last 90 days")).to_be_visible()
    assert refused == [], refused


def test_browser_dispute_with_a_document(
    portal_live: PortalLive, page: Page, tmp_path: Path
) -> None:
    live = portal_live
    expect.set_options(timeout=20_000)
    page.goto(f"{live.url}{live.link}/invoices/{live.ids['P-3']}")
    expect(page.locator("h1")).to_contain_text("Invoice P-3")
    page.check("#reason-damaged")
    page.fill("#dispute-text", "Two of the ten crates arrived broken.")
    page.fill("#dispute-amount", "90,00")
    document = tmp_path / "delivery-note.pdf"
    document.write_bytes(PDF)
    page.set_input_files("#dispute-files", str(document))
    page.click("text=Send to our team")
    expect(page.locator(".notice")).to_contain_text("our team has your query")
    expect(page.locator("dl.facts").first).to_contain_text("Disputed")
    assert live.invoice("P-3").status == "disputed"
    assert ("dispute_opened", "customer") in live.kinds("P-3")


def test_browser_plan_inside_and_outside_the_bounds(portal_live: PortalLive, page: Page) -> None:
    live = portal_live
    expect.set_options(timeout=20_000)
    first = (berlin_today() + timedelta(days=7)).isoformat()
    page.goto(f"{live.url}{live.link}/invoices/{live.ids['P-4']}")
    page.fill("#plan-count", "3")
    page.fill("#plan-first", first)
    page.click("text=Propose this plan")
    expect(page.locator(".notice")).to_contain_text("Your payment plan is agreed")
    assert live.invoice("P-4").hold == "plan"
    # twelve instalments are more than the policy agrees to at once: a proposal to the team
    page.goto(f"{live.url}{live.link}/invoices/{live.ids['P-5']}")
    page.fill("#plan-count", "12")
    page.fill("#plan-first", first)
    page.click("text=Propose this plan")
    expect(page.locator(".notice")).to_contain_text("your proposal went to our team")
    assert live.invoice("P-5").hold is None
    assert ("plan_proposed", "customer") in live.kinds("P-5")


def test_browser_promise_a_date(portal_live: PortalLive, page: Page) -> None:
    live = portal_live
    expect.set_options(timeout=20_000)
    page.goto(f"{live.url}{live.link}/invoices/{live.ids['P-6']}")
    promised = (berlin_today() + timedelta(days=10)).isoformat()
    page.fill("#promise-date", promised)
    page.click("button:has-text('Promise')")
    expect(page.locator(".notice")).to_contain_text("your promise is noted")
    assert live.invoice("P-6").hold == "promise"
    # confirmed by email, with the customer's portal link
    confirmation = None
    for _ in range(60):
        with Session(live.engine) as s:  # type: ignore[arg-type]
            confirmation = s.exec(
                select(OutboxMessage).where(
                    OutboxMessage.invoice_id == live.ids["P-6"],
                    col(OutboxMessage.step_key).startswith("confirm-promise"),
                )
            ).first()
        if confirmation is not None and confirmation.status == "sent":
            break
        page.wait_for_timeout(500)
    assert confirmation is not None and confirmation.status == "sent"
    assert f"{live.url}/portal/" in confirmation.body


def test_every_portal_page_passes_axe_and_fits_a_phone(
    portal_live: PortalLive,
    chromium_path: str,  # noqa: F811
) -> None:
    live = portal_live
    found: list[str] = []
    expired = "/portal/" + links.portal_token(
        live.settings,  # type: ignore[arg-type]
        1,
        datetime.now(UTC) - timedelta(days=60),
    )
    pages = {
        "home": live.link,
        "home-de": live.link + "?lang=de",
        "invoice": f"{live.link}/invoices/{live.ids['P-5']}",
        "invoice-fr": f"{live.link}/invoices/{live.ids['P-5']}?lang=fr",
        "invoice-disputed": f"{live.link}/invoices/{live.ids['P-3']}",
        "expired": expired,
        "forged": "/portal/1.2.k1.forged",
        "fresh-link": "/portal/fresh-link",
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            for label, viewport in (("desktop", (1280, 900)), ("phone", (390, 844))):
                context = browser.new_context(
                    viewport={"width": viewport[0], "height": viewport[1]}
                )
                tab = context.new_page()
                for name, path in pages.items():
                    tab.goto(live.url + path)
                    expect(tab.locator("h1")).to_be_visible()
                    if label == "desktop":
                        found += _axe(tab, name)
                    else:
                        wide = tab.evaluate(
                            "document.documentElement.scrollWidth > window.innerWidth + 1"
                        )
                        assert not wide, f"{name} scrolls sideways on a phone"
                        _shot(tab, f"phone-{name}")
                context.close()
        finally:
            browser.close()
    assert found == [], "\n".join(found)
