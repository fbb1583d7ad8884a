"""Observability: ``/metrics`` and its counters, JSON log lines with invoice and workflow ids,
the worker interceptor, and the admin's readable workflow history (time-skipping server with
a real worker, SQLite)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import ActivityType, Payload, Payloads
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.history.v1 import (
    ActivityTaskFailedEventAttributes,
    ActivityTaskScheduledEventAttributes,
    ActivityTaskStartedEventAttributes,
    HistoryEvent,
    MarkerRecordedEventAttributes,
    WorkflowExecutionContinuedAsNewEventAttributes,
    WorkflowExecutionSignaledEventAttributes,
    WorkflowExecutionStartedEventAttributes,
    WorkflowExecutionUpdateAcceptedEventAttributes,
    WorkflowExecutionUpdateCompletedEventAttributes,
)
from temporalio.api.update.v1 import Input, Meta, Outcome, Request
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

from api.app import create_app
from arflow import observability
from arflow.config import Settings
from arflow.payments.signatures import sign
from arflow.reports.history import assemble, load, render
from tests.conftest import API_KEYS, WEBHOOK_SECRET, Harness, harness
from tests.test_actions import Case, new_case
from tests.test_api import error_of, eventually
from tests.test_payments import paid, status_becomes
from tests.webhook import signed_payment
from workflows.types import ScheduledStep, SendReminderInput

HISTORIES = Path(__file__).parent / "histories"
SPECIALIST_ACTOR = "specialist:" + hashlib.sha256(API_KEYS["specialist"].encode()).hexdigest()[:8]


@pytest.fixture
async def h(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> AsyncIterator[Harness]:
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        yield h


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``GET /metrics`` parsed: (sample name, labels) -> value."""
    resp = await http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


async def created_invoice(h: Harness) -> dict[str, Any]:
    """An invoice whose workflow has run its first task. (Terminating a workflow whose first
    task is still in flight leaves the time-skipping server unable to skip time for the next
    test: seen here, the next ``env.sleep`` times out.)"""
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    await h.client.get_workflow_handle(inv["workflow_id"]).query("state")
    return inv


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
def captured() -> Iterator[list[str]]:
    """JSON lines written by the ``arflow`` loggers while the test runs."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(observability.JsonFormatter())
    logger = logging.getLogger("arflow")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- /metrics ------------------------------------------------------------------------------


async def test_metrics_expose_webhook_rejects_requests_and_workflow_starts(h: Harness) -> None:
    before = await scrape(h.http)
    bad = await h.http.post(
        "/v1/webhooks/payments",
        content=b'{"event_id": "evt_1"}',
        headers={"Arflow-Signature": "t=1,v1=00", "Content-Type": "application/json"},
    )
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "bad_signature"
    raw = json.dumps({"event_id": "evt_2", "amount_minor": "12.5"}).encode()
    invalid = await h.http.post(
        "/v1/webhooks/payments",
        content=raw,
        headers={"Arflow-Signature": sign(WEBHOOK_SECRET, raw), "Content-Type": "application/json"},
    )
    assert invalid.status_code == 422, invalid.text
    inv = await created_invoice(h)
    assert (await h.get(f"/v1/invoices/{inv['id']}")).status_code == 200
    assert (await h.get("/no/such/page")).status_code == 404
    after = await scrape(h.http)

    def moved(name: str, **labels: str) -> float:
        return after.get(key(name, **labels), 0.0) - before.get(key(name, **labels), 0.0)

    assert moved("arflow_webhook_rejects_total", reason="bad_signature") == 1
    assert moved("arflow_webhook_rejects_total", reason="invalid_body") == 1
    assert moved("arflow_webhook_rejects_total", reason="refused") == 0
    assert moved("arflow_workflow_starts_total") == 1
    webhook = "/v1/webhooks/payments"
    assert moved("arflow_http_requests_total", method="POST", route=webhook, status="401") == 1
    assert moved("arflow_http_requests_total", method="POST", route=webhook, status="422") == 1
    assert moved("arflow_http_requests_total", method="POST", route="/v1/invoices", status="201")
    one = "/v1/invoices/{invoice_id}"
    assert moved("arflow_http_requests_total", method="GET", route=one, status="200") == 1
    assert moved("arflow_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert moved("arflow_http_request_duration_seconds_count", method="GET", route=one) == 1


async def test_a_webhook_for_an_unknown_invoice_counts_as_refused(h: Harness) -> None:
    before = sample("arflow_webhook_rejects_total", reason="refused")
    resp = await signed_payment(h, invoice_id=987_654, amount_minor=100)
    assert resp.status_code == 422, resp.text
    assert sample("arflow_webhook_rejects_total", reason="refused") == before + 1


# -- the worker interceptor ----------------------------------------------------------------


async def test_interceptor_counts_reminders_by_channel_and_the_workflow_end(h: Harness) -> None:
    policy = await h.policy(
        escalate_after="P30D",
        steps=[
            {"key": "pre", "offset": "-P1D", "channel": "email", "template": "reminder_before_due"},
            {"key": "late", "offset": "P1D", "channel": "sms", "template": "reminder_overdue"},
        ],
    )
    email = sample("arflow_reminders_total", channel="email", outcome="sent")
    sms = sample("arflow_reminders_total", channel="sms", outcome="sent")
    attempts = sample(
        "arflow_activity_attempts_total",
        activity_type="send_reminder",
        kind="local",
        outcome="completed",
    )
    paid_runs = sample(
        "arflow_workflow_completions_total", workflow_type="InvoiceWorkflow", status="paid"
    )
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=5)
    cust = await h.customer()
    inv = await h.invoice(
        cust["id"],
        policy_id=policy["id"],
        issued_on=now.date().isoformat(),
        due_date=due.isoformat(),
        amount_minor=5_000,
    )
    c = Case(h, inv, now, due)
    await c.sleep_until(c.at(3))
    assert [m.channel for m in h.outbox(c.id)] == ["email", "sms"]
    assert sample("arflow_reminders_total", channel="email", outcome="sent") == email + 1
    assert sample("arflow_reminders_total", channel="sms", outcome="sent") == sms + 1
    done = sample(
        "arflow_activity_attempts_total",
        activity_type="send_reminder",
        kind="local",
        outcome="completed",
    )
    assert done == attempts + 2

    resp = await signed_payment(h, invoice_id=c.id, amount_minor=5_000)
    assert resp.status_code == 200, resp.text
    ended = await eventually(
        lambda: (
            sample(
                "arflow_workflow_completions_total", workflow_type="InvoiceWorkflow", status="paid"
            )
            == paid_runs + 1
        )
    )
    assert ended, "the paid run was not counted"


async def test_interceptor_counts_a_failed_attempt_by_activity_type_and_error() -> None:
    class Failing(ActivityInboundInterceptor):
        def __init__(self) -> None:
            pass

        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            raise ApplicationError("provider down", type="ProviderDown")

    chain = observability.MetricsInterceptor().intercept_activity(Failing())
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="send_reminder", is_local=True)
    step = ScheduledStep(key="late", channel="sms", template="reminder", at=datetime.now(UTC))
    arg = SendReminderInput(
        invoice_id=1, step=step, balance_minor=100, skipped=[], next_action=None
    )

    async def attempt() -> None:
        await chain.execute_activity(
            ExecuteActivityInput(fn=attempt, args=[arg], executor=None, headers={})
        )

    failures = sample(
        "arflow_activity_failures_total", activity_type="send_reminder", error="ProviderDown"
    )
    sms_failed = sample("arflow_reminders_total", channel="sms", outcome="failed")
    with pytest.raises(ApplicationError):
        await env.run(attempt)
    assert (
        sample(
            "arflow_activity_failures_total", activity_type="send_reminder", error="ProviderDown"
        )
        == failures + 1
    )
    assert sample("arflow_reminders_total", channel="sms", outcome="failed") == sms_failed + 1


# -- logs ----------------------------------------------------------------------------------


async def test_activity_log_lines_are_json_with_invoice_and_workflow_ids(
    h: Harness, captured: list[str]
) -> None:
    c = await new_case(h, due_in=10)
    await c.sleep_until(c.at(-3, 10))  # the before-due reminder fired
    assert c.steps() == ["before_due"]
    lines = [json.loads(line) for line in captured]  # every line is one JSON object
    sent = [r for r in lines if r["message"] == "reminder recorded in outbox"]
    assert len(sent) == 1, lines
    line = sent[0]
    run_id = (await h.client.get_workflow_handle(c.inv["workflow_id"]).describe()).run_id
    assert line["invoice_id"] == c.id
    assert line["workflow_id"] == c.inv["workflow_id"]
    assert line["run_id"] == run_id
    assert line["activity"] == "send_reminder"
    assert line["attempt"] == 1
    assert (line["level"], line["logger"]) == ("INFO", "arflow.channels")
    assert (line["step"], line["channel"]) == ("before_due", "email")
    assert datetime.fromisoformat(line["time"]).tzinfo is not None


async def test_api_log_lines_carry_the_invoice_of_the_path(
    sqlite_engine: Engine, captured: list[str]
) -> None:
    settings = Settings(environment="test", workflow_id_prefix="obs-")
    app = create_app(settings, engine=sqlite_engine)
    probe = logging.getLogger("arflow.api.probe")

    @app.get("/v1/invoices/{invoice_id}/probe")
    def log_something(invoice_id: int) -> dict[str, int]:  # sync: runs in the thread pool
        probe.info("looked at the invoice")
        return {"invoice_id": invoice_id}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        assert (await http.get("/v1/invoices/42/probe")).status_code == 200
    probe.info("outside any request")
    inside, outside = (json.loads(line) for line in captured[-2:])
    assert inside["message"] == "looked at the invoice"
    assert (inside["invoice_id"], inside["workflow_id"]) == (42, "obs-invoice-42")
    assert outside["message"] == "outside any request"
    assert "invoice_id" not in outside and "workflow_id" not in outside


def test_json_formatter_puts_extras_and_exceptions_on_the_line() -> None:
    formatter = observability.JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "arflow.x", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    record.workflow_id = "p-invoice-7"
    record.outbox_id = 3
    line = json.loads(formatter.format(record))
    assert line["message"] == "failed x"
    assert line["level"] == "ERROR"
    assert (line["workflow_id"], line["invoice_id"], line["outbox_id"]) == ("p-invoice-7", 7, 3)
    assert "ValueError: boom" in line["exception"]
    with observability.log_context(invoice_id=9, workflow_id="invoice-9"):
        record = logging.LogRecord("arflow.x", logging.INFO, __file__, 1, "hi", None, None)
        assert json.loads(formatter.format(record))["invoice_id"] == 9


def test_log_format_and_metrics_port_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(environment="development").effective_log_format == "text"
    assert Settings(environment="test").effective_log_format == "json"
    assert Settings(environment="development", log_format="json").effective_log_format == "json"
    assert Settings(environment="test", log_format="text").effective_log_format == "text"
    assert Settings().worker_metrics_port == 9464
    monkeypatch.setenv("ARFLOW_WORKER_METRICS_PORT", "0")
    monkeypatch.setenv("ARFLOW_LOG_FORMAT", "text")
    from_env = Settings(environment="test")
    assert (from_env.worker_metrics_port, from_env.effective_log_format) == (0, "text")
    monkeypatch.setenv("ARFLOW_LOG_FORMAT", "xml")
    with pytest.raises(ValueError):
        Settings()


def test_configure_logging_installs_one_json_handler() -> None:
    root = logging.getLogger()
    level = root.level
    try:
        observability.configure_logging("text")
        handler = observability.configure_logging("json")
        ours = [x for x in root.handlers if getattr(x, "_arflow", False)]
        assert ours == [handler]
        assert isinstance(handler.formatter, observability.JsonFormatter)
    finally:
        for x in [x for x in root.handlers if getattr(x, "_arflow", False)]:
            root.removeHandler(x)
        root.setLevel(level)


async def test_worker_metrics_server_serves_the_registry() -> None:
    assert observability.start_metrics_server(0) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = observability.start_metrics_server(port, addr="127.0.0.1")
    assert server is not None
    try:
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert resp.status_code == 200
        assert "arflow_reminders_total" in resp.text
        assert "arflow_workflow_completions_total" in resp.text
        # The same port again (a second worker on the machine): logged, not fatal.
        assert observability.start_metrics_server(port, addr="127.0.0.1") is None
    finally:
        server.shutdown()
        server.server_close()


# -- workflow history ----------------------------------------------------------------------


async def test_history_shows_timers_reminders_payments_and_updates_across_runs(
    h: Harness,
) -> None:
    secret_reason = f"customer on holiday {uuid.uuid4().hex[:6]}"
    c = await new_case(h, due_in=10)
    await c.sleep_until(c.at(-3, 10))  # before_due sent at due - 3 days, 09:00 UTC
    assert c.steps() == ["before_due"]
    assert (await c.act("/pause", {"reason": secret_reason})).status_code == 200
    assert (await c.act("/resume", {"reason": "back"})).status_code == 200
    payment = await paid(c, 120_000)
    await status_becomes(c, "paid")
    reversal = await paid(c, 120_000, type="chargeback")
    assert reversal["status"] == "reopened"
    await status_becomes(c, "open")

    resp = await h.get(f"/v1/invoices/{c.id}/history", role="admin")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    wid = c.inv["workflow_id"]
    assert body["invoice_id"] == c.id
    assert body["workflow_id"] == wid
    assert body["temporal_ui_url"] == f"http://127.0.0.1:8233/namespaces/default/workflows/{wid}"
    runs = body["runs"]
    assert [r["status"] for r in runs] == ["completed", "running"]  # paid, then reopened
    first, second = (r["run_id"] for r in runs)
    events = body["events"]
    assert [(e["run_id"], e["event_id"]) for e in events] == sorted(
        ((e["run_id"], e["event_id"]) for e in events),
        key=lambda p: ([first, second].index(p[0]), p[1]),
    )
    in_first = [e for e in events if e["run_id"] == first]
    in_second = [e for e in events if e["run_id"] == second]
    assert in_first[0]["kind"] == "workflow_started"
    assert in_first[0]["details"]["workflow_type"] == "InvoiceWorkflow"
    assert in_first[-1]["kind"] == "workflow_completed"
    assert in_first[-1]["details"]["status"] == "paid"
    assert not any(e["kind"].startswith("workflow_task") for e in events)

    # The before-due timer: started with its fire time, then fired.
    timer = next(e for e in in_first if e["kind"] == "timer_started")
    fire_at = datetime.fromisoformat(timer["details"]["fire_at"])
    assert abs(fire_at - c.at(-3)) < timedelta(seconds=1)
    fired = next(e for e in in_first if e["kind"] == "timer_fired")
    assert fired["details"]["timer_id"] == timer["details"]["timer_id"]
    assert fired["details"]["started_event_id"] == timer["event_id"]
    reminder = next(
        e
        for e in in_first
        if e["kind"] == "local_activity_completed"
        and e["details"]["activity_type"] == "send_reminder"
    )
    assert reminder["details"]["attempt"] == 1
    assert reminder["summary"] == "Local activity send_reminder completed (attempt 1)"
    assert reminder["event_id"] > fired["event_id"]

    # Updates with their names and who sent them.
    accepted = [e for e in in_first if e["kind"] == "update_accepted"]
    assert [(e["details"]["update_name"], e["details"]["actor"]) for e in accepted] == [
        ("pause", SPECIALIST_ACTOR),
        ("resume", SPECIALIST_ACTOR),
    ]
    assert accepted[0]["summary"] == f"Update pause accepted from {SPECIALIST_ACTOR}"
    completed = [e for e in in_first if e["kind"] == "update_completed"]
    assert [e["details"]["update_name"] for e in completed] == ["pause", "resume"]
    assert completed[0]["details"]["accepted_event_id"] == accepted[0]["event_id"]

    # The payment signal in the first run, the chargeback's signal-with-start in the second.
    signal = next(e for e in in_first if e["kind"] == "signal_received")
    details = dict(signal["details"])
    assert details.pop("identity")  # the API process that sent it
    assert details == {
        "signal_name": "payment_received",
        "payment_id": payment["payment_id"],
        "kind": "payment",
        "amount_minor": 120_000,
        "currency": "EUR",
        "paid_at": "2026-11-23T10:00:00+00:00",
    }
    assert signal["summary"] == (
        f"Signal payment_received: payment {payment['payment_id']} of 120000 EUR minor units"
    )
    assert in_second[0]["kind"] == "workflow_started"
    back = next(e for e in in_second if e["kind"] == "signal_received")
    assert (back["details"]["payment_id"], back["details"]["kind"]) == (
        reversal["payment_id"],
        "chargeback",
    )
    assert any(
        e["kind"] == "local_activity_completed"
        and e["details"]["activity_type"] == "record_payment"
        for e in in_second
    )
    # Nothing personal and no free text from a payload.
    for text in ("ap@acme.example.com", "Acme GmbH", "+4930123456", secret_reason):
        assert text not in resp.text


async def test_history_is_for_admins_of_existing_invoices(h: Harness) -> None:
    inv = await created_invoice(h)
    path = f"/v1/invoices/{inv['id']}/history"
    for role in ("specialist", "viewer"):
        resp = await h.get(path, role=role)
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "forbidden"
    assert (await h.http.get(path)).status_code == 401
    missing = await h.get("/v1/invoices/987654/history", role="admin")
    assert missing.status_code == 404
    assert "invoice 987654 not found" in error_of(missing)
    fresh = await h.get(path, role="admin")
    assert fresh.status_code == 200
    assert [r["status"] for r in fresh.json()["runs"]] == ["running"]
    assert [e["kind"] for e in fresh.json()["events"]][:2] == ["workflow_started", "timer_started"]


@pytest.mark.devserver
async def test_history_on_the_dev_server_lists_every_run(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """The real server answers ``list_workflows``: the paid run and the reopened one."""
    async with harness(dev_env, sqlite_engine, tmp_path) as h:
        inv = await created_invoice(h)
        path = f"/v1/invoices/{inv['id']}"
        assert (await h.post(f"{path}/pause", {"reason": "x"})).status_code == 200
        payment = await signed_payment(h, invoice_id=inv["id"], amount_minor=120_000)
        assert payment.status_code == 200, payment.text

        async def status_is(status: str) -> bool:
            for _ in range(200):
                if (await h.get(path)).json()["status"] == status:
                    return True
                await asyncio.sleep(0.05)
            return False

        assert await status_is("paid")
        back = await signed_payment(
            h, invoice_id=inv["id"], amount_minor=120_000, type="chargeback"
        )
        assert back.json()["status"] == "reopened"
        assert await status_is("open")
        resp = await h.get(f"{path}/history", role="admin")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert [r["status"] for r in body["runs"]] == ["completed", "running"]
        first, second = (r["run_id"] for r in body["runs"])
        kinds = [(e["run_id"], e["kind"]) for e in body["events"]]
        assert (first, "update_accepted") in kinds
        assert (first, "workflow_completed") in kinds
        assert (second, "signal_received") in kinds
        signals = [e["details"] for e in body["events"] if e["kind"] == "signal_received"]
        assert [(s["payment_id"], s["kind"]) for s in signals] == [
            (payment.json()["payment_id"], "payment"),
            (back.json()["payment_id"], "chargeback"),
        ]


class _Unreachable:
    """A Temporal client whose server does not answer."""

    namespace = "default"

    def get_workflow_handle(self, *args: Any, **kwargs: Any) -> Any:
        return self

    async def describe(self, **kwargs: Any) -> Any:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")


async def test_history_answers_503_when_temporal_does_not(h: Harness) -> None:
    inv = await created_invoice(h)
    app = create_app(h.settings, engine=h.engine, temporal=cast(Client, _Unreachable()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        resp = await http.get(f"/v1/invoices/{inv['id']}/history", headers=h.as_role("admin"))
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "workflow_unavailable"


# -- rendering (pure) ----------------------------------------------------------------------


def test_render_a_saved_history() -> None:
    path = HISTORIES / "v1-partial-escalated-paid.json"
    history = WorkflowHistory.from_json("invoice-1", path.read_text())
    entries = render("run-1", history.events)
    kinds = [e.kind for e in entries]
    assert kinds[0] == "workflow_started" and kinds[-1] == "workflow_completed"
    assert entries[-1].details == {"status": "paid", "balance_minor": 0, "currency": "EUR"}
    assert entries[-1].summary == "Workflow completed: paid"
    assert "workflow_task_started" not in kinds
    escalate = [e for e in entries if e.details.get("activity_type") == "escalate"]
    assert [(e.kind, e.details.get("attempt")) for e in escalate] == [
        ("activity_scheduled", None),
        ("activity_started", 1),
        ("activity_completed", 1),
    ]
    assert escalate[-1].summary == "Activity escalate completed (attempt 1)"
    signals = [e.details for e in entries if e.kind == "signal_received"]
    assert [(s["payment_id"], s["amount_minor"]) for s in signals] == [(1, 20_000), (2, 100_000)]
    local = {e.details["activity_type"] for e in entries if e.kind == "local_activity_completed"}
    assert "send_reminder" in local and "record_payment" in local
    timers = [e for e in entries if e.kind == "timer_started"]
    assert all(
        e.summary.startswith(f"Timer {e.details['timer_id']} started, fires at ") for e in timers
    )
    assert all(e.run_id == "run-1" for e in entries)


def _at(seconds: int) -> Timestamp:
    return Timestamp(seconds=1_800_000_000 + seconds)


def _json(value: Any) -> Payloads:
    return Payloads(
        payloads=[Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())]
    )


def test_render_failures_refusals_and_hides_payload_fields() -> None:
    failure = Failure(
        message="agency down", application_failure_info=ApplicationFailureInfo(type="AgencyDown")
    )
    marker_data = {"activity_type": "send_reminder", "attempt": 4, "backoff": {"seconds": 60}}
    pause = Request(
        meta=Meta(update_id="u1", identity="api@host"),
        input=Input(name="pause", args=_json({"actor": "specialist:abc", "reason": "private"})),
    )
    events = [
        HistoryEvent(
            event_id=5,
            event_time=_at(0),
            activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
                activity_id="1", activity_type=ActivityType(name="escalate")
            ),
        ),
        HistoryEvent(
            event_id=6,
            event_time=_at(1),
            activity_task_started_event_attributes=ActivityTaskStartedEventAttributes(
                scheduled_event_id=5, attempt=3
            ),
        ),
        HistoryEvent(
            event_id=7,
            event_time=_at(2),
            activity_task_failed_event_attributes=ActivityTaskFailedEventAttributes(
                scheduled_event_id=5, started_event_id=6, failure=failure
            ),
        ),
        HistoryEvent(
            event_id=8,
            event_time=_at(3),
            marker_recorded_event_attributes=MarkerRecordedEventAttributes(
                marker_name="core_local_activity",
                details={"data": _json(marker_data)},
                failure=Failure(message="smtp timeout"),
            ),
        ),
        HistoryEvent(
            event_id=9,
            event_time=_at(4),
            workflow_execution_signaled_event_attributes=WorkflowExecutionSignaledEventAttributes(
                signal_name="payment_received",
                input=_json({"payment_id": 3, "amount_minor": 500, "email": "a@b.example"}),
            ),
        ),
        HistoryEvent(
            event_id=10,
            event_time=_at(5),
            workflow_execution_update_accepted_event_attributes=(
                WorkflowExecutionUpdateAcceptedEventAttributes(accepted_request=pause)
            ),
        ),
        HistoryEvent(
            event_id=11,
            event_time=_at(6),
            workflow_execution_update_completed_event_attributes=(
                WorkflowExecutionUpdateCompletedEventAttributes(
                    meta=Meta(update_id="u1"),
                    accepted_event_id=10,
                    outcome=Outcome(failure=Failure(message="the invoice is already on hold")),
                )
            ),
        ),
    ]
    entries = render("r", events)
    assert [e.kind for e in entries] == [
        "activity_scheduled",
        "activity_started",
        "activity_failed",
        "local_activity_failed",
        "signal_received",
        "update_accepted",
        "update_rejected",
    ]
    failed = entries[2]
    assert failed.summary == "Activity escalate failed (attempt 3): agency down"
    assert (failed.details["attempt"], failed.details["error_type"]) == (3, "AgencyDown")
    local = entries[3]
    assert local.summary == "Local activity send_reminder failed (attempt 4): smtp timeout"
    assert local.details["retrying"] is True
    assert entries[4].details == {
        "signal_name": "payment_received",
        "identity": "",
        "payment_id": 3,
        "amount_minor": 500,
    }
    assert entries[5].details["actor"] == "specialist:abc"
    assert "reason" not in entries[5].details and "private" not in entries[5].summary
    refused = entries[6]
    assert (
        refused.summary
        == "Update pause from specialist:abc refused: the invoice is already on hold"
    )
    assert (refused.details["update_name"], refused.details["accepted_event_id"]) == ("pause", 10)
    assert refused.time == datetime.fromtimestamp(1_800_000_006, UTC)


class _NoVisibility:
    """A server without any workflow list: runs ``r1`` -> ``r2`` -> ``r3`` by continue-as-new."""

    namespace = "default"
    data_converter = DataConverter.default  # no codec: the history is read as it is

    def __init__(self) -> None:
        self.workflow_service = self
        self.runs = {
            "r1": self._run(0, "", "r2"),
            "r2": self._run(100, "r1", "r3"),
            "r3": self._run(200, "r2", None),
        }

    @staticmethod
    def _run(at: int, previous: str, following: str | None) -> list[HistoryEvent]:
        events = [
            HistoryEvent(
                event_id=1,
                event_time=_at(at),
                workflow_execution_started_event_attributes=WorkflowExecutionStartedEventAttributes(
                    continued_execution_run_id=previous, first_execution_run_id="r1"
                ),
            )
        ]
        if following:
            events.append(
                HistoryEvent(
                    event_id=2,
                    event_time=_at(at + 1),
                    workflow_execution_continued_as_new_event_attributes=(
                        WorkflowExecutionContinuedAsNewEventAttributes(
                            new_execution_run_id=following
                        )
                    ),
                )
            )
        return events

    def list_workflows(self, *args: Any, **kwargs: Any) -> Any:
        raise RPCError("unimplemented", RPCStatusCode.UNIMPLEMENTED, b"")

    async def list_open_workflow_executions(self, *args: Any, **kwargs: Any) -> Any:
        raise RPCError("unimplemented", RPCStatusCode.UNIMPLEMENTED, b"")

    list_closed_workflow_executions = list_open_workflow_executions

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> Any:
        runs = self.runs

        class Handle:
            async def describe(self, **kwargs: Any) -> Any:
                return dataclasses.make_dataclass("D", [("run_id", str)])("r3")

            async def fetch_history(self, **kwargs: Any) -> WorkflowHistory:
                return WorkflowHistory(workflow_id, runs[run_id or "r3"])

        return Handle()


async def test_runs_are_found_through_the_continue_as_new_chain_without_visibility() -> None:
    runs = await load(cast(Client, _NoVisibility()), "invoice-1")
    assert [run_id for run_id, _ in runs] == ["r1", "r2", "r3"]
    body = assemble(1, "invoice-1", "http://ui/namespaces/default/workflows/invoice-1", runs)
    assert [(r.run_id, r.status) for r in body.runs] == [
        ("r1", "continued_as_new"),
        ("r2", "continued_as_new"),
        ("r3", "running"),
    ]
    assert [(e.run_id, e.kind) for e in body.events] == [
        ("r1", "workflow_started"),
        ("r1", "workflow_continued_as_new"),
        ("r2", "workflow_started"),
        ("r2", "workflow_continued_as_new"),
        ("r3", "workflow_started"),
    ]
    assert body.events[1].summary == "Workflow continued as new in run r2"
    assert body.events[2].details["continued_from_run_id"] == "r1"
