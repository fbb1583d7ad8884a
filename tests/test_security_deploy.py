"""Deployment and authentication hardening (issue 15): fail-closed settings, the metrics and
docs endpoints, security headers on HTML pages, dashboard session lifetime and revocation,
the limit on failed sign-ins, byte-wise secret comparison and the link secret with key ids.

No Temporal needed: the app runs over ASGI with ``temporal=None``."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from api import web
from api.app import create_app
from api.security import FailureLimiter
from arflow import cli
from arflow.config import DEFAULT_API_KEYS, Settings
from arflow.customers.unsubscribe import unsubscribe_token
from arflow.errors import Unauthenticated
from arflow.payments.signatures import verify_signature
from models.reference import payment_reference
from tests.conftest import API_KEYS, PRODUCTION
from tests.test_web import CSRF_IN_FORM, seed_invoice

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "api" / "templates"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ARFLOW_* from the caller (conftest sets ARFLOW_ENVIRONMENT=test) and no .env."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"ARFLOW_{name.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)


def production(engine: Engine, **overrides: Any) -> Settings:
    return Settings(**(PRODUCTION | {"database_url": str(engine.url)} | overrides))


async def client_for(
    settings: Settings, engine: Engine, address: str = "10.0.0.1"
) -> httpx.AsyncClient:
    app = create_app(settings, engine=engine, temporal=None)
    transport = httpx.ASGITransport(app=app, client=(address, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://arflow.test")


@pytest.fixture
async def prod(sqlite_engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(production(sqlite_engine), sqlite_engine) as http:
        yield http


async def login(http: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await http.get("/app/login")
    token = CSRF_IN_FORM.search(form.text)
    assert token, form.text
    return await http.post(
        "/app/login", data={"api_key": key, "csrf_token": token[1], "next": "/app/worklist"}
    )


# -- 2. fail closed --------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_settings_default_to_production_and_refuse_development_or_short_secrets() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "ARFLOW_WEBHOOK_SECRET must be set" in str(refused.value)
    assert "secrets.token_urlsafe(32)" in str(refused.value)
    assert Settings(**PRODUCTION).environment == "production"
    assert Settings(**{k: v for k, v in PRODUCTION.items() if k != "environment"}).environment == (
        "production"
    )
    for name in ("webhook_secret", "session_secret", "link_secret"):
        with pytest.raises(ValidationError, match=f"ARFLOW_{name.upper()} is shorter than 32"):
            Settings(**PRODUCTION | {name: "x" * 31})
    with pytest.raises(ValidationError, match="ARFLOW_API_KEYS: a viewer key is shorter"):
        Settings(**PRODUCTION | {"api_keys": PRODUCTION["api_keys"] + ",short-key:viewer"})
    with pytest.raises(ValidationError, match="development admin key"):
        Settings(**PRODUCTION | {"api_keys": "dev-admin-key:admin"})
    with pytest.raises(ValidationError, match="ARFLOW_API_KEYS must be set"):
        Settings(**PRODUCTION | {"api_keys": DEFAULT_API_KEYS})
    # development and test keep their short defaults
    assert Settings(environment="development").webhook_secret.startswith("dev-")


@pytest.mark.usefixtures("clean_env")
def test_arflow_run_runs_its_stack_in_development_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli._development_unless_set()
    assert Settings().environment == "development"  # the dev keys are accepted again
    monkeypatch.setenv("ARFLOW_ENVIRONMENT", "staging")
    cli._development_unless_set()
    assert Settings(**PRODUCTION | {"environment": "staging"}).environment == "staging"
    monkeypatch.delenv("ARFLOW_ENVIRONMENT")
    (tmp_path / ".env").write_text("ARFLOW_ENVIRONMENT=production\n")
    cli._development_unless_set()
    with pytest.raises(ValidationError, match="must be set"):
        Settings()


# -- 3. metrics and docs ---------------------------------------------------------------------------


def _method_labels() -> set[str]:
    return {
        s.labels["method"]
        for metric in REGISTRY.collect()
        if metric.name == "arflow_http_requests"
        for s in metric.samples
    }


async def test_unknown_http_methods_are_counted_as_other(sqlite_engine: Engine) -> None:
    settings = Settings(environment="test", database_url=str(sqlite_engine.url))
    odd = f"X{secrets.token_hex(4).upper()}"
    async with await client_for(settings, sqlite_engine) as http:
        await http.request(odd, "/healthz")
        metrics = await http.get("/metrics")  # served openly in test (no token set)
    assert metrics.status_code == 200
    assert odd not in _method_labels()
    assert "OTHER" in _method_labels()


async def test_metrics_need_the_token_and_production_hides_them_and_the_docs(
    sqlite_engine: Engine,
) -> None:
    async with await client_for(production(sqlite_engine), sqlite_engine) as http:
        assert (await http.get("/metrics")).status_code == 404  # no token: not served
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.get("/healthz")).status_code == 200
    token = secrets.token_urlsafe(32)
    settings = production(sqlite_engine, metrics_token=token, api_docs=True)
    async with await client_for(settings, sqlite_engine) as http:
        refused = await http.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        odd = await http.get("/metrics", headers={b"Authorization": "Bearer é".encode("latin-1")})
        assert odd.status_code == 401
        served = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert served.status_code == 200 and "arflow_http_requests_total" in served.text
        assert (await http.get("/openapi.json")).status_code == 200
    dev = Settings(environment="development", database_url=str(sqlite_engine.url))
    off = dev.model_copy(update={"api_docs": False})
    async with await client_for(off, sqlite_engine) as http:
        assert (await http.get("/docs")).status_code == 404
    async with await client_for(dev, sqlite_engine) as http:
        assert (await http.get("/docs")).status_code == 200


# -- 4. security headers ---------------------------------------------------------------------------


def _assert_html_headers(resp: httpx.Response) -> None:
    assert resp.headers["content-type"].startswith("text/html"), resp.headers
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] in ("no-referrer", "same-origin")


async def test_every_html_page_carries_the_security_headers(
    prod: httpx.AsyncClient, sqlite_engine: Engine
) -> None:
    invoice_id = seed_invoice(sqlite_engine)
    settings = production(sqlite_engine)
    reference = payment_reference(invoice_id)
    pages = [
        await prod.get("/app/login"),
        await prod.get(f"/pay/{reference}?t={settings.pay_token(reference)}"),
        await prod.get(f"/pay/{reference}?t=nope"),
        await prod.get("/u/garbage"),
    ]
    assert [p.status_code for p in pages] == [200, 200, 404, 404]
    for page in pages:
        _assert_html_headers(page)
    assert (await login(prod, API_KEYS["viewer"])).status_code == 303
    for path in ("/app", "/app/invoices", f"/app/invoices/{invoice_id}", "/app/invoices/999999"):
        _assert_html_headers(await prod.get(path))


def test_templates_have_no_inline_script_style_or_handlers() -> None:
    """The CSP refuses them: the page would silently lose that behaviour or style."""
    inline = re.compile(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=|\shx-on")
    for path in TEMPLATES.rglob("*.html"):
        found = inline.search(path.read_text())
        assert found is None, f"{path.relative_to(ROOT)}: {found and found.group(0)!r}"


# -- 5. sessions -----------------------------------------------------------------------------------


async def test_a_logged_out_session_cookie_replayed_is_refused(prod: httpx.AsyncClient) -> None:
    assert (await login(prod, API_KEYS["viewer"])).status_code == 303
    cookie = prod.cookies[web.SESSION_COOKIE]
    page = await prod.get("/app/worklist")
    assert page.status_code == 200
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert csrf
    out = await prod.post("/app/logout", data={"csrf_token": csrf[1]})
    assert out.status_code == 303
    prod.cookies.clear()
    prod.cookies.set(web.SESSION_COOKIE, cookie, domain="arflow.test", path="/app")
    replayed = await prod.get("/app/worklist")
    assert replayed.status_code == 303
    assert replayed.headers["location"].startswith("/app/login")


async def test_a_session_ends_at_its_absolute_lifetime_however_busy(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = production(sqlite_engine, session_absolute_seconds=600)
    async with await client_for(settings, sqlite_engine) as http:
        assert (await login(http, API_KEYS["viewer"])).status_code == 303
        started = time.time()
        for minutes in (4, 8):  # in use every 4 minutes: never idle
            monkeypatch.setattr(time, "time", lambda m=minutes: started + m * 60)
            assert (await http.get("/app/worklist")).status_code == 200
        monkeypatch.setattr(time, "time", lambda: started + 601)
        late = await http.get("/app/worklist")
    assert late.status_code == 303 and late.headers["location"].startswith("/app/login")


# -- 6. failed sign-ins ----------------------------------------------------------------------------


async def test_failed_bearer_keys_are_limited_per_address(sqlite_engine: Engine) -> None:
    settings = production(sqlite_engine)
    app = create_app(settings, engine=sqlite_engine, temporal=None)

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 1))
        return httpx.AsyncClient(transport=transport, base_url="http://arflow.test")

    good = {"Authorization": f"Bearer {API_KEYS['viewer']}"}
    async with client("10.0.0.7") as attacker, client("10.0.0.8") as other:
        for _ in range(30):  # successes are neither counted nor slowed
            assert (await attacker.get("/v1/customers", headers=good)).status_code == 200
        for n in range(10):
            bad = await attacker.get("/v1/customers", headers={"Authorization": f"Bearer g{n}"})
            assert bad.status_code == 401
        blocked = await attacker.get("/v1/customers", headers={"Authorization": "Bearer g11"})
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        assert blocked.json()["error"]["code"] == "too_many_attempts"
        # the right key is refused as well while blocked: the answer is no oracle
        assert (await attacker.get("/v1/customers", headers=good)).status_code == 429
        assert (await other.get("/v1/customers", headers=good)).status_code == 200


async def test_failed_dashboard_logins_are_limited_per_address(prod: httpx.AsyncClient) -> None:
    for _ in range(10):
        assert (await login(prod, "not-a-key")).status_code == 401
    blocked = await login(prod, "not-a-key")
    assert blocked.status_code == 429
    assert blocked.headers["content-type"].startswith("text/html")
    assert int(blocked.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in blocked.text


def test_the_limiter_forgets_failures_after_the_window() -> None:
    now = [0.0]
    limiter = FailureLimiter(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.failed("a")
    assert limiter.retry_after("a") == 60
    assert limiter.retry_after("b") is None
    now[0] = 59.5
    assert limiter.retry_after("a") == 1
    now[0] = 60.0
    assert limiter.retry_after("a") is None


# -- 7. bytes, not str, into compare_digest -----------------------------------------------------


async def test_non_ascii_tokens_are_refused_not_a_500(
    prod: httpx.AsyncClient, sqlite_engine: Engine
) -> None:
    reference = payment_reference(seed_invoice(sqlite_engine))
    for t in ("%C3%A9", "k1.%C3%A9"):
        assert (await prod.get(f"/pay/{reference}?t={t}")).status_code == 404
    assert (await prod.get("/u/1.k1.%C3%A9")).status_code == 404
    assert (await prod.post("/u/1.k1.%C3%A9")).status_code == 404
    odd_key = {b"Authorization": "Bearer clé".encode("latin-1")}
    assert (await prod.get("/v1/customers", headers=odd_key)).status_code == 401
    header = f"t={int(time.time())},v1=é"
    with pytest.raises(Unauthenticated):
        verify_signature("secret", header, b"{}", 300)


# -- 8. link secret with key ids -------------------------------------------------------------------


def _main_pay_token(webhook_secret: str, reference: str) -> str:
    """The pay-link token before link keys: derived from the webhook secret, no key id."""
    key = hashlib.sha256(b"pay:" + webhook_secret.encode()).digest()
    return hmac.new(key, reference.encode(), hashlib.sha256).hexdigest()[:20]


async def test_links_use_their_own_secret_with_a_key_id_and_rotate(sqlite_engine: Engine) -> None:
    invoice_id = seed_invoice(sqlite_engine)
    reference = payment_reference(invoice_id)
    old = production(sqlite_engine)
    old_token = old.pay_token(reference)
    assert old_token.startswith("k1.")
    assert old_token == production(sqlite_engine, webhook_secret="w" * 40).pay_token(reference)
    old_unsubscribe = unsubscribe_token(old, 1)
    assert ".k1." in old_unsubscribe

    rotated = production(
        sqlite_engine,
        link_secret=secrets.token_urlsafe(32),
        link_key_id="k2",
        link_secrets_old=f"k1:{PRODUCTION['link_secret']}",
    )
    assert rotated.pay_token(reference).startswith("k2.")
    async with await client_for(rotated, sqlite_engine) as http:
        for token in (old_token, rotated.pay_token(reference)):
            assert (await http.get(f"/pay/{reference}?t={token}")).status_code == 200
        assert (await http.get(f"/u/{old_unsubscribe}")).status_code == 200
        # the format before key ids: a clean 404 page, never a 500
        legacy = await http.get(
            f"/pay/{reference}?t={_main_pay_token(PRODUCTION['webhook_secret'], reference)}"
        )
        assert legacy.status_code == 404 and "Unknown link" in legacy.text
        legacy_u = await http.get("/u/MS4wMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA")  # base64 "1.000..."
        assert legacy_u.status_code == 404 and "Unknown link" in legacy_u.text

    retired = rotated.model_copy(update={"link_secrets_old": ""})
    async with await client_for(retired, sqlite_engine) as http:
        assert (await http.get(f"/pay/{reference}?t={old_token}")).status_code == 404
        assert (
            await http.get(f"/pay/{reference}?t={retired.pay_token(reference)}")
        ).status_code == (200)
    with pytest.raises(ValidationError, match="ARFLOW_LINK_SECRETS_OLD"):
        production(sqlite_engine, link_secrets_old="no-colon-here")
