"""The dashboard's Customers pages (api/web_customers.py).

Plain HTTP first (httpx over ASGI, no Temporal; SQLite and PostgreSQL): the list's search,
filters and paging; the customer's page for a specialist and a viewer (PII masked on the
timeline, no forms); the details form (saved, or refused field by field with nothing stored);
the collector and contact-block forms; 404 and huge ids; CSRF. Then the account pause and
resume with a worker on the time-skipping server, and one browser scenario on the dev server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from arflow.customers import contacts
from arflow.customers.collectors import create_collector
from arflow.policies import service as policies
from models import Customer, CustomerEvent, Invoice
from models.collector import CollectorCreate
from tests import test_web
from tests.conftest import API_KEYS, Harness, harness
from tests.test_web import CSRF_IN_FORM, CSRF_IN_PAGE, Live, shot, web_settings

# The browser fixtures of tests/test_web.py (a live server on the dev server, Chromium).
chromium_path = test_web.chromium_path
live = test_web.live
page = test_web.page

FILLERS = 30


async def _login(http: httpx.AsyncClient, role: str) -> dict[str, str]:
    """Sign in with the role's key; the headers an htmx form post sends."""
    form = await http.get("/app/login")
    token = CSRF_IN_FORM.search(form.text)
    assert token, form.text
    resp = await http.post(
        "/app/login", data={"api_key": API_KEYS[role], "csrf_token": token[1], "next": "/app"}
    )
    assert resp.status_code == 303, resp.text
    found = CSRF_IN_PAGE.search((await http.get("/app/customers")).text)
    assert found
    return {"X-CSRF-Token": found[1], "HX-Request": "true"}


async def _logout(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    resp = await http.post("/app/logout", headers={"X-CSRF-Token": headers["X-CSRF-Token"]})
    assert resp.status_code == 303


def _invoice(
    s: Session, customer_id: int, policy_id: int, number: str, currency: str, due_in: int
) -> Invoice:
    today = datetime.now(UTC).date()
    due = today + timedelta(days=due_in)
    invoice = Invoice(
        external_id=f"X-{number}",
        number=number,
        currency=currency,
        issued_on=today - timedelta(days=60),
        due_date=due,
        due_at=datetime.combine(due, datetime.min.time(), UTC),
        customer_id=customer_id,
        policy_id=policy_id,
        amount_minor=250_000,
        balance_minor=250_000,
        request_hash="x" * 64,
    )
    s.add(invoice)
    return invoice


def seed(engine: Engine) -> dict[str, int]:
    """Four customers to find, each by something else, and 30 fillers for the paging."""
    with Session(engine) as s:
        policy = policies.ensure_default_policy(s)
        assert policy.id is not None
        named = {
            "bergmann": Customer(
                external_id="C-BERG",
                name="Bergmann GmbH",
                email="ap@bergmann.example.com",
                phone="+4930123456",
                timezone="Europe/Berlin",
                country="DE",
                address="Hauptstr. 1\n10115 Berlin",
            ),
            "hudson": Customer(
                external_id="C-HUD",
                name="Hudson Supply Co.",
                email="Billing@Hudson.example.com",
                timezone="America/New_York",
                segment="key_account",
                assigned_collector="Dana Reyes",
            ),
            "risky": Customer(
                external_id="C-RISK",
                name="Risky Traders",
                timezone="UTC",
                credit_hold=True,
                credit_hold_reason="an invoice is overdue more than 60 days",
                broken_promises=2,
                broken_plans=1,
            ),
            "quiet": Customer(external_id="C-PAUSED", name="Quiet Ltd", timezone="Asia/Tokyo"),
        }
        s.add_all(named.values())
        s.add_all(
            Customer(external_id=f"F-{n:02}", name=f"Filler {n:02}", timezone="UTC")
            for n in range(FILLERS)
        )
        s.flush()
        ids = {key: c.id for key, c in named.items() if c.id is not None}
        _invoice(s, ids["bergmann"], policy.id, "B-1", "EUR", 20)
        _invoice(s, ids["hudson"], policy.id, "H-1", "USD", -40)
        _invoice(s, ids["risky"], policy.id, "R-1", "EUR", -90)
        _invoice(s, ids["quiet"], policy.id, "Q-1", "JPY", 10).hold = "paused"
        s.commit()
        for key in ("bergmann", "hudson", "risky", "quiet"):
            found = s.exec(select(Invoice.id).where(Invoice.customer_id == ids[key])).one()
            assert found is not None
            ids[f"invoice-{key}"] = found
        return ids


@dataclass
class Site:
    http: httpx.AsyncClient
    engine: Engine
    ids: dict[str, int]

    def customer(self, key: str) -> Customer:
        with Session(self.engine) as s:
            found = s.get(Customer, self.ids[key])
            assert found is not None
            return found

    def events(self, key: str) -> list[CustomerEvent]:
        with Session(self.engine) as s:
            stmt = select(CustomerEvent).where(CustomerEvent.customer_id == self.ids[key])
            return list(s.exec(stmt).all())


@pytest.fixture
async def site(engine: Engine, tmp_path: Path) -> AsyncIterator[Site]:
    app = create_app(web_settings(engine, tmp_path), engine=engine, temporal=None)
    ids = seed(engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        yield Site(http=http, engine=engine, ids=ids)


def _names(html: str) -> list[str]:
    return re.findall(r'<a href="/app/customers/\d+">([^<]+)</a>', html)


def _section(html: str, start: str, end: str = "</table>") -> str:
    """The part of ``html`` from ``start`` to the next ``end``."""
    assert start in html, start
    rest = html.split(start, 1)[1]
    return rest.split(end, 1)[0]


# -- the list --------------------------------------------------------------------------------------


async def test_list_searches_filters_and_pages(site: Site) -> None:
    await _login(site.http, "viewer")
    first = await site.http.get("/app/customers")
    assert first.status_code == 200
    assert '<a href="/app/customers" class="active">Customers</a>' in first.text
    assert f"{FILLERS + 4} customers, page 1 of 2" in first.text
    assert len(_names(first.text)) == 25
    second = await site.http.get("/app/customers?page=2")
    assert len(_names(second.text)) == FILLERS + 4 - 25 and "page 2 of 2" in second.text

    async def names(**params: str) -> list[str]:
        resp = await site.http.get("/app/customers", params=params)
        assert resp.status_code == 200, resp.text
        return _names(resp.text)

    # Name, external id or email, any case; % and _ are literal.
    assert await names(q="bergMANN") == ["Bergmann GmbH"]
    assert await names(q="billing@hudson") == ["Hudson Supply Co."]
    assert await names(q="c-paused") == ["Quiet Ltd"]
    assert await names(q="%") == [] and await names(q="F_0") == []
    assert await names(segment="key_account") == ["Hudson Supply Co."]
    assert await names(hold="credit") == ["Risky Traders"]
    assert await names(hold="paused") == ["Quiet Ltd"]
    assert await names(hold="any") == ["Quiet Ltd", "Risky Traders"]
    assert await names(collector="dana reyes") == ["Hudson Supply Co."]
    # Risky: 100 % overdue (20) + 2 broken promises (10) + a broken plan (10) = 40, medium.
    assert await names(risk="medium") == ["Risky Traders"]
    assert await names(risk="high") == []
    assert len(await names(risk="low", q="filler")) == 25
    assert await names(risk="medium", hold="credit", q="risky") == ["Risky Traders"]
    # Filters combine; unknown values are no filter, a huge page is no 500.
    assert await names(q="e", segment="key_account") == ["Hudson Supply Co."]
    assert len(await names(risk="extreme", hold="sometimes")) == 25
    huge = await site.http.get("/app/customers", params={"page": "9" * 30})
    assert huge.status_code == 200 and "page 1 of 2" in huge.text

    # Each row: segment, risk, open and overdue per currency (as money), collector, holds.
    resp = await site.http.get("/app/customers", params={"q": "hudson"})
    row = _section(resp.text, f'data-customer="{site.ids["hudson"]}"', "</tr>")
    assert "key_account" in row and "low · 20" in row and "Dana Reyes" in row
    assert row.count("$2,500.00") == 2  # open and overdue
    quiet = await site.http.get("/app/customers", params={"q": "quiet"})
    row = _section(quiet.text, f'data-customer="{site.ids["quiet"]}"', "</tr>")
    assert "¥250,000" in row and "1 paused" in row
    # htmx asks for the table only (the form's hx-get swaps it and pushes the URL).
    part = await site.http.get(
        "/app/customers", params={"q": "risky"}, headers={"HX-Request": "true"}
    )
    assert part.text.lstrip().startswith('<div id="customer-table">')
    assert "<html" not in part.text and "credit hold" in part.text
    assert 'hx-push-url="true"' in first.text


# -- one customer ----------------------------------------------------------------------------------


async def test_the_page_for_a_specialist_and_for_a_viewer(site: Site) -> None:
    headers = await _login(site.http, "specialist")
    path = f"/app/customers/{site.ids['bergmann']}"
    resp = await site.http.get(path)
    assert resp.status_code == 200, resp.text
    text = resp.text
    for shown in (
        "ap@bergmann.example.com",
        "+4930123456",
        "Hauptstr. 1",
        "Europe/Berlin",
        "there (Europe/Berlin)",
        f'href="/app/invoices/{site.ids["invoice-bergmann"]}"',
        "€2,500.00",
        "Payment behaviour",
        "Credit limit",
    ):
        assert shown in text, shown
    for form in ('id="customer-edit"', 'id="account-pause"', 'id="account-resume"'):
        assert form in text, form
    assert 'value="ap@bergmann.example.com"' in text  # the form is pre-filled
    # The customer's local time beside UTC.
    local = re.search(r'id="customer-local-time">(\d{4}-\d\d-\d\d \d\d:\d\d) (CES?T) there', text)
    assert local, text
    risky = await site.http.get(f"/app/customers/{site.ids['risky']}")
    assert "medium · 40 / 100" in risky.text
    # Contacts with roles: the primary billing contact first, then one added by the API.
    added = await site.http.post(
        f"/v1/customers/{site.ids['bergmann']}/contacts",
        json={"role": "escalation", "name": "Dr. Weber", "email": "cfo@bergmann.example.com"},
        headers={"Authorization": f"Bearer {API_KEYS['specialist']}"},
    )
    assert added.status_code == 201, added.text
    contacts = re.search(
        r'<table id="contacts">(.*?)</table>', (await site.http.get(path)).text, re.S
    )
    assert contacts, "no contacts table"
    rows = re.findall(r"<tr><td>(\w+)", contacts[1])
    assert rows == ["billing", "escalation"]
    assert "cfo@bergmann.example.com" in contacts[1] and "primary" in contacts[1]
    assert "2 broken promise(s) to pay" in risky.text
    assert "On credit hold" in risky.text

    # A specialist corrects the email: the timeline says so, with the addresses.
    resp = await site.http.post(
        f"{path}/edit",
        data={
            "name": "Bergmann GmbH",
            "email": "rechnung@bergmann.example.com",
            "phone": "+4930123456",
            "address": "Hauptstr. 1\n10115 Berlin",
            "timezone": "Europe/Berlin",
            "locale": "en",
            "country": "DE",
            "iban": "",
        },
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    timeline = _section((await site.http.get(path)).text, 'id="customer-timeline"')
    assert "customer_changed" in timeline and "rechnung@bergmann.example.com" in timeline

    # A viewer sees the page, without forms, and the timeline without the addresses.
    await _logout(site.http, headers)
    viewer = await _login(site.http, "viewer")
    resp = await site.http.get(path)
    assert resp.status_code == 200
    assert "actions need the specialist role" in resp.text
    assert 'hx-post="/app/customers/' not in resp.text
    timeline = _section(resp.text, 'id="customer-timeline"')
    assert "customer_changed" in timeline
    assert "email: *** → ***" in timeline
    assert "bergmann.example.com" not in timeline
    refused = await site.http.post(f"{path}/edit", data={"name": "X"}, headers=viewer)
    assert refused.status_code == 403 and "needs the specialist role" in refused.text


async def test_edit_saves_the_details_or_shows_the_errors_by_field(site: Site) -> None:
    headers = await _login(site.http, "specialist")
    path = f"/app/customers/{site.ids['hudson']}"
    page_html = (await site.http.get(path)).text
    form = dict(
        re.findall(r'<input type="text" id="edit-\w+" name="(\w+)" value="([^"]*)"', page_html)
    )
    assert form["email"] == "Billing@Hudson.example.com" and form["timezone"] == "America/New_York"
    form["address"] = ""

    bad = await site.http.post(
        f"{path}/edit",
        data=form | {"email": "not-an-email", "phone": "123", "name": ""},
        headers=headers,
    )
    assert bad.status_code == 422
    for name in ("email", "phone", "name"):
        error = re.search(
            rf'<p class="error field-error" id="edit-{name}-error" role="alert">', bad.text
        )
        assert error, (name, bad.text)
    assert 'value="not-an-email"' in bad.text  # what was typed stays
    assert 'id="edit-timezone-error"' not in bad.text
    unchanged = site.customer("hudson")
    assert (unchanged.email, unchanged.name) == ("Billing@Hudson.example.com", "Hudson Supply Co.")
    assert site.events("hudson") == []

    done = await site.http.post(
        f"{path}/edit", data=form | {"email": "ar@hudson.example.com"}, headers=headers
    )
    assert done.status_code == 200, done.text
    assert "Details saved." in done.text
    assert "Email: Billing@Hudson.example.com → ar@hudson.example.com" in done.text
    assert 'id="customer-timeline" class="timeline" hx-swap-oob="true"' in done.text
    assert '<dd id="customer-email">ar@hudson.example.com</dd>' in done.text
    assert site.customer("hudson").email == "ar@hudson.example.com"
    [event] = site.events("hudson")
    assert event.kind == "customer_changed" and event.actor.startswith("specialist:")
    assert event.data["changes"] == {
        "email": {"from": "Billing@Hudson.example.com", "to": "ar@hudson.example.com"}
    }
    # The same form again changes nothing and records nothing.
    again = await site.http.post(
        f"{path}/edit", data=form | {"email": "ar@hudson.example.com"}, headers=headers
    )
    assert again.status_code == 200 and "Nothing changed." in again.text
    assert len(site.events("hudson")) == 1
    # A new zone reaches the open invoices' workflows: Temporal is not connected in this app,
    # so the change is saved and the invoice is named as pending (the PATCH's own answer).
    zone = await site.http.post(
        f"{path}/edit",
        data=form | {"email": "ar@hudson.example.com", "timezone": "America/Chicago"},
        headers=headers,
    )
    assert zone.status_code == 200, zone.text
    workflows = _section(zone.text, 'id="edit-workflows">', "</p>")
    assert "0 updated" in workflows and "1 pending" in workflows
    assert f"/app/invoices/{site.ids['invoice-hudson']}" in workflows
    assert site.customer("hudson").timezone == "America/Chicago"


async def test_collector_and_contact_block_forms(site: Site) -> None:
    headers = await _login(site.http, "specialist")
    with Session(site.engine) as s:
        create_collector(s, CollectorCreate(name="Ana Silva", email="ana@ar.example.com"))
        contacts.block(s, site.ids["bergmann"], "email", "bounced", "sendgrid", "ap@bergmann")
        s.commit()
    path = f"/app/customers/{site.ids['bergmann']}"
    page_html = (await site.http.get(path)).text
    assert 'id="block-email"' in page_html and "bounced" in page_html

    unknown = await site.http.post(
        f"{path}/collector", data={"assigned_collector": "Nobody Known"}, headers=headers
    )
    assert unknown.status_code == 422
    assert 'id="assigned-collector-error" role="alert"' in unknown.text
    assert site.customer("bergmann").assigned_collector is None
    ok = await site.http.post(
        f"{path}/collector", data={"assigned_collector": "ana@ar.example.com"}, headers=headers
    )
    assert ok.status_code == 200, ok.text
    assert "Collector saved." in ok.text and "collector ana@ar.example.com" in ok.text
    assert site.customer("bergmann").assigned_collector == "ana@ar.example.com"
    assert [e.kind for e in site.events("bergmann")] == ["profile_updated"]

    removed = await site.http.post(f"{path}/contact-blocks/email/remove", data={}, headers=headers)
    assert removed.status_code == 200, removed.text
    assert (
        "The email block is removed." in removed.text and "Every channel is open." in removed.text
    )
    with Session(site.engine) as s:
        assert contacts.list_blocks(s, site.ids["bergmann"]) == []
    again = await site.http.post(f"{path}/contact-blocks/email/remove", data={}, headers=headers)
    assert again.status_code == 404 and 'role="alert"' in again.text


async def test_portal_link_made_and_revoked_from_the_customer_page(site: Site) -> None:
    headers = await _login(site.http, "specialist")
    path = f"/app/customers/{site.ids['bergmann']}"
    assert 'id="customer-portal"' in (await site.http.get(path)).text
    made = await site.http.post(f"{path}/portal-link", data={}, headers=headers)
    assert made.status_code == 200, made.text
    url = made.text.split('id="portal-link-url" readonly value="')[1].split('"')[0]
    portal = url.split("/portal/", 1)[1]
    assert (await site.http.get(f"/portal/{portal}")).status_code == 200
    empty = await site.http.post(f"{path}/portal-revoke", data={"reason": ""}, headers=headers)
    assert empty.status_code == 422 and 'id="portal-revoke-error"' in empty.text
    with Session(site.engine) as s:  # the link was made a second ago: revoke from now on
        row = s.get(Customer, site.ids["bergmann"])
        assert row is not None and row.portal_links_from is None
    revoked = await site.http.post(
        f"{path}/portal-revoke", data={"reason": "sent to the wrong address"}, headers=headers
    )
    assert revoked.status_code == 200 and "Revoked" in revoked.text
    kinds = [e.kind for e in site.events("bergmann")]
    assert kinds.count("portal_link_made") == 1 and kinds.count("portal_links_revoked") == 1
    assert site.customer("bergmann").portal_links_from is not None
    # a viewer has no such actions
    await _logout(site.http, headers)
    viewer = await _login(site.http, "viewer")
    refused = await site.http.post(f"{path}/portal-link", data={}, headers=viewer)
    assert refused.status_code == 403


async def test_unknown_customers_huge_ids_and_csrf(site: Site) -> None:
    # Signed out: the login page, and back here afterwards.
    resp = await site.http.get("/app/customers?q=berg")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/app/login?next=%2Fapp%2Fcustomers%3Fq%3Dberg"
    headers = await _login(site.http, "specialist")
    missing = await site.http.get("/app/customers/9999")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert "customer 9999 not found" in missing.text
    for path in ("/app/customers/99999999999999999999", "/app/customers/2147483648"):
        resp = await site.http.get(path)
        assert resp.status_code == 422, (path, resp.text)
    assert (await site.http.get("/app/customers/abc")).status_code == 422
    for action in ("edit", "pause", "collector"):
        resp = await site.http.post(
            f"/app/customers/9999/{action}", data={"name": "X", "reason": "x"}, headers=headers
        )
        assert resp.status_code == 404, (action, resp.text)
        resp = await site.http.post(
            f"/app/customers/{'9' * 25}/{action}", data={"reason": "x"}, headers=headers
        )
        assert resp.status_code == 422, (action, resp.text)

    path = f"/app/customers/{site.ids['bergmann']}"
    data = {"name": "Forged GmbH", "timezone": "UTC", "locale": "en"}
    no_token = await site.http.post(f"{path}/edit", data=data)
    forged = await site.http.post(f"{path}/edit", data=data, headers={"X-CSRF-Token": "forged"})
    for resp in (no_token, forged):
        assert resp.status_code == 403 and "security token" in resp.text
    pause = await site.http.post(f"{path}/pause", data={"reason": "x"})
    assert pause.status_code == 403
    assert site.customer("bergmann").name == "Bergmann GmbH"
    assert site.events("bergmann") == []


# -- the account's pause and resume: a worker on the time-skipping server --------------------------


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


async def _job_done(h: Harness, html: str) -> str:
    """Follow the job in ``html`` as its fragment does (GET /app/jobs/{id}) until it is done."""
    found = re.search(r'id="job-(\d+)"', html)
    assert found, html
    for _ in range(300):
        resp = await h.http.get(f"/app/jobs/{found[1]}", headers={"HX-Request": "true"})
        if 'job-status badge status-done">done<' in resp.text:
            return resp.text
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {found[1]} did not finish: {resp.text}")


async def test_pause_and_resume_the_account_as_a_job(h: Harness) -> None:
    customer = await h.customer()
    invoices = [await h.invoice(customer["id"]) for _ in range(2)]
    idle = await h.customer(name="Idle AG")
    headers = await _login(h.http, "specialist")
    path = f"/app/customers/{customer['id']}"
    page_html = (await h.http.get(path)).text
    for inv in invoices:
        assert f'href="/app/invoices/{inv["id"]}"' in page_html

    empty = await h.http.post(f"{path}/pause", data={"reason": ""}, headers=headers)
    assert empty.status_code == 422 and 'class="error field-error" role="alert"' in empty.text
    nothing = await h.http.post(
        f"/app/customers/{idle['id']}/pause", data={"reason": "holiday"}, headers=headers
    )
    assert nothing.status_code == 422 and "has no open invoice to pause" in nothing.text

    paused = await h.http.post(f"{path}/pause", data={"reason": "holiday"}, headers=headers)
    assert paused.status_code == 202, paused.text
    assert 'id="account-pause"' in paused.text and "Account pause" in paused.text
    done = await _job_done(h, paused.text)
    assert "2 of 2 done: 2 applied" in done
    for inv in invoices:
        assert (await h.get(f"/v1/invoices/{inv['id']}")).json()["hold"] == "paused"
    listed = await h.http.get("/app/customers", params={"hold": "paused"})
    assert _names(listed.text) == ["Acme GmbH"]

    resumed = await h.http.post(f"{path}/resume", data={"reason": ""}, headers=headers)
    assert resumed.status_code == 202, resumed.text
    assert "2 of 2 done: 2 applied" in await _job_done(h, resumed.text)
    for inv in invoices:
        assert (await h.get(f"/v1/invoices/{inv['id']}")).json()["hold"] is None
    timeline = _section((await h.http.get(path)).text, 'id="customer-timeline"')
    assert timeline.index("account_resumed") < timeline.index("account_paused")  # newest first


# -- the browser: search, open, edit, see it on the page and the timeline --------------------------


def test_browser_search_open_and_edit_a_customer(live: Live, page: Page) -> None:
    expect.set_options(timeout=15_000)
    refused: list[str] = []  # what the Content-Security-Policy blocked (inline script/style)
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{live.url}/app/customers")
    page.fill("input[name=api_key]", API_KEYS["specialist"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Customers")
    rows = page.locator("#customer-table tbody tr")
    expect(rows).to_have_count(2)
    shot(page, "customers-01-list")

    page.fill("input[name=q]", "hudson")
    page.press("input[name=q]", "Enter")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/app/customers\?q=hudson"))
    expect(rows.first).to_contain_text("Hudson Supply Co.")
    page.click("#customer-table >> text=Hudson Supply Co.")
    expect(page.locator("h1")).to_contain_text("Hudson Supply Co.")
    expect(page.locator("#customer-email")).to_have_text("ap@hudson.example.com")
    expect(page.locator("#open-invoices tbody tr")).to_have_count(3)
    shot(page, "customers-02-page")

    form = page.locator("#customer-edit")
    form.locator("input[name=email]").fill("not-an-email")
    form.locator("button").click()
    expect(page.locator("#edit-email-error")).to_contain_text("not a valid email address")
    expect(page.locator("#customer-email")).to_have_text("ap@hudson.example.com")
    page.locator("#customer-edit input[name=email]").fill("billing@hudson.example.com")
    page.locator("#customer-edit button").click()
    expect(page.locator("#customer-edit .ok")).to_contain_text("Details saved.")
    expect(page.locator("#customer-email")).to_have_text("billing@hudson.example.com")
    changed = page.locator("#customer-timeline tr.event-customer_changed")
    expect(changed).to_have_count(1)
    expect(changed).to_contain_text("ap@hudson.example.com → billing@hudson.example.com")
    shot(page, "customers-03-edited")
    page.reload()
    expect(page.locator("#customer-email")).to_have_text("billing@hudson.example.com")
    expect(page.locator("#customer-timeline tr.event-customer_changed")).to_have_count(1)
    assert refused == []
