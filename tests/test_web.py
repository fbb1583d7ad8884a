"""The web dashboard at /app.

Plain HTTP tests (httpx over ASGI, no Temporal needed): login required, a bad key, CSRF,
roles, 404. Then a browser scenario: Playwright driving Debian's Chromium against a real
uvicorn server (in a background thread, with its own Temporal client and a worker) on the
Temporal dev server. Screenshots go to ``artifacts/screenshots/``.

Without Chromium the browser test is skipped, except in CI (``CI`` set) where it fails:
``make test`` installs Chromium first (the Playwright browser download cannot work here).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api import charts
from api.app import create_app
from arflow.config import Settings
from arflow.db import make_engine
from arflow.migrate import upgrade
from arflow.policies import service as policies
from arflow.reports import dashboard
from models import Customer, Dispute, Invoice, InvoiceEvent, OutboxMessage, Promise, Task
from models.policy import DEFAULT_POLICY
from tests.conftest import API_KEYS, ROOT, WEBHOOK_SECRET, _terminate_all
from worker import build_worker

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
CSRF_IN_PAGE = re.compile(r'"X-CSRF-Token": "([^"]+)"')
CSRF_IN_FORM = re.compile(r'name="csrf_token" value="([^"]+)"')


def web_settings(engine: Engine, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": str(engine.url),
        "task_queue": f"tq-{uuid.uuid4()}",
        "workflow_id_prefix": f"w{uuid.uuid4().hex[:8]}-",
        "workflow_sandbox_passthrough": False,
        "api_keys": ",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        "webhook_secret": WEBHOOK_SECRET,
        "session_secret": "test-session-secret",
        "data_dir": str(tmp_path / "data"),
    } | overrides
    return Settings(**values)


# -- plain HTTP: no browser, no Temporal ----------------------------------------------------------


@dataclass
class Web:
    http: httpx.AsyncClient
    engine: Engine
    invoice_id: int

    async def login(self, role: str, next_url: str = "/app") -> str:
        """Sign in with the role's key; answers the session's CSRF token."""
        form = await self.http.get("/app/login")
        token = CSRF_IN_FORM.search(form.text)
        assert token, form.text
        resp = await self.http.post(
            "/app/login",
            data={"api_key": API_KEYS[role], "csrf_token": token[1], "next": next_url},
        )
        assert resp.status_code == 303, resp.text
        assert resp.headers["location"] == next_url
        page = await self.http.get("/app/worklist")
        assert page.status_code == 200, page.text
        found = CSRF_IN_PAGE.search(page.text)
        assert found, page.text
        return found[1]

    def notes(self) -> list[InvoiceEvent]:
        with Session(self.engine) as s:
            stmt = select(InvoiceEvent).where(
                InvoiceEvent.invoice_id == self.invoice_id, InvoiceEvent.kind == "note"
            )
            return list(s.exec(stmt).all())


def seed_invoice(engine: Engine) -> int:
    """One customer and one open invoice, written straight to the database."""
    with Session(engine) as s:
        policy = policies.ensure_default_policy(s)
        customer = Customer(external_id="C-1", name="Bergmann GmbH", timezone="Europe/Berlin")
        s.add(customer)
        s.flush()
        assert customer.id is not None and policy.id is not None
        today = datetime.now(UTC).date()
        invoice = Invoice(
            external_id="INV-1",
            number="2026-0001",
            currency="EUR",
            issued_on=today - timedelta(days=40),
            due_date=today - timedelta(days=10),
            due_at=datetime.combine(today - timedelta(days=10), datetime.min.time(), UTC),
            customer_id=customer.id,
            policy_id=policy.id,
            amount_minor=120_000,
            balance_minor=120_000,
            request_hash="x" * 64,
        )
        s.add(invoice)
        s.commit()
        assert invoice.id is not None
        return invoice.id


@pytest.fixture
async def web(sqlite_engine: Engine, tmp_path: Path) -> AsyncIterator[Web]:
    app = create_app(web_settings(sqlite_engine, tmp_path), engine=sqlite_engine, temporal=None)
    invoice_id = seed_invoice(sqlite_engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        yield Web(http=http, engine=sqlite_engine, invoice_id=invoice_id)


async def test_pages_need_a_login_and_return_to_the_page_asked_for(web: Web) -> None:
    for path in ("/app", "/app/invoices?status=open", "/app/worklist", "/app/invoices/1"):
        resp = await web.http.get(path)
        assert resp.status_code == 303, path
        assert resp.headers["location"].startswith("/app/login?next=%2Fapp"), resp.headers
    # htmx requests get a full-page redirect instead of a login form inside a fragment.
    resp = await web.http.get("/app/invoices", headers={"HX-Request": "true"})
    assert resp.headers["HX-Redirect"] == "/app/login?next=%2Fapp%2Finvoices"
    await web.login("viewer", next_url="/app/invoices?status=open")
    page = await web.http.get("/app/invoices?status=open")
    assert page.status_code == 200
    assert "2026-0001" in page.text


async def test_a_bad_key_is_refused(web: Web) -> None:
    form = await web.http.get("/app/login")
    token = CSRF_IN_FORM.search(form.text)
    assert token
    resp = await web.http.post(
        "/app/login", data={"api_key": "not-a-key", "csrf_token": token[1], "next": "/app"}
    )
    assert resp.status_code == 401
    assert "unknown API key" in resp.text
    assert (await web.http.get("/app")).status_code == 303  # still signed out
    # An outside address in next is not followed after a good login.
    resp = await web.http.post(
        "/app/login",
        data={"api_key": API_KEYS["viewer"], "csrf_token": token[1], "next": "//evil.example"},
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/app"


async def test_posts_without_the_session_csrf_token_are_refused(web: Web) -> None:
    # The login form itself needs the token of the session that showed it.
    resp = await web.http.post("/app/login", data={"api_key": API_KEYS["specialist"]})
    assert resp.status_code == 403
    token = await web.login("specialist")
    path = f"/app/invoices/{web.invoice_id}/note"
    missing = await web.http.post(path, data={"text": "called the customer"})
    wrong = await web.http.post(
        path, data={"text": "called the customer"}, headers={"X-CSRF-Token": "forged"}
    )
    for resp in (missing, wrong):
        assert resp.status_code == 403
        assert "security token" in resp.text
    assert web.notes() == []
    ok = await web.http.post(
        path,
        data={"text": "called the customer", "idempotency_key": "k1"},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert ok.status_code == 200, ok.text
    assert "Note added." in ok.text
    assert 'id="timeline"' in ok.text and "hx-swap-oob" in ok.text
    notes = web.notes()
    assert [(n.data["text"], n.actor.split(":")[0]) for n in notes] == [
        ("called the customer", "specialist")
    ]
    # The same form sent twice (a double click) adds the note once.
    again = await web.http.post(
        path,
        data={"text": "called the customer", "idempotency_key": "k1"},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert again.status_code == 200
    assert len(web.notes()) == 1
    # Logging out needs the token as well.
    assert (await web.http.post("/app/logout")).status_code == 403
    out = await web.http.post("/app/logout", data={"csrf_token": token})
    assert out.status_code == 303
    assert (await web.http.get("/app")).status_code == 303


async def test_a_viewer_sees_but_cannot_act(web: Web) -> None:
    token = await web.login("viewer")
    page = await web.http.get(f"/app/invoices/{web.invoice_id}")
    assert page.status_code == 200
    assert "actions need the specialist role" in page.text
    assert 'hx-post="/app/invoices/' not in page.text
    assert "Workflow history" not in page.text  # admins only
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    for action, data in (
        ("note", {"text": "hello"}),
        ("dispute", {"reason": "damaged"}),
        ("send-now", {}),
    ):
        resp = await web.http.post(
            f"/app/invoices/{web.invoice_id}/{action}", data=data, headers=headers
        )
        assert resp.status_code == 403, action
        assert "this action needs the specialist role" in resp.text
    jobs = await web.http.post("/app/jobs", data={"invoice_id": "1"}, headers=headers)
    assert jobs.status_code == 403
    history = await web.http.get(f"/app/invoices/{web.invoice_id}/history")
    assert history.status_code == 403
    assert web.notes() == []


async def test_an_unknown_invoice_is_a_404_page(web: Web) -> None:
    await web.login("admin")
    resp = await web.http.get("/app/invoices/9999")
    assert resp.status_code == 404
    assert "text/html" in resp.headers["content-type"]
    assert "invoice 9999 not found" in resp.text


async def test_action_errors_are_shown_in_the_form_not_as_a_500(web: Web) -> None:
    token = await web.login("specialist")
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    path = f"/app/invoices/{web.invoice_id}"
    bad_amount = await web.http.post(
        f"{path}/promise",
        data={"promised_date": "2030-01-01", "amount": "12.345"},
        headers=headers,
    )
    assert bad_amount.status_code == 422
    assert "EUR allows 2" in bad_amount.text
    assert 'value="12.345"' in bad_amount.text  # what was typed stays in the form
    no_reason = await web.http.post(f"{path}/dispute", data={"reason": ""}, headers=headers)
    assert no_reason.status_code == 422
    assert "reason" in no_reason.text
    # Temporal is not connected in this app: a 503 with the reason, inline.
    down = await web.http.post(f"{path}/dispute", data={"reason": "damaged"}, headers=headers)
    assert down.status_code == 503
    assert "Temporal" in down.text
    unknown = await web.http.post(f"{path}/explode", data={}, headers=headers)
    assert unknown.status_code == 404


async def test_overview_and_worklist_render_for_a_viewer(web: Web) -> None:
    await web.login("viewer")
    overview = await web.http.get("/app")
    assert overview.status_code == 200
    assert overview.text.count("<svg") == 2  # the EUR aging chart and the DSO trend
    assert "Open disputes" in overview.text
    worklist = await web.http.get("/app/worklist")
    assert worklist.status_code == 200
    assert "No broken promise." in worklist.text
    static = await web.http.get("/app/static/htmx.min.js")
    assert static.status_code == 200
    assert static.text.startswith("var htmx=")


async def test_worklist_shows_tasks_overdue_disputes_and_broken_promises(web: Web) -> None:
    now = datetime.now(UTC)
    with Session(web.engine) as s:
        dispute = Dispute(
            invoice_id=web.invoice_id,
            status="open",
            reason="wrong quantity",
            opened_by="specialist:abc",
            opened_at=now - timedelta(days=20),
            sla_at=now - timedelta(days=6),
        )
        s.add(dispute)
        s.flush()
        s.add(
            Task(
                invoice_id=web.invoice_id,
                kind="dispute_overdue",
                due_at=dispute.sla_at,
                data={"dispute_id": dispute.id},
            )
        )
        for promised, amount, broken_ago in ((10, 30_000, 7), (3, 45_000, 1)):
            s.add(
                Promise(
                    invoice_id=web.invoice_id,
                    status="broken",
                    promised_date=(now - timedelta(days=promised)).date(),
                    amount_minor=amount,
                    created_by="specialist:abc",
                    updated_at=now - timedelta(days=broken_ago),
                )
            )
        s.commit()
    await web.login("viewer")
    page = await web.http.get("/app/worklist")
    assert page.status_code == 200
    assert "dispute_overdue" in page.text and "wrong quantity" in page.text
    broken = page.text.split('id="broken-promises"', 1)[1]
    assert broken.index("€450.00") < broken.index("€300.00")  # the latest broken first
    overview = await web.http.get("/app")
    assert re.search(r"Open disputes</div>\s*<div class=\"value\">1<", overview.text)


def test_chart_geometry() -> None:
    assert [charts.nice_ceiling(v) for v in (0, 0.7, 1, 3, 12, 37.5, 101)] == [
        1,
        1,
        1,
        5,
        20,
        50,
        200,
    ]
    bars = charts.bar_chart(["a", "b", "c"], [0, 50, 100], ["0", "50", "100"]).bars
    assert [b.height for b in bars][0] == 0 and bars[2].height == 2 * bars[1].height
    line = charts.line_chart(["m1", "m2", "m3"], {"EUR": [None, None, None]})
    assert line.series[0].paths == []
    assert dashboard.month_starts(date(2026, 2, 15), 3) == [
        date(2025, 12, 1),
        date(2026, 1, 1),
        date(2026, 2, 1),
    ]


# -- the browser scenario: real HTTP, the dev server, a worker -------------------------------------


class LiveServer(threading.Thread):
    """uvicorn serving the app, and a worker, in their own event loop and Temporal client."""

    def __init__(self, settings: Settings, engine: Engine, temporal_address: str) -> None:
        super().__init__(name="arflow-live-server", daemon=True)
        self.settings, self.engine, self.address = settings, engine, temporal_address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.server: uvicorn.Server | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.error = exc
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        client = await Client.connect(self.address, namespace=self.settings.temporal_namespace)
        app = create_app(self.settings, engine=self.engine, temporal=client)
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        async with build_worker(client, self.settings, self.engine):
            serving = asyncio.create_task(self.server.serve(sockets=[self.sock]))
            while not self.server.started and not serving.done():
                await asyncio.sleep(0.02)
            self.ready.set()
            await serving
            await _terminate_all(client, self.engine, self.settings, wait_for_start=True)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.join(timeout=30)


@dataclass
class Live:
    url: str
    engine: Engine
    ids: dict[str, int]

    def outbox(self, invoice_id: int) -> list[OutboxMessage]:
        with Session(self.engine) as s:
            stmt = select(OutboxMessage).where(OutboxMessage.invoice_id == invoice_id)
            return list(s.exec(stmt).all())


def chromium() -> str:
    """Debian's Chromium, or a skip (a failure in CI) when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = (
        "Chromium is not installed, so the browser tests cannot run; "
        "`make test` installs it (apt-get install chromium)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}. CI must run them.")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    return chromium()


@pytest.fixture(scope="module")
def live(
    chromium_path: str, dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """The app over real HTTP on the dev server, with demo-like data created through the API."""
    tmp = tmp_path_factory.mktemp("web")
    engine = make_engine(f"sqlite:///{tmp / 'arflow.db'}")
    upgrade(engine)
    settings = web_settings(engine, tmp)
    server = LiveServer(settings, engine, dev_env.client.service_client.config.target_host)
    server.start()
    server.ready.wait(timeout=60)
    if server.error is not None:
        raise server.error
    try:
        ids = seed_through_the_api(server.url)
        yield Live(url=server.url, engine=engine, ids=ids)
    finally:
        server.stop()
        engine.dispose()


def seed_through_the_api(url: str) -> dict[str, int]:
    """Two customers and six invoices, as a specialist would enter them: two overdue, and one
    under a policy whose disputes are due for resolution in 2 s, disputed (so that the
    worklist has an overdue dispute a few seconds later)."""
    today = datetime.now(UTC).date()
    auth = {"Authorization": f"Bearer {API_KEYS['specialist']}"}
    ids: dict[str, int] = {}
    fast_sla = f"fast-sla-{uuid.uuid4().hex[:6]}"
    # The default policy with no contact window: the bulk send-now below must not depend on
    # the hour the suite runs at (at 21:28 in Berlin the default window refuses it).
    anytime = f"anytime-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        resp = http.post(
            "/v1/policies",
            json=DEFAULT_POLICY.model_copy(
                update={"name": anytime, "contact_window": None}
            ).model_dump(mode="json"),
            headers={"Authorization": f"Bearer {API_KEYS['admin']}"},
        )
        assert resp.status_code == 201, resp.text
        resp = http.post(
            "/v1/policies",
            json={
                "name": fast_sla,
                "send_at": None,
                "steps": [
                    {"key": "before_due", "offset": "-P3D"},
                    {"key": "late", "offset": "P7D"},
                ],
                "escalate_after": "P45D",
                "dispute_sla": "PT2S",
            },
            headers={"Authorization": f"Bearer {API_KEYS['admin']}"},
        )
        assert resp.status_code == 201, resp.text
        for key, name, zone in (
            ("bergmann", "Bergmann Maschinenbau GmbH", "Europe/Berlin"),
            ("hudson", "Hudson Supply Co.", "America/New_York"),
        ):
            resp = http.post(
                "/v1/customers",
                json={
                    "external_id": f"C-{key}-{uuid.uuid4().hex[:6]}",
                    "name": name,
                    "email": f"ap@{key}.example.com",
                    "timezone": zone,
                    "locale": "en",
                },
            )
            assert resp.status_code == 201, resp.text
            ids[key] = resp.json()["id"]
        for number, customer, currency, amount, issued_ago, due_in, policy in (
            ("A-1001", "bergmann", "EUR", 120_000, 5, 25, anytime),
            ("A-1002", "bergmann", "EUR", 45_000, 2, 28, anytime),
            ("A-0917", "bergmann", "EUR", 98_000, 45, -15, "default"),
            ("B-2001", "hudson", "USD", 250_000, 10, 20, "default"),
            ("B-1730", "hudson", "USD", 30_000, 70, -40, "default"),
            ("C-3001", "hudson", "USD", 75_000, 3, 27, fast_sla),
        ):
            resp = http.post(
                "/v1/invoices",
                json={
                    "external_id": f"{number}-{uuid.uuid4().hex[:6]}",
                    "number": number,
                    "customer_id": ids[customer],
                    "amount_minor": amount,
                    "currency": currency,
                    "issued_on": (today - timedelta(days=issued_ago)).isoformat(),
                    "due_date": (today + timedelta(days=due_in)).isoformat(),
                    "policy_name": policy,
                },
            )
            assert resp.status_code == 201, resp.text
            ids[number] = resp.json()["id"]
        resp = http.post(
            f"/v1/invoices/{ids['C-3001']}/disputes", json={"reason": "price differs from quote"}
        )
        assert resp.status_code == 200, resp.text
    return ids


@pytest.fixture
def page(chromium_path: str) -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        try:
            yield context.new_page()
        finally:
            browser.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_browser_login_filter_dispute_and_bulk_send(live: Live, page: Page) -> None:
    expect.set_options(timeout=15_000)
    refused: list[str] = []  # what the Content-Security-Policy blocked (inline script/style)
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{live.url}/app")
    expect(page).to_have_url(re.compile(r"/app/login\?next=%2Fapp$"))
    shot(page, "01-login")
    page.fill("input[name=api_key]", "wrong-key")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("unknown API key")
    page.fill("input[name=api_key]", API_KEYS["admin"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Overview")
    expect(page.locator("svg.chart")).to_have_count(3)  # aging EUR and USD, DSO trend
    shot(page, "02-overview")

    # The invoice table, filtered by customer (htmx swaps the table and pushes the URL).
    page.click("nav >> text=Invoices")
    rows = page.locator("#invoice-table tbody tr")
    expect(rows).to_have_count(6)
    page.select_option("select[name=customer_id]", label="Hudson Supply Co.")
    expect(rows).to_have_count(3)
    expect(page).to_have_url(re.compile(rf"customer_id={live.ids['hudson']}"))
    expect(page.locator("#invoice-table")).to_contain_text("B-2001")
    page.select_option("select[name=overdue]", value="yes")
    expect(rows).to_have_count(1)
    expect(page.locator("#invoice-table")).to_contain_text("B-1730")
    shot(page, "03-invoices-filtered")
    page.select_option("select[name=overdue]", value="")
    expect(rows).to_have_count(3)

    # One invoice: open a dispute from its page; the timeline gains the event row.
    page.click("#invoice-table >> text=B-2001")
    expect(page.locator("h1")).to_contain_text("Invoice B-2001")
    expect(page.locator("#invoice-status")).to_have_text("open")
    expect(page.locator("#timeline tr.event-dispute_opened")).to_have_count(0)
    form = page.locator("#action-dispute")
    form.locator("input[name=reason]").fill("two pallets arrived damaged")
    form.locator("input[name=amount]").fill("400.00")
    form.locator("button").click()
    expect(page.locator("#action-dispute .ok")).to_have_text("Dispute opened.")
    expect(page.locator("#timeline tr.event-dispute_opened")).to_have_count(1)
    expect(page.locator("#timeline tr.event-dispute_opened")).to_contain_text(
        "two pallets arrived damaged"
    )
    expect(page.locator("#invoice-status")).to_have_text("disputed")
    # A second dispute is refused by the workflow: the API's 409 message, in the form.
    page.locator("#action-dispute input[name=reason]").fill("again")
    page.locator("#action-dispute button").click()
    expect(page.locator("#action-dispute .error")).to_contain_text("already has an open dispute")
    expect(page.locator("#timeline tr.event-dispute_opened")).to_have_count(1)
    # Admins see the workflow's history, with the update and who sent it.
    expect(page.locator("#history table")).to_contain_text("Update open_dispute")
    shot(page, "04-invoice-disputed")

    # Bulk: select two invoices and send their next reminder now; the job runs to done.
    page.goto(f"{live.url}/app/invoices")
    boxes = page.locator("#invoice-table input[name=invoice_id]")
    page.check("input[data-select-all]")  # api/static/app.js, not an inline handler
    expect(boxes.and_(page.locator(":checked"))).to_have_count(6)
    page.uncheck("input[data-select-all]")
    expect(boxes.and_(page.locator(":checked"))).to_have_count(0)
    page.check(f"input[name=invoice_id][value='{live.ids['A-1001']}']")
    page.check(f"input[name=invoice_id][value='{live.ids['A-1002']}']")
    page.click("#send-selected")
    expect(page.locator(".job-status")).to_have_text("done", timeout=60_000)
    expect(page.locator(".job-counts")).to_contain_text("2 of 2 done: 2 sent")
    shot(page, "05-bulk-send-done")
    for number in ("A-1001", "A-1002"):
        assert [m.step_key for m in live.outbox(live.ids[number])] == ["before_due"]

    # The worklist: C-3001's dispute passed its 2-second deadline during the scenario.
    page.click("nav >> text=Worklist")
    expect(page.locator("h1")).to_have_text("Worklist")
    expect(page.locator("#tasks")).to_contain_text("dispute_overdue")
    expect(page.locator("#tasks")).to_contain_text("C-3001")
    expect(page.locator("#overdue-disputes")).to_contain_text("price differs from quote")
    shot(page, "06-worklist")
    page.goto(f"{live.url}/app/invoices/{live.ids['A-1001']}")
    expect(page.locator("#messages details")).to_have_count(1)
    shot(page, "07-invoice-after-send")
    assert refused == []


def test_browser_close_a_task_and_resolve_a_dispute(live: Live, page: Page) -> None:
    """From the worklist, close a task with an outcome; from the invoice page, resolve the
    open dispute (C-3001's, past its 2-second deadline)."""
    expect.set_options(timeout=15_000)
    page.goto(f"{live.url}/app/login")
    page.fill("input[name=api_key]", API_KEYS["specialist"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Overview")
    page.click("nav >> text=Worklist")
    row = page.locator("#tasks tr", has_text="dispute_overdue").first
    expect(row).to_contain_text("C-3001")
    expect(row.locator(".priority")).to_contain_text("likely to be paid")
    row.locator(".task-close select[name=outcome]").select_option("no_action_needed")
    row.locator(".task-close input[name=note]").fill("customer called back")
    row.locator(".task-close button").click()
    done = page.locator("#tasks tr", has_text="customer called back")
    expect(done).to_contain_text("done: no_action_needed")
    shot(page, "08-worklist-task-closed")

    page.goto(f"{live.url}/app/invoices/{live.ids['C-3001']}")
    form = page.locator("#action-resolve-dispute")
    form.locator("input[value=rejected]").check()
    form.locator("input[name=note]").fill("price matches the signed quote")
    form.locator("button").click()
    expect(page.locator("#action-resolve-dispute .ok")).to_have_text("Dispute resolved.")
    expect(page.locator("#timeline tr.event-dispute_rejected")).to_have_count(1)
    expect(page.locator("#invoice-status")).to_have_text("open")
    shot(page, "09-dispute-resolved")
