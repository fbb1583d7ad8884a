"""Collection agencies: the adapters (drop folder, signed webhook), the placement activities,
the API (configuration, placement, recall, signed updates) on SQLite and PostgreSQL, and the
whole path through the workflow on the time-skipping server."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.agency import AgencyActivities
from arflow.agency.placement import (
    PLACEMENT_FAILED,
    RECALL_FAILED,
    AgencyDeliveryError,
    FileAgencyAdapter,
    PlacementRequest,
    RecallRequest,
    WebhookAgencyAdapter,
    adapter_factory,
)
from arflow.db import session_factory
from arflow.errors import Conflict
from arflow.invoices import service as services
from arflow.policies import service as policies
from models import (
    Agency,
    AgencyPlacement,
    AgencyUpdate,
    Customer,
    Invoice,
    InvoiceEvent,
    Payment,
    Task,
)
from models.invoice import InvoiceCreate
from tests.conftest import Harness, harness
from tests.test_api import error_of, eventually
from workflows.invoice import InvoiceWorkflow
from workflows.types import AgencyEndRequest, EndPlacementInput, EscalateInput

SECRET = "agency-secret-0123456789"
PLACED_AT = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def _placement(**overrides: Any) -> PlacementRequest:
    fields: dict[str, Any] = {
        "invoice_id": 42,
        "invoice_number": "2026-0042",
        "customer_external_id": "C-7",
        "customer_name": 'Acme, "the" GmbH',
        "customer_email": "ap@acme.example.com",
        "customer_phone": None,
        "customer_address": "Hauptstr. 1\n10115 Berlin",
        "amount_minor": 120_000,
        "currency": "EUR",
        "due_date": "2026-10-01",
        "placed_at": PLACED_AT,
        "stage": "collect",
    } | overrides
    return PlacementRequest(**fields)


def _recall() -> RecallRequest:
    return RecallRequest(
        invoice_id=42,
        invoice_number="2026-0042",
        reference="AG-1",
        reason="customer called us",
        recalled_at=PLACED_AT,
    )


def _sign(secret: str, stamp: str, body: bytes) -> str:
    """The scheme, written out independently of the code under test."""
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


# -- a local agency endpoint ----------------------------------------------------------------


@dataclass
class AgencyServer:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    answer: dict[str, Any] | None = None
    delay: float = 0.0


@pytest.fixture
def agency_server() -> Iterator[AgencyServer]:
    server_state = AgencyServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            server_state.received.append(
                {"path": self.path, "headers": dict(self.headers.items()), "body": body}
            )
            time.sleep(server_state.delay)
            payload = json.dumps(server_state.answer or {}).encode()
            self.send_response(server_state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}/arflow/placements"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_state
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/nobody"


# -- the file adapter -------------------------------------------------------------------------


def test_file_adapter_writes_one_json_placement_file_per_invoice(tmp_path: Path) -> None:
    adapter = FileAgencyAdapter(tmp_path / "drop")
    reference = adapter.place(_placement())
    adapter.place(_placement())  # a retry rewrites the same file
    target = tmp_path / "drop" / "placement-invoice-42.json"
    assert reference == str(target)
    assert adapter.name == "file-drop"
    assert sorted(p.name for p in (tmp_path / "drop").iterdir()) == [target.name]
    assert target.read_text() == (
        "{\n"
        '  "amount_minor": 120000,\n'
        '  "currency": "EUR",\n'
        '  "customer_address": "Hauptstr. 1\\n10115 Berlin",\n'
        '  "customer_email": "ap@acme.example.com",\n'
        '  "customer_external_id": "C-7",\n'
        '  "customer_name": "Acme, \\"the\\" GmbH",\n'
        '  "customer_phone": null,\n'
        '  "due_date": "2026-10-01",\n'
        '  "invoice_id": 42,\n'
        '  "invoice_number": "2026-0042",\n'
        '  "placed_at": "2026-11-28T09:30:00+00:00",\n'
        '  "stage": "collect"\n'
        "}\n"
    )


def test_file_adapter_writes_csv_with_a_header_and_quoting(tmp_path: Path) -> None:
    adapter = FileAgencyAdapter(tmp_path, file_format="csv", name="Collect Co")
    reference = adapter.place(_placement())
    adapter.recall(_recall())
    assert reference == str(tmp_path / "placement-invoice-42.csv")
    placed = (tmp_path / "placement-invoice-42.csv").read_bytes().decode()
    assert placed == (
        "invoice_id,invoice_number,customer_external_id,customer_name,customer_email,"
        "customer_phone,customer_address,amount_minor,currency,due_date,placed_at,stage\r\n"
        '42,2026-0042,C-7,"Acme, ""the"" GmbH",ap@acme.example.com,,"Hauptstr. 1\n10115 Berlin",'
        "120000,EUR,2026-10-01,2026-11-28T09:30:00+00:00,collect\r\n"
    )
    rows = list(csv.DictReader(io.StringIO(placed, newline="")))
    assert rows[0]["customer_address"] == "Hauptstr. 1\n10115 Berlin"
    assert (tmp_path / "recall-invoice-42.csv").read_bytes().decode() == (
        "invoice_id,invoice_number,reference,reason,recalled_at\r\n"
        "42,2026-0042,AG-1,customer called us,2026-11-28T09:30:00+00:00\r\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "placement-invoice-42.csv",
        "recall-invoice-42.csv",
    ]


def test_file_adapter_recall_json(tmp_path: Path) -> None:
    FileAgencyAdapter(tmp_path).recall(_recall())
    assert json.loads((tmp_path / "recall-invoice-42.json").read_text()) == {
        "invoice_id": 42,
        "invoice_number": "2026-0042",
        "reference": "AG-1",
        "reason": "customer called us",
        "recalled_at": "2026-11-28T09:30:00+00:00",
    }


def test_file_adapter_failure_raises_and_leaves_no_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(OSError):
        FileAgencyAdapter(blocker).place(_placement())
    with pytest.raises(ValueError, match="unknown file format"):
        FileAgencyAdapter(tmp_path, file_format="xml")


# -- the webhook adapter ----------------------------------------------------------------------


def test_webhook_adapter_posts_signed_json_with_an_idempotency_key(
    agency_server: AgencyServer,
) -> None:
    agency_server.answer = {"reference": "CC-2026-17"}
    adapter = WebhookAgencyAdapter(
        "Collect Co", agency_server.url, SECRET, timeout=2, allow_loopback=True
    )
    assert adapter.place(_placement()) == "CC-2026-17"
    adapter.recall(_recall())

    placed, recalled = agency_server.received
    assert placed["path"] == "/arflow/placements"
    headers = placed["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "invoice-42-placement"
    assert abs(int(headers["X-Arflow-Timestamp"]) - time.time()) < 60
    expected = _sign(SECRET, headers["X-Arflow-Timestamp"], placed["body"])
    assert headers["X-Arflow-Signature"] == expected
    assert headers["X-Arflow-Signature"] != _sign("another-secret-0000", "0", placed["body"])
    assert json.loads(placed["body"]) == {
        "type": "placement",
        "invoice_id": 42,
        "invoice_number": "2026-0042",
        "customer_external_id": "C-7",
        "customer_name": 'Acme, "the" GmbH',
        "customer_email": "ap@acme.example.com",
        "customer_phone": None,
        "customer_address": "Hauptstr. 1\n10115 Berlin",
        "amount_minor": 120000,
        "currency": "EUR",
        "due_date": "2026-10-01",
        "placed_at": "2026-11-28T09:30:00+00:00",
        "stage": "collect",
    }
    assert recalled["headers"]["Idempotency-Key"] == "invoice-42-recall"
    assert recalled["headers"]["X-Arflow-Signature"] == _sign(
        SECRET, recalled["headers"]["X-Arflow-Timestamp"], recalled["body"]
    )
    assert json.loads(recalled["body"])["type"] == "recall"
    assert json.loads(recalled["body"])["reason"] == "customer called us"


def test_webhook_adapter_without_a_reference_in_the_answer(agency_server: AgencyServer) -> None:
    adapter = WebhookAgencyAdapter(
        "Collect Co", agency_server.url, SECRET, timeout=2, allow_loopback=True
    )
    assert adapter.place(_placement()) == "Collect Co:invoice-42"
    agency_server.answer = {"reference": "x" * 301}  # too long to store: ours instead
    assert adapter.place(_placement()) == "Collect Co:invoice-42"
    keys = {r["headers"]["Idempotency-Key"] for r in agency_server.received}
    assert keys == {"invoice-42-placement"}  # the same key on every attempt


@pytest.mark.parametrize("status", [400, 409, 500, 503, 302])
def test_webhook_adapter_raises_on_anything_but_2xx(
    agency_server: AgencyServer, status: int
) -> None:
    agency_server.status = status
    adapter = WebhookAgencyAdapter(
        "Collect Co", agency_server.url, SECRET, timeout=2, allow_loopback=True
    )
    with pytest.raises(AgencyDeliveryError, match=f"answered {status}"):
        adapter.place(_placement())
    with pytest.raises(AgencyDeliveryError, match=f"answered {status}"):
        adapter.recall(_recall())


def test_webhook_adapter_raises_when_unreachable_or_slow(agency_server: AgencyServer) -> None:
    with pytest.raises(AgencyDeliveryError, match="ConnectError"):
        WebhookAgencyAdapter(
            "Gone", _closed_port_url(), SECRET, timeout=2, allow_loopback=True
        ).place(_placement())
    agency_server.delay = 1.0
    slow = WebhookAgencyAdapter("Slow", agency_server.url, SECRET, timeout=0.2, allow_loopback=True)
    started = time.monotonic()
    with pytest.raises(AgencyDeliveryError, match="ReadTimeout"):
        slow.place(_placement())
    assert time.monotonic() - started < 0.9


# -- the activities, on the database alone ----------------------------------------------------


def _new_invoice(engine: Engine, amount_minor: int = 120_000) -> int:
    with Session(engine) as s:
        policy = policies.ensure_default_policy(s)
        customer = Customer(
            external_id=f"C-{uuid.uuid4().hex[:8]}",
            name="Acme GmbH",
            email="ap@acme.example.com",
            timezone="UTC",
            address="Hauptstr. 1",
        )
        s.add(customer)
        s.flush()
        body = InvoiceCreate(
            external_id=f"INV-{uuid.uuid4().hex[:8]}",
            number="2026-0001",
            customer_id=customer.id,
            amount_minor=amount_minor,
            currency="EUR",
            issued_on=PLACED_AT.date(),
            due_date=PLACED_AT.date() + timedelta(days=30),
        )
        invoice = services.new_invoice(body, customer, policy, "hash")
        s.add(invoice)
        s.commit()
        assert invoice.id is not None
        return invoice.id


def _agency(engine: Engine, **fields: Any) -> None:
    with Session(engine) as s:
        s.add(Agency(**({"secret": SECRET, "delivery": "file"} | fields)))
        s.commit()


def _escalate(invoice_id: int, agency: str | None = None, stage: str = "agency") -> EscalateInput:
    return EscalateInput(
        invoice_id=invoice_id,
        balance_minor=120_000,
        currency="EUR",
        skipped=["late_14"],
        stage=stage,
        agency=agency,
    )


def _count(engine: Engine, model: Any, **where: Any) -> int:
    with Session(engine) as s:
        stmt = select(func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return int(s.exec(stmt).one())


def _row(engine: Engine, model: Any, **where: Any) -> Any:
    with Session(engine) as s:
        stmt = select(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return s.exec(stmt).one()


def _events(engine: Engine, invoice_id: int) -> list[InvoiceEvent]:
    with Session(engine) as s:
        stmt = select(InvoiceEvent).where(InvoiceEvent.invoice_id == invoice_id)
        return list(s.exec(stmt.order_by(InvoiceEvent.id)).all())  # type: ignore[arg-type]


def _activities(engine: Engine, folder: Path) -> AgencyActivities:
    factory = adapter_factory(str(folder), timeout=2, root=str(folder.parent), allow_loopback=True)
    return AgencyActivities(session_factory(engine), factory)


def test_escalate_without_agencies_uses_the_drop_folder_once(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    invoice_id = _new_invoice(sqlite_engine)
    acts = _activities(sqlite_engine, tmp_path / "drop")
    acts.escalate(_escalate(invoice_id, stage="collect"))
    acts.escalate(_escalate(invoice_id, stage="collect"))  # a retry: nothing twice

    placement = _row(sqlite_engine, AgencyPlacement, invoice_id=invoice_id)
    assert (placement.agency, placement.stage, placement.status) == (
        "file-drop",
        "collect",
        "placed",
    )
    assert placement.reference == str(tmp_path / "drop" / f"placement-invoice-{invoice_id}.json")
    placed = json.loads(Path(placement.reference).read_text())
    assert (placed["amount_minor"], placed["customer_name"]) == (120_000, "Acme GmbH")
    invoice = _row(sqlite_engine, Invoice, id=invoice_id)
    assert (invoice.status, invoice.escalation_stage, invoice.next_action) == (
        "escalated",
        "collect",
        None,
    )
    events = _events(sqlite_engine, invoice_id)
    assert [(e.kind, e.data) for e in events] == [
        ("reminder_skipped", {"step": "late_14", "reason": "escalation was already due"}),
        (
            "escalated",
            {
                "agency": "file-drop",
                "stage": "collect",
                "amount_minor": 120_000,
                "reference": placement.reference,
            },
        ),
    ]


def test_escalate_picks_the_named_then_the_default_then_the_first_active_agency(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    _agency(sqlite_engine, name="Old", folder=str(tmp_path / "old"), active=False, is_default=True)
    _agency(sqlite_engine, name="First", folder=str(tmp_path / "first"))
    acts = _activities(sqlite_engine, tmp_path / "drop")
    first = _new_invoice(sqlite_engine)
    acts.escalate(_escalate(first))
    assert _row(sqlite_engine, AgencyPlacement, invoice_id=first).agency == "First"

    _agency(sqlite_engine, name="Default", folder=str(tmp_path / "default"), is_default=True)
    by_default = _new_invoice(sqlite_engine)
    acts.escalate(_escalate(by_default))
    assert _row(sqlite_engine, AgencyPlacement, invoice_id=by_default).agency == "Default"

    named = _new_invoice(sqlite_engine)
    acts.escalate(_escalate(named, agency="First"))
    assert _row(sqlite_engine, AgencyPlacement, invoice_id=named).agency == "First"
    assert (tmp_path / "first" / f"placement-invoice-{named}.json").exists()
    assert not (tmp_path / "drop").exists()


def test_unknown_agency_fails_with_one_worklist_task_until_it_exists(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    invoice_id = _new_invoice(sqlite_engine)
    acts = _activities(sqlite_engine, tmp_path / "drop")
    for _ in range(2):  # Temporal retries: still one task
        with pytest.raises(ApplicationError, match="agency 'Collect Co' is unknown"):
            acts.escalate(_escalate(invoice_id, agency="Collect Co"))
    task = _row(sqlite_engine, Task, invoice_id=invoice_id)
    assert (task.kind, task.status, task.data["agency"]) == (PLACEMENT_FAILED, "open", "Collect Co")
    assert _count(sqlite_engine, AgencyPlacement) == 0
    assert _row(sqlite_engine, Invoice, id=invoice_id).status == "open"

    _agency(sqlite_engine, name="Collect Co", folder=str(tmp_path / "cc"), file_format="csv")
    acts.escalate(_escalate(invoice_id, agency="Collect Co"))
    assert (tmp_path / "cc" / f"placement-invoice-{invoice_id}.csv").exists()
    assert _row(sqlite_engine, Task, invoice_id=invoice_id).status == "done"


def test_webhook_failure_raises_and_records_nothing_but_the_task(
    sqlite_engine: Engine, tmp_path: Path, agency_server: AgencyServer
) -> None:
    _agency(sqlite_engine, name="Hooked", delivery="webhook", endpoint_url=agency_server.url)
    invoice_id = _new_invoice(sqlite_engine)
    acts = _activities(sqlite_engine, tmp_path)
    agency_server.status = 503
    for _ in range(3):
        with pytest.raises(AgencyDeliveryError, match="answered 503"):
            acts.escalate(_escalate(invoice_id))
    assert _count(sqlite_engine, Task, kind=PLACEMENT_FAILED) == 1
    assert _count(sqlite_engine, AgencyPlacement) == 0
    assert [e.kind for e in _events(sqlite_engine, invoice_id)] == []

    agency_server.status, agency_server.answer = 200, {"reference": "H-1"}
    acts.escalate(_escalate(invoice_id))
    assert _row(sqlite_engine, AgencyPlacement, invoice_id=invoice_id).reference == "H-1"
    assert len(agency_server.received) == 4


def test_end_placement_recalls_once_and_records_the_end(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    _agency(sqlite_engine, name="Collect Co", folder=str(tmp_path / "cc"))
    invoice_id = _new_invoice(sqlite_engine)
    acts = _activities(sqlite_engine, tmp_path)
    acts.escalate(_escalate(invoice_id))
    end = EndPlacementInput(invoice_id, "recalled", "settled directly", "specialist:ab", True)
    acts.end_placement(end)
    recall_file = tmp_path / "cc" / f"recall-invoice-{invoice_id}.json"
    assert json.loads(recall_file.read_text())["reason"] == "settled directly"
    recall_file.unlink()
    acts.end_placement(end)  # a retry after it committed: the agency is not told twice
    assert not recall_file.exists()

    placement = _row(sqlite_engine, AgencyPlacement, invoice_id=invoice_id)
    assert (placement.status, placement.end_reason) == ("recalled", "settled directly")
    assert placement.ended_at is not None
    ended = [e for e in _events(sqlite_engine, invoice_id) if e.kind.startswith("agency_")]
    assert [(e.kind, e.actor, e.data["reason"]) for e in ended] == [
        ("agency_recalled", "specialist:ab", "settled directly")
    ]
    with pytest.raises(ApplicationError, match="unknown placement outcome"):
        acts.end_placement(EndPlacementInput(invoice_id, "lost", "", "x", False))


def test_end_placement_told_by_the_agency_sends_nothing(
    sqlite_engine: Engine, tmp_path: Path, agency_server: AgencyServer
) -> None:
    _agency(sqlite_engine, name="Hooked", delivery="webhook", endpoint_url=agency_server.url)
    invoice_id = _new_invoice(sqlite_engine)
    acts = _activities(sqlite_engine, tmp_path)
    acts.escalate(_escalate(invoice_id))
    acts.end_placement(EndPlacementInput(invoice_id, "returned", "no assets", "agency:H", False))
    assert [json.loads(r["body"])["type"] for r in agency_server.received] == ["placement"]
    assert _row(sqlite_engine, AgencyPlacement, invoice_id=invoice_id).status == "returned"


def test_failed_recall_raises_with_a_task_and_changes_nothing(
    sqlite_engine: Engine, tmp_path: Path, agency_server: AgencyServer
) -> None:
    _agency(sqlite_engine, name="Hooked", delivery="webhook", endpoint_url=agency_server.url)
    invoice_id = _new_invoice(sqlite_engine)
    acts = _activities(sqlite_engine, tmp_path)
    acts.escalate(_escalate(invoice_id))
    agency_server.status = 500
    end = EndPlacementInput(invoice_id, "recalled", "paid us directly", "specialist:ab", True)
    for _ in range(2):
        with pytest.raises(AgencyDeliveryError):
            acts.end_placement(end)
    assert _count(sqlite_engine, Task, kind=RECALL_FAILED) == 1
    assert _row(sqlite_engine, AgencyPlacement, invoice_id=invoice_id).status == "placed"
    agency_server.status = 200
    acts.end_placement(end)
    assert _row(sqlite_engine, AgencyPlacement, invoice_id=invoice_id).status == "recalled"
    assert _row(sqlite_engine, Task, kind=RECALL_FAILED).status == "done"


# -- the API on both databases ----------------------------------------------------------------


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


async def _create_agency(h: Harness, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"Agency {uuid.uuid4().hex[:6]}",
        "delivery": "file",
        "folder": str(Path(h.settings.data_dir) / "agencies" / uuid.uuid4().hex[:6]),
        "secret": SECRET,
        "commission_pct": "15.5",
    } | overrides
    resp = await h.post("/v1/agencies", body, role="admin")
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def _send_update(
    h: Harness,
    agency: str,
    body: dict[str, Any] | None = None,
    secret: str = SECRET,
    stamp: int | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    raw = raw if raw is not None else json.dumps(body).encode()
    ts = str(int(time.time()) if stamp is None else stamp)
    sent = {
        "Content-Type": "application/json",
        "X-Arflow-Agency": agency,
        "X-Arflow-Timestamp": ts,
        "X-Arflow-Signature": _sign(secret, ts, raw),
    } | (headers or {})
    return await h.http.post("/v1/agency/updates", content=raw, headers=sent)


def _update(invoice_id: int, kind: str = "payment", **fields: Any) -> dict[str, Any]:
    money = {"amount_minor": 50_000, "currency": "EUR"} if kind in ("payment", "commission") else {}
    return {
        "update_id": f"u-{uuid.uuid4().hex[:8]}",
        "invoice_id": invoice_id,
        "kind": kind,
        "occurred_at": "2026-11-27T15:00:00Z",
        **money,
    } | fields


async def _placed(h: Harness, agency: str | None, amount_minor: int = 120_000) -> dict[str, Any]:
    """An invoice placed with ``agency`` by the escalate activity itself; its workflow still
    runs its dunning (nothing here waits for the ladder)."""
    cust = await h.customer()
    inv = await h.invoice(cust["id"], amount_minor=amount_minor)
    acts = AgencyActivities.from_settings(session_factory(h.engine), h.settings)
    acts.escalate(
        EscalateInput(
            invoice_id=inv["id"],
            balance_minor=amount_minor,
            currency="EUR",
            skipped=[],
            agency=agency,
        )
    )
    return inv


def _stored(h: Harness) -> tuple[int, int, int, int]:
    """Rows a rejected request must leave untouched."""
    return (
        _count(h.engine, AgencyUpdate),
        _count(h.engine, Payment),
        _count(h.engine, InvoiceEvent),
        _count(h.engine, Task),
    )


def _placement_row(h: Harness, invoice_id: int) -> AgencyPlacement:
    return _row(h.engine, AgencyPlacement, invoice_id=invoice_id)


async def test_agencies_are_created_by_admins_and_listed_without_their_secret(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: public)  # cc.example's DNS
    hook = await _create_agency(
        h,
        name="Collect & Co",
        delivery="webhook",
        endpoint_url="https://cc.example/in",
        folder=None,
    )
    assert hook["commission_pct"] == "15.5"
    assert (hook["is_default"], hook["active"], hook["file_format"]) == (False, True, "json")
    first = await _create_agency(h, name="Drop", file_format="csv", is_default=True)
    second = await _create_agency(h, name="Drop 2", is_default=True, commission_pct="7")
    listed = (await h.get("/v1/agencies")).json()
    assert [a["name"] for a in listed] == ["Collect & Co", "Drop", "Drop 2"]
    assert [a["is_default"] for a in listed] == [False, False, True]  # one default at a time
    assert all("secret" not in a for a in listed) and "secret" not in first
    assert SECRET not in (await h.get("/v1/agencies")).text
    assert second["commission_pct"] == "7"

    resp = await h.post("/v1/agencies", {"name": "X", "delivery": "file", "folder": "/x"})
    assert resp.status_code == 403
    dup = await h.post(
        "/v1/agencies",
        {"name": "Drop", "delivery": "file", "folder": "x", "secret": SECRET},
        role="admin",
    )
    assert dup.status_code == 409
    assert "already exists" in error_of(dup)
    assert _count(h.engine, Agency) == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"delivery": "webhook"}, "a webhook agency needs an endpoint_url"),
        ({"delivery": "webhook", "endpoint_url": "ftp://x/y"}, "must be an http(s) URL"),
        ({"delivery": "webhook", "endpoint_url": "https://"}, "must be an http(s) URL"),
        (
            {"delivery": "webhook", "endpoint_url": "https://a.example", "folder": "/srv/drop"},
            "a webhook agency has no folder",
        ),
        (
            {"delivery": "webhook", "endpoint_url": "https://a.example", "file_format": "csv"},
            "file_format csv needs delivery file",
        ),
        ({"delivery": "file"}, "a file agency needs a folder"),
        ({"delivery": "file", "folder": "   "}, "a file agency needs a folder"),
        (
            {"delivery": "file", "folder": "/srv/drop", "endpoint_url": "https://a.example"},
            "a file agency has no endpoint_url",
        ),
        ({"delivery": "email", "folder": "/srv/drop"}, "delivery"),
        ({"delivery": "file", "folder": "/d", "file_format": "xml"}, "file_format"),
        ({"delivery": "file", "folder": "/d", "secret": "short"}, "at least 16 characters"),
        ({"delivery": "file", "folder": "/d", "commission_pct": "abc"}, "not a decimal number"),
        ({"delivery": "file", "folder": "/d", "commission_pct": "100.5"}, "between 0 and 100"),
        ({"delivery": "file", "folder": "/d", "commission_pct": "-1"}, "between 0 and 100"),
        ({"delivery": "file", "folder": "/d", "commission_pct": "NaN"}, "between 0 and 100"),
        ({"delivery": "file", "folder": "/d", "commission_pct": 15.5}, "commission_pct"),
        ({"delivery": "file", "folder": "/d", "name": "Bad\nname"}, "name"),
        ({"delivery": "file", "folder": "/d", "name": "file-drop"}, "built-in drop folder"),
        ({"delivery": "file", "folder": "/d", "colour": "red"}, "unknown field"),
    ],
)
async def test_agency_configuration_is_validated(
    h: Harness, body: dict[str, Any], message: str
) -> None:
    full = {"name": "Collect Co", "secret": SECRET} | body
    resp = await h.post("/v1/agencies", full, role="admin")
    assert resp.status_code == 422, resp.text
    assert message in error_of(resp)
    assert _count(h.engine, Agency) == 0


async def test_placement_view_and_agency_payment_closes_the_invoice(h: Harness) -> None:
    agency = await _create_agency(h, name="Collect Co")
    inv = await _placed(h, "Collect Co")
    resp = await h.get(f"/v1/invoices/{inv['id']}/agency")
    assert resp.status_code == 200, resp.text
    view = resp.json()
    assert (view["agency"], view["status"], view["amount_minor"], view["updates"]) == (
        "Collect Co",
        "placed",
        120_000,
        [],
    )
    assert view["reference"].endswith(f"placement-invoice-{inv['id']}.json")

    commission = _update(inv["id"], "commission", amount_minor=1_800, note="15% of 12,000")
    first = _update(inv["id"], amount_minor=20_000)
    rest = _update(inv["id"], amount_minor=100_000)
    for body in (first, commission, rest):
        resp = await _send_update(h, agency["name"], body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["duplicate"] is False
    payment_id = resp.json()["payment_id"]
    payment = _row(h.engine, Payment, id=payment_id)
    assert (payment.source, payment.method, payment.amount_minor, payment.event_id) == (
        "agency",
        "agency",
        100_000,
        f"agency:Collect Co:{rest['update_id']}",
    )
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, inv["workflow_id"])
    assert (await handle.result()).status == "paid"
    got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert (got["status"], got["balance_minor"]) == ("paid", 0)

    view = (await h.get(f"/v1/invoices/{inv['id']}/agency")).json()
    assert (view["collected_minor"], view["commission_minor"]) == (120_000, 1_800)
    assert [(u["kind"], u["amount_minor"], u["note"]) for u in view["updates"]] == [
        ("payment", 20_000, None),
        ("commission", 1_800, "15% of 12,000"),
        ("payment", 100_000, None),
    ]
    assert view["updates"][0]["occurred_at"] == "2026-11-27T15:00:00Z"
    kinds = [e.kind for e in h.events(inv["id"])]
    assert kinds.count("agency_payment") == 2 and kinds.count("agency_commission") == 1
    assert kinds.count("payment_applied") == 2

    # The agency closes its case after the invoice was paid: no workflow to ask any more.
    closed = await _send_update(h, agency["name"], _update(inv["id"], "closed", note="paid"))
    assert closed.status_code == 200, closed.text
    assert closed.json()["placement_status"] == "closed"
    placement = _placement_row(h, inv["id"])
    assert (placement.status, placement.end_reason) == ("closed", "paid")
    assert [e.kind for e in h.events(inv["id"])][-1] == "agency_closed"


async def test_a_redelivered_update_changes_nothing(h: Harness) -> None:
    agency = await _create_agency(h, name="Collect Co")
    inv = await _placed(h, "Collect Co")
    body = _update(inv["id"], amount_minor=30_000)
    first = await _send_update(h, agency["name"], body)
    assert first.status_code == 200, first.text
    assert first.json()["duplicate"] is False

    def applied() -> list[InvoiceEvent]:
        return [e for e in h.events(inv["id"]) if e.kind == "payment_applied"]

    assert await eventually(applied)
    before = _stored(h)
    again = await _send_update(h, agency["name"], body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json() | {"duplicate": True}
    other = await _send_update(h, agency["name"], body | {"amount_minor": 31_000})
    assert other.status_code == 409
    assert "already received with different data" in error_of(other)
    assert _stored(h) == before
    assert _placement_row(h, inv["id"]).collected_minor == 30_000
    assert [e.data["balance_after"] for e in applied()] == [90_000]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no_headers", "missing X-Arflow-Agency"),
        ("unknown_agency", "unknown agency"),
        ("wrong_secret", "signature does not match"),
        ("other_agency_secret", "signature does not match"),
        ("tampered_body", "signature does not match"),
        ("old_timestamp", "more than 300 s off"),
        ("future_timestamp", "more than 300 s off"),
        ("bad_timestamp", "unix seconds"),
        ("no_version", "signature does not match"),
    ],
)
async def test_updates_without_the_agency_signature_are_refused(
    h: Harness, case: str, expected: str
) -> None:
    agency = await _create_agency(h, name="Collect Co")
    await _create_agency(h, name="Other", secret="other-secret-0123456789")
    inv = await _placed(h, "Collect Co")
    body = _update(inv["id"])
    raw = json.dumps(body).encode()
    before = _stored(h)
    now = int(time.time())
    ts = str(now)
    if case == "no_headers":
        resp = await h.http.post("/v1/agency/updates", content=raw)
    elif case == "unknown_agency":
        resp = await _send_update(h, "Nobody", body)
    elif case == "wrong_secret":
        resp = await _send_update(h, agency["name"], body, secret="not-the-secret-000000")
    elif case == "other_agency_secret":
        resp = await _send_update(h, agency["name"], body, secret="other-secret-0123456789")
    elif case == "tampered_body":
        signed = _sign(SECRET, ts, raw)
        tampered = raw.replace(b"50000", b"99999")
        resp = await _send_update(
            h,
            agency["name"],
            raw=tampered,
            headers={"X-Arflow-Timestamp": ts, "X-Arflow-Signature": signed},
        )
    elif case == "old_timestamp":
        resp = await _send_update(h, agency["name"], body, stamp=now - 301)
    elif case == "future_timestamp":
        # Rounded up: int() dropped up to a second, which brought now + 301 within 300 s.
        resp = await _send_update(h, agency["name"], body, stamp=math.ceil(time.time()) + 301)
    elif case == "bad_timestamp":
        resp = await _send_update(h, agency["name"], body, headers={"X-Arflow-Timestamp": "soon"})
    else:
        bare = _sign(SECRET, ts, raw).removeprefix("v1=")
        resp = await _send_update(
            h, agency["name"], body, headers={"X-Arflow-Timestamp": ts, "X-Arflow-Signature": bare}
        )
    assert resp.status_code == 401, resp.text
    assert expected in error_of(resp)
    assert resp.json()["error"]["code"] == "unauthorized"
    assert _stored(h) == before
    # and the same update, signed properly, goes through
    ok = await _send_update(h, agency["name"], body)
    assert ok.status_code == 200, ok.text


async def test_a_timestamp_within_five_minutes_is_accepted(h: Harness) -> None:
    agency = await _create_agency(h, name="Collect Co")
    inv = await _placed(h, "Collect Co")
    resp = await _send_update(
        h, agency["name"], _update(inv["id"], "commission"), stamp=int(time.time()) - 280
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount_minor": 0}, "a payment needs amount_minor > 0"),
        ({"amount_minor": -5}, "greater than or equal to 0"),
        ({"amount_minor": 12.5}, "amount_minor"),
        ({"amount_minor": "500"}, "amount_minor"),
        ({"currency": None}, "a payment needs a currency"),
        ({"currency": "EURO"}, "unknown currency"),
        ({"kind": "refund"}, "kind"),
        ({"occurred_at": "2026-11-27T15:00:00"}, "occurred_at must be an RFC 3339 instant"),
        ({"invoice_id": "1"}, "invoice_id"),
        ({"update_id": ""}, "update_id"),
        ({"extra": 1}, "unknown field"),
        ({"kind": "closed"}, "carries no amount"),
    ],
)
async def test_invalid_updates_are_422_and_store_nothing(
    h: Harness, change: dict[str, Any], message: str
) -> None:
    agency = await _create_agency(h, name="Collect Co")
    inv = await _placed(h, "Collect Co")
    before = _stored(h)
    resp = await _send_update(h, agency["name"], _update(inv["id"]) | change)
    assert resp.status_code == 422, resp.text
    assert message in error_of(resp)
    assert _stored(h) == before
    assert _placement_row(h, inv["id"]).collected_minor == 0


async def test_malformed_json_is_422(h: Harness) -> None:
    agency = await _create_agency(h, name="Collect Co")
    resp = await _send_update(h, agency["name"], raw=b"{not json")
    assert resp.status_code == 422
    assert "json" in error_of(resp).lower()


async def test_currency_mismatch_and_foreign_invoices_are_refused(h: Harness) -> None:
    agency = await _create_agency(h, name="Collect Co")
    await _create_agency(h, name="Other", secret="other-secret-0123456789")
    inv = await _placed(h, "Collect Co")
    cust = await h.customer()
    never_placed = await h.invoice(cust["id"])
    before = _stored(h)

    usd = await _send_update(h, agency["name"], _update(inv["id"], currency="USD"))
    assert usd.status_code == 422
    assert error_of(usd) == f"the payment is in USD, invoice {inv['id']} is in EUR"
    fee = await _send_update(h, agency["name"], _update(inv["id"], "commission", currency="GBP"))
    assert fee.status_code == 422

    for name, secret, invoice_id in (
        ("Other", "other-secret-0123456789", inv["id"]),  # placed, but with someone else
        (agency["name"], SECRET, never_placed["id"]),
        (agency["name"], SECRET, 999_999),
    ):
        resp = await _send_update(h, name, _update(invoice_id), secret=secret)
        assert resp.status_code == 409, resp.text
        assert f"invoice {invoice_id} is not placed with agency {name!r}" == error_of(resp)
    assert _stored(h) == before
    assert _placement_row(h, inv["id"]).collected_minor == 0


async def test_placement_view_and_recall_need_a_placement(h: Harness) -> None:
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    resp = await h.get(f"/v1/invoices/{inv['id']}/agency")
    assert resp.status_code == 404
    assert "agency placement of invoice" in error_of(resp)
    assert (await h.get("/v1/invoices/999999/agency")).status_code == 404
    before = _stored(h)
    recall = await h.post(f"/v1/invoices/{inv['id']}/agency/recall", {"reason": "x"})
    assert recall.status_code == 409
    assert error_of(recall) == f"invoice {inv['id']} was never placed with an agency"
    viewer = await h.post(f"/v1/invoices/{inv['id']}/agency/recall", {"reason": "x"}, "viewer")
    assert viewer.status_code == 403
    empty = await h.post(f"/v1/invoices/{inv['id']}/agency/recall", {})
    assert empty.status_code == 422
    assert _stored(h) == before


async def test_closed_update_the_workflow_refuses_leaves_nothing(h: Harness) -> None:
    """Placed behind the workflow's back (its ladder has not reached the agency): the workflow
    refuses, and the update is not kept."""
    agency = await _create_agency(h, name="Collect Co")
    inv = await _placed(h, "Collect Co")
    before = _stored(h)
    resp = await _send_update(h, agency["name"], _update(inv["id"], "returned"))
    assert resp.status_code == 409, resp.text
    assert "not with a collection agency" in error_of(resp)
    assert _stored(h) == before
    assert _placement_row(h, inv["id"]).status == "placed"


# -- the whole path through the workflow --------------------------------------------------


async def _escalated(h: Harness, ladder_agency: str | None = None) -> dict[str, Any]:
    """An invoice whose seconds-scale policy reaches its agency stage."""
    stage: dict[str, Any] = {"key": "collect", "kind": "agency"}
    if ladder_agency is not None:
        stage["agency"] = ladder_agency
    pol = await h.policy(
        escalate_after="PT1M",
        steps=[{"key": "late", "offset": "PT10S", "template": "reminder_overdue"}],
        ladder=[stage],
    )
    now = await h.env.get_current_time()
    cust = await h.customer()
    inv = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        due_at=now.isoformat(),
        due_date=now.date().isoformat(),
    )
    await h.env.sleep(timedelta(minutes=2))

    def placed() -> bool:
        with Session(h.engine) as s:
            row = s.exec(select(Invoice).where(Invoice.id == inv["id"])).one()
            return row.status == "escalated"

    assert await eventually(placed), [e.kind for e in h.events(inv["id"])]
    return inv


async def test_escalation_places_with_the_agency_and_a_payment_closes_the_invoice(
    h: Harness,
) -> None:
    agency = await _create_agency(h, name="Collect Co", file_format="csv")
    inv = await _escalated(h, ladder_agency="Collect Co")
    placement = _placement_row(h, inv["id"])
    assert (placement.agency, placement.stage, placement.status) == (
        "Collect Co",
        "collect",
        "placed",
    )
    assert Path(agency["folder"], f"placement-invoice-{inv['id']}.csv").exists()
    got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert got["status"] == "escalated"
    escalated = [e for e in h.events(inv["id"]) if e.kind == "escalated"]
    assert escalated[0].data["stage"] == "collect"

    resp = await _send_update(h, agency["name"], _update(inv["id"], amount_minor=120_000))
    assert resp.status_code == 200, resp.text
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, inv["workflow_id"])
    assert (await handle.result()).status == "paid"
    assert _placement_row(h, inv["id"]).collected_minor == 120_000


async def test_recall_takes_the_invoice_back_and_tells_the_webhook_agency(
    h: Harness, agency_server: AgencyServer
) -> None:
    agency_server.answer = {"reference": "CC-99"}
    await _create_agency(
        h, name="Hooked", delivery="webhook", endpoint_url=agency_server.url, folder=None
    )
    inv = await _escalated(h)  # the stage names no agency: the only active one
    assert _placement_row(h, inv["id"]).reference == "CC-99"

    resp = await h.post(
        f"/v1/invoices/{inv['id']}/agency/recall", {"reason": "customer disputes the debt"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "open"
    placement = _placement_row(h, inv["id"])
    assert (placement.status, placement.end_reason) == ("recalled", "customer disputes the debt")
    kinds = [json.loads(r["body"])["type"] for r in agency_server.received]
    assert kinds == ["placement", "recall"]
    recall = agency_server.received[1]
    assert recall["headers"]["X-Arflow-Signature"] == _sign(
        SECRET, recall["headers"]["X-Arflow-Timestamp"], recall["body"]
    )
    assert json.loads(recall["body"])["reference"] == "CC-99"
    recalled = [e for e in h.events(inv["id"]) if e.kind == "agency_recalled"]
    assert recalled[0].actor.startswith("specialist:")

    again = await h.post(f"/v1/invoices/{inv['id']}/agency/recall", {"reason": "twice"})
    assert again.status_code == 409
    assert "already recalled" in error_of(again)
    assert len(agency_server.received) == 2


async def test_returned_by_the_agency_brings_the_invoice_back(h: Harness) -> None:
    agency = await _create_agency(h, name="Collect Co", is_default=True)
    await _create_agency(h, name="Other", secret="other-secret-0123456789")
    inv = await _escalated(h)
    assert _placement_row(h, inv["id"]).agency == "Collect Co"  # the default one
    body = _update(inv["id"], "returned", note="debtor insolvent")
    resp = await _send_update(h, agency["name"], body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["placement_status"] == "returned"
    got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert got["status"] == "open"
    placement = _placement_row(h, inv["id"])
    assert (placement.status, placement.end_reason) == ("returned", "debtor insolvent")
    assert not Path(agency["folder"], f"recall-invoice-{inv['id']}.json").exists()
    returned = [e for e in h.events(inv["id"]) if e.kind == "agency_returned"]
    assert returned[0].actor == "agency:Collect Co"

    again = await _send_update(h, agency["name"], body)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    closed = await _send_update(h, agency["name"], _update(inv["id"], "closed"))
    assert closed.status_code == 409
    assert "already returned" in error_of(closed)
    assert _count(h.engine, AgencyUpdate) == 1
    recall = await h.post(f"/v1/invoices/{inv['id']}/agency/recall", {"reason": "too late"})
    assert recall.status_code == 409
    # Money the agency collected before it returned the case still counts.
    late = await _send_update(h, agency["name"], _update(inv["id"], amount_minor=10_000))
    assert late.status_code == 200, late.text
    assert late.json()["placement_status"] == "returned"


async def test_the_workflow_refuses_agency_ended_when_not_with_an_agency(h: Harness) -> None:
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    request = AgencyEndRequest(outcome="returned", reason="x", actor="agency:x")
    with Session(h.engine) as s, pytest.raises(Conflict) as refused:
        await services.run_update(s, h.client, h.settings, inv["id"], "agency_ended", request)
    assert refused.value.code == "refused"
    # The workflow's own refusal (an unknown update would be refused too, with another text).
    assert "not with a collection agency" in refused.value.message
    assert (await h.get(f"/v1/invoices/{inv['id']}")).json()["status"] == "open"


async def test_an_oversized_update_is_refused_before_anything(h: Harness) -> None:
    agency = await _create_agency(h, name="Collect Co")
    inv = await _placed(h, "Collect Co")
    before = _stored(h)
    resp = await _send_update(h, agency["name"], _update(inv["id"], note="x" * 70_000))
    assert resp.status_code == 413
    assert "at most 65536 bytes" in error_of(resp)
    assert _stored(h) == before
