"""``arflow import``: CSV rows stored as the API stores them, rejects with line and reason,
idempotent re-runs, workflows started on the real dev server (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from arflow.cli import app
from arflow.config import get_settings
from arflow.invoices import bulk
from arflow.invoices import service as services
from models import Customer, Invoice, InvoiceEvent
from models.invoice import InvoiceCreate
from tests.conftest import Harness, harness
from workflows.types import InvoiceState, InvoiceWorkflowInput

pytestmark = pytest.mark.devserver

INVOICE_COLUMNS = [
    "external_id",
    "number",
    "customer_external_id",
    "currency",
    "amount_minor",
    "issued_on",
    "due_date",
    "due_at",
    "policy_name",
    "discount_percent",
    "discount_days",
]
# What differs between an invoice the API stored and the same one imported.
OWN_COLUMNS = {"id", "external_id", "number", "request_hash", "created_at", "updated_at"}


@pytest.fixture
async def h(dev_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(dev_env, engine, tmp_path) as h:
        yield h


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows([["" if c is None else str(c) for c in row] for row in rows])
    return path


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def invoice_rows(
    bodies: list[dict[str, Any]], columns: list[str] = INVOICE_COLUMNS
) -> list[list[Any]]:
    """The requests as CSV cells: lists (invoice lines) as JSON text."""
    return [
        [json.dumps(v) if isinstance(v := b.get(c), list) else v for c in columns] for b in bodies
    ]


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def stored(engine: Engine, external_id: str) -> tuple[Invoice, list[InvoiceEvent]]:
    with Session(engine) as s:
        inv = s.exec(select(Invoice).where(Invoice.external_id == external_id)).one()
        events = s.exec(
            select(InvoiceEvent)
            .where(InvoiceEvent.invoice_id == inv.id)
            .order_by(col(InvoiceEvent.id))
        ).all()
        return inv, list(events)


async def import_file(h: Harness, path: Path, **kwargs: Any) -> bulk.ImportResult:
    return await bulk.import_invoices(
        bulk.read_csv(path, InvoiceCreate), h.engine, h.settings, h.client, **kwargs
    )


async def start_input(h: Harness, invoice_id: int | None) -> dict[str, Any]:
    """The workflow's start input as recorded in its history, without the invoice id."""
    handle = h.client.get_workflow_handle(h.settings.workflow_id(invoice_id))
    history = await handle.fetch_history()
    payloads = history.events[0].workflow_execution_started_event_attributes.input.payloads
    (inp,) = await h.client.data_converter.decode(payloads, [InvoiceWorkflowInput])
    assert inp.invoice_id == invoice_id
    return dataclasses.asdict(inp) | {"invoice_id": None}


async def running(h: Harness, invoice_id: int | None) -> str:
    """The run id of the invoice's workflow, checked to be running its first timer."""
    handle = h.client.get_workflow_handle(h.settings.workflow_id(invoice_id))
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.RUNNING
    assert (desc.workflow_type, desc.task_queue) == ("InvoiceWorkflow", h.settings.task_queue)
    state = await handle.query("state", result_type=InvoiceState)  # the worker ran it
    assert (state.invoice_id, state.status) == (invoice_id, "open")
    assert desc.run_id is not None
    return desc.run_id


def bodies(customer_ext: str, policy: str, today: date) -> list[dict[str, Any]]:
    """Four requests covering the optional fields: default policy, named policy, due_at,
    discount."""
    due = today + timedelta(days=30)
    base = {
        "customer_external_id": customer_ext,
        "currency": "EUR",
        "issued_on": today.isoformat(),
        "due_date": due.isoformat(),
    }
    return [
        base | {"external_id": "X-1", "number": "2026-001", "amount_minor": 120_000},
        base
        | {
            "external_id": "X-2",
            "number": "2026-002",
            "amount_minor": 5_000,
            "currency": "usd",
            "policy_name": policy,
        },
        base
        | {
            "external_id": "X-3",
            "number": "2026-003",
            "amount_minor": 777,
            "due_at": datetime(due.year, due.month, due.day, 12, 30, tzinfo=UTC).isoformat(),
        },
        base
        | {
            "external_id": "X-4",
            "number": "2026-004",
            "amount_minor": 99_999,
            "discount_percent": "2.50",
            "discount_days": 10,
            "lines": [
                {"description": "Consulting", "quantity": "2", "unit_price_minor": 40_000}
                | {"amount_minor": 80_000},
                {"description": "Travel", "unit_price_minor": 19_999, "amount_minor": 19_999},
            ],
        },
    ]


# -- a good file --------------------------------------------------------------------------


async def test_good_file_is_stored_as_the_api_stores_it(h: Harness, tmp_path: Path) -> None:
    cust = await h.customer(external_id="C-1", timezone="Europe/Berlin")
    pol = await h.policy(
        name="short", steps=[{"key": "due", "offset": "P1D"}], escalate_after="P9D"
    )
    requests = bodies(cust["external_id"], pol["name"], date.today())
    for body in requests:  # the API's version of each row, under another external_id
        resp = await h.post("/v1/invoices", body | {"external_id": f"API-{body['external_id']}"})
        assert resp.status_code == 201, resp.text
    columns = [*INVOICE_COLUMNS, "lines"]
    path = write_csv(tmp_path / "invoices.csv", columns, invoice_rows(requests, columns))

    result = await import_file(h, path)

    assert (result.rows, result.created, result.unchanged, result.rejected) == (4, 4, 0, 0)
    assert (result.workflows_started, result.workflows_running) == (4, 0)
    assert (result.workflows_not_started, result.temporal_error, result.exit_code) == (0, None, 0)
    assert read_rows(tmp_path / "invoices.rejects.csv") == [[*columns, "line", "reason"]]
    for body in requests:
        ours, our_events = stored(h.engine, body["external_id"])
        theirs, their_events = stored(h.engine, f"API-{body['external_id']}")
        assert ours.model_dump(exclude=OWN_COLUMNS) == theirs.model_dump(exclude=OWN_COLUMNS)
        assert ours.request_hash == services.request_hash(InvoiceCreate.model_validate(body))
        assert [(e.kind, e.data, e.dedupe_key) for e in our_events] == [
            (e.kind, e.data, e.dedupe_key) for e in their_events
        ]
        assert [e.actor for e in our_events] == ["import:invoices.csv"]
        await running(h, ours.id)
        assert await start_input(h, ours.id) == await start_input(h, theirs.id)
    x3, _ = stored(h.engine, "X-3")
    assert x3.due_at == datetime.fromisoformat(requests[2]["due_at"])
    x4, _ = stored(h.engine, "X-4")
    assert (x4.discount_bp, x4.discount_days, x4.discount_minor) == (250, 10, 2_500)
    assert [(line["description"], line["amount_minor"]) for line in x4.lines] == [
        ("Consulting", 80_000),
        ("Travel", 19_999),
    ]
    x2, events = stored(h.engine, "X-2")
    assert (x2.currency, x2.policy_id, events[0].data["policy"]) == ("USD", pol["id"], "short")
    assert (x2.next_action, x2.next_action_step) == ("reminder", "due")


# -- bad rows -----------------------------------------------------------------------------


async def test_bad_rows_go_to_the_rejects_file_with_line_and_reason(
    h: Harness, tmp_path: Path
) -> None:
    await h.customer(external_id="C-1")
    good = ["G-1", "1", "C-1", "EUR", "1000", "2026-11-01", "2026-12-01", "", "", "", ""]
    path = tmp_path / "in.csv"
    lines = [
        ",".join(INVOICE_COLUMNS),  # 1
        ",".join(good),  # 2
        "B-1,2,C-1,EUR,12.5,2026-11-01,2026-12-01,,,,",  # 3
        "B-2,3,C-1,EUX,1000,2026-11-01,2026-12-01,,,,",  # 4
        "",  # 5: blank, skipped but counted
        'B-3,"four\nlines\n",C-1,EUR,0,2026-11-01,2026-12-01,,,,',  # 6-8
        "B-4,5,C-9,EUR,1000,2026-11-01,2026-12-01,,,,",  # 9
        "B-5,6,C-1,EUR,1000,2026-11-01,2026-12-01,,nope,,",  # 10
        "B-6,7,C-1,EUR,1000,2026-12-01,2026-11-01,,,,",  # 11
        "B-7,8,,EUR,1000,2026-11-01,2026-12-01,,,,",  # 12
        "B-8,9,C-1,EUR,1000,2026-11-01,2026-12-01,,,2,",  # 13
        "B-9,10,C-1,EUR,1000,2026-11-01,2026-12-01,2026-12-01T10:00:00,,,",  # 14
        "B-10,11,C-1,EUR,1000,2026-11-01",  # 15
        "G-1,1,C-1,EUR,2000,2026-11-01,2026-12-01,,,,",  # 16: G-1 again, other amount
        "G-2,12,C-1,EUR,3000,2026-11-01,2026-12-01,,,,",  # 17
        "G-1,1,C-1,EUR,1000,2026-11-01,2026-12-01,,,,",  # 18: G-1 again, the same
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = await import_file(h, path, rejects_path=tmp_path / "out" / "bad.csv")

    assert (result.rows, result.created, result.unchanged, result.rejected) == (14, 2, 1, 11)
    assert (result.workflows_started, result.exit_code) == (2, 1)
    rows = read_rows(tmp_path / "out" / "bad.csv")
    assert rows[0] == [*INVOICE_COLUMNS, "line", "reason"]
    assert [(r[0], r[-2], r[-1]) for r in rows[1:]] == [
        ("B-1", "3", "amount_minor: Input should be a valid integer"),
        (
            "B-2",
            "4",
            "currency: unknown currency 'EUX': expected an ISO 4217 code such as EUR or USD",
        ),
        ("B-3", "6", "amount_minor: Input should be greater than 0"),
        ("B-4", "9", "customer_external_id: unknown customer 'C-9'"),
        ("B-5", "10", "policy_name: unknown policy 'nope'"),
        ("B-6", "11", "due_date must not be before issued_on"),
        ("B-7", "12", "give exactly one of customer_id or customer_external_id"),
        ("B-8", "13", "give both discount_percent and discount_days, or neither"),
        ("B-9", "14", "due_at must be an RFC 3339 instant with a UTC offset"),
        ("B-10", "15", "the row has 6 cells, the header has 11"),
        (
            "G-1",
            "16",
            "external_id: invoice 'G-1' appears earlier in this file (line 2) with different data",
        ),
    ]
    assert rows[3][1] == "four\nlines\n"  # the original cells, as read
    assert rows[10][:6] == ["B-10", "11", "C-1", "EUR", "1000", "2026-11-01"]
    with Session(h.engine) as s:
        assert sorted(s.exec(select(Invoice.external_id)).all()) == ["G-1", "G-2"]
        g1 = s.exec(select(Invoice).where(Invoice.external_id == "G-1")).one()
        assert g1.amount_minor == 1000


# -- re-import, changed rows ----------------------------------------------------------------


async def test_reimport_changes_nothing_and_starts_no_second_workflow(
    h: Harness, tmp_path: Path
) -> None:
    cust = await h.customer(external_id="C-1")
    pol = await h.policy(
        name="short", steps=[{"key": "due", "offset": "P1D"}], escalate_after="P9D"
    )
    requests = bodies(cust["external_id"], pol["name"], date.today())
    api_made = await h.post("/v1/invoices", requests[0])  # one row exists already, from the API
    assert api_made.status_code == 201, api_made.text
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(requests))

    first = await import_file(h, path)
    assert (first.created, first.unchanged, first.rejected) == (3, 1, 0)
    assert (first.workflows_started, first.workflows_running) == (3, 1)
    ids = {b["external_id"]: stored(h.engine, b["external_id"])[0].id for b in requests}
    runs = {ext: await running(h, i) for ext, i in ids.items()}
    counts = (count(h.engine, Invoice), count(h.engine, InvoiceEvent))

    again = await import_file(h, path)

    assert (again.created, again.unchanged, again.rejected, again.exit_code) == (0, 4, 0, 0)
    assert (again.workflows_started, again.workflows_running) == (0, 4)
    assert (count(h.engine, Invoice), count(h.engine, InvoiceEvent)) == counts == (4, 4)
    assert {ext: await running(h, i) for ext, i in ids.items()} == runs


async def test_changed_row_is_rejected_and_changes_nothing(h: Harness, tmp_path: Path) -> None:
    cust = await h.customer(external_id="C-1")
    pol = await h.policy(
        name="short", steps=[{"key": "due", "offset": "P1D"}], escalate_after="P9D"
    )
    requests = bodies(cust["external_id"], pol["name"], date.today())
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(requests))
    assert (await import_file(h, path)).created == 4
    requests[1] = requests[1] | {"amount_minor": 6_000, "number": "2026-222"}
    requests[3] = requests[3] | {"discount_percent": "2.5"}  # the same value, written otherwise
    write_csv(path, INVOICE_COLUMNS, invoice_rows(requests))

    result = await import_file(h, path)

    assert (result.created, result.unchanged, result.rejected, result.exit_code) == (0, 2, 2, 1)
    assert (result.workflows_started, result.workflows_running) == (0, 2)
    assert [(r[0], r[-2], r[-1]) for r in read_rows(tmp_path / "invoices.rejects.csv")[1:]] == [
        (
            "X-2",
            "3",
            "invoice 'X-2' already exists with different data (number: 2026-002 stored, "
            "2026-222 in the file; amount_minor: 5000 stored, 6000 in the file)",
        ),
        (
            "X-4",
            "5",
            "invoice 'X-4' already exists with different data (the same values written "
            "differently: the stored request named its customer, policy or discount another way)",
        ),
    ]
    x2, events = stored(h.engine, "X-2")
    assert (x2.amount_minor, x2.number, len(events)) == (5_000, "2026-002", 1)


async def test_update_applies_due_date_policy_and_lower_amount_and_rejects_the_rest(
    h: Harness, tmp_path: Path
) -> None:
    cust = await h.customer(external_id="C-1")
    pol = await h.policy(
        name="short", steps=[{"key": "due", "offset": "P1D"}], escalate_after="P9D"
    )
    requests = bodies(cust["external_id"], pol["name"], date.today())
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(requests))
    assert (await import_file(h, path)).created == 4
    later = date.fromisoformat(requests[0]["due_date"]) + timedelta(days=14)
    requests[0] = requests[0] | {"due_date": later.isoformat(), "amount_minor": 100_000}
    requests[1] = requests[1] | {"policy_name": None}  # back to the default policy
    requests[2] = requests[2] | {"number": "2026-333"}  # not something an update changes
    requests[3] = requests[3] | {"amount_minor": 100_000}  # more: never by an update
    write_csv(path, INVOICE_COLUMNS, invoice_rows(requests))

    # Without --update nothing changes: the changed rows are rejected as before.
    plain = await import_file(h, path)
    assert (plain.updated, plain.rejected) == (0, 4)
    result = await import_file(h, path, update=True)

    assert (result.created, result.updated, result.unchanged, result.rejected) == (0, 2, 0, 2)
    reasons = {r[0]: r[-1] for r in read_rows(tmp_path / "invoices.rejects.csv")[1:]}
    assert reasons == {
        "X-3": "invoice 'X-3' differs in what an update cannot change (number: 2026-003 "
        "stored, 2026-333 in the file): cancel it and import a new invoice",
        "X-4": "invoice 'X-4': amount_minor 100000 is more than its 99999: an update only "
        "lowers an amount (a credit note); invoice the rest anew",
    }
    x1, events = stored(h.engine, "X-1")
    assert (x1.due_date, x1.amount_minor, x1.balance_minor) == (later, 120_000, 100_000)
    kinds = [e.kind for e in events]
    assert kinds.count("credit_note") == 1 and kinds.count("due_date_changed") == 1
    assert all(e.actor == "import:invoices.csv" for e in events if e.kind != "created")
    x2, events = stored(h.engine, "X-2")
    default = (await h.get("/v1/policies")).json()
    assert x2.policy_id == next(p["id"] for p in default if p["name"] == "default")
    assert [e.kind for e in events].count("policy_changed") == 1
    # The same file again: the updated rows are unchanged now, nothing is applied twice.
    again = await import_file(h, path, update=True)
    assert (again.updated, again.unchanged, again.rejected) == (0, 2, 2)
    x1, events = stored(h.engine, "X-1")
    assert x1.balance_minor == 100_000
    assert [e.kind for e in events].count("credit_note") == 1


# -- Temporal down, then up ---------------------------------------------------------------


async def test_unreachable_temporal_stores_rows_and_a_rerun_starts_them(
    h: Harness, tmp_path: Path
) -> None:
    cust = await h.customer(external_id="C-1")
    pol = await h.policy(
        name="short", steps=[{"key": "due", "offset": "P1D"}], escalate_after="P9D"
    )
    requests = bodies(cust["external_id"], pol["name"], date.today())
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(requests))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = h.settings.model_copy(update={"temporal_address": f"127.0.0.1:{closed}"})
    client, problem = await bulk.connect_temporal(down)
    assert client is None
    assert problem == f"Temporal at 127.0.0.1:{closed} is not reachable (connection refused)"

    result = await bulk.import_invoices(
        bulk.read_csv(path, InvoiceCreate), h.engine, down, None, temporal_error=problem
    )

    assert (result.created, result.workflows_started, result.workflows_not_started) == (4, 0, 4)
    assert (result.temporal_error, result.exit_code) == (problem, 3)
    assert count(h.engine, Invoice) == 4

    rerun = await import_file(h, path)

    assert (rerun.created, rerun.unchanged, rerun.workflows_started, rerun.exit_code) == (
        0,
        4,
        4,
        0,
    )
    for body in requests:
        await running(h, stored(h.engine, body["external_id"])[0].id)


# -- the command line ---------------------------------------------------------------------


def cli_env(engine: Engine, settings: Any = None, temporal_address: str = "") -> dict[str, str]:
    env = {
        "ARFLOW_ENVIRONMENT": "test",
        "ARFLOW_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "ARFLOW_TEMPORAL_ADDRESS": temporal_address,
    }
    if settings is not None:
        env["ARFLOW_TASK_QUEUE"] = settings.task_queue
        env["ARFLOW_WORKFLOW_ID_PREFIX"] = settings.workflow_id_prefix
    return env


def invoke(args: list[str], env: dict[str, str]) -> Any:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        get_settings.cache_clear()


async def test_cli_imports_invoices_and_says_when_workflows_were_not_started(
    h: Harness, tmp_path: Path
) -> None:
    cust = await h.customer(external_id="C-1")
    pol = await h.policy(
        name="short", steps=[{"key": "due", "offset": "P1D"}], escalate_after="P9D"
    )
    requests = bodies(cust["external_id"], pol["name"], date.today())
    rows = [*invoice_rows(requests), ["X-5", "5", "C-1", "EUR", "-1", "2026-11-01", "2026-12-01"]]
    path = write_csv(tmp_path / "inv.csv", INVOICE_COLUMNS, rows)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    args = ["import", "invoices", str(path), "--concurrency", "4"]

    # The command runs its own event loop: in a thread, so this one keeps the worker going.
    down = await asyncio.to_thread(invoke, args, cli_env(h.engine, h.settings, closed))

    assert down.exit_code == 3, down.output
    text = " ".join(down.output.split())
    assert "The workflows of 4 invoice(s) were NOT started" in text
    assert f"Temporal at {closed} is not reachable (connection refused)" in text
    assert "run the same command again" in text
    assert "line 6: the row has 7 cells, the header has 11" in text
    assert count(h.engine, Invoice) == 4

    address = h.client.service_client.config.target_host
    up = await asyncio.to_thread(invoke, args, cli_env(h.engine, h.settings, address))

    assert up.exit_code == 1, up.output
    table = {
        cells[0].strip(): cells[1].strip()
        for line in up.output.splitlines()
        if (cells := line.strip("│ ").split("│")) and len(cells) == 2
    }
    assert {k: table[k] for k in ("created", "unchanged", "rejected", "workflows started")} == {
        "created": "0",
        "unchanged": "4",
        "rejected": "1",
        "workflows started": "4",
    }
    assert float(table["elapsed seconds"]) > 0
    for body in requests:
        await running(h, stored(h.engine, body["external_id"])[0].id)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (
            b"external_id,number,customer_external_id,currency,issued_on,due_date\n"
            b"X-1,1,C-1,EUR,2026-11-01,2026-12-01\n",
            "missing column(s): amount_minor",
        ),
        (
            b"external_id,number,customer_external_id,currency,amount_minor,issued_on,due_date\n"
            b"X-1,M\xfcller,C-1,EUR,100,2026-11-01,2026-12-01\n",
            "not UTF-8 text (byte 0xfc at offset 86)",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text (byte 0x89 at offset 0)"),
        (b"external_id,number\x00,currency\n", "line 1: a NUL byte: a binary file, not CSV text"),
        (
            b'[{"external_id": "X-1", "number": "1"}]\n',
            "missing column(s): external_id, number, currency, issued_on, due_date, amount_minor",
        ),
        (
            b"external_id;number;customer_external_id;currency;amount_minor;issued_on;due_date\n",
            "(columns must be separated by commas)",
        ),
        (
            b"external_id,number,customer,currency,amount_minor,issued_on,due_date\n",
            "missing column: customer_id or customer_external_id; unknown column(s): customer",
        ),
        (b"", "the file is empty"),
    ],
)
def test_unreadable_file_exits_2_and_imports_nothing(
    sqlite_engine: Engine, tmp_path: Path, content: bytes, words: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(content)

    result = invoke(["import", "invoices", str(path)], cli_env(sqlite_engine))

    assert result.exit_code == 2, result.output
    assert "nothing imported:" in result.output
    assert words in " ".join(result.output.split())
    assert count(sqlite_engine, Invoice) == 0
    assert not (tmp_path / "in.rejects.csv").exists()


def test_cli_imports_customers_as_the_api_does(engine: Engine, tmp_path: Path) -> None:
    header = ["external_id", "name", "email", "phone", "timezone", "locale", "segment", "iban"]
    rows = [
        ["C-1", "Acme GmbH", "ap@acme.example.com", "+4930123456", "Europe/Berlin", "de", "", ""],
        ["C-2", "Globex", "", "", "", "", "key", "DE89 3704 0044 0532 0130 00"],
        ["C-3", "Initech", "not-an-email", "", "Mars/Olympus", "", "", ""],
        ["C-2", "Globex Corp", "", "", "", "", "key", ""],
    ]
    path = write_csv(tmp_path / "customers.csv", header, rows)

    first = invoke(["import", "customers", str(path)], cli_env(engine))

    assert first.exit_code == 1, first.output
    rejects = read_rows(tmp_path / "customers.rejects.csv")
    assert [(r[0], r[-2], r[-1]) for r in rejects[1:]] == [
        (
            "C-3",
            "4",
            "email: value is not a valid email address: An email address must have an @-sign.; "
            "timezone: unknown time zone 'Mars/Olympus': expected an IANA name such as "
            "Europe/Berlin",
        ),
        (
            "C-2",
            "5",
            "external_id: customer 'C-2' appears earlier in this file (line 3) with different data",
        ),
    ]
    with Session(engine) as s:
        got = {c.external_id: c for c in s.exec(select(Customer)).all()}
    assert sorted(got) == ["C-1", "C-2"]
    c1, c2 = got["C-1"], got["C-2"]
    assert (c1.name, c1.email, c1.phone, c1.timezone, c1.locale, c1.segment, c1.iban) == (
        "Acme GmbH",
        "ap@acme.example.com",
        "+4930123456",
        "Europe/Berlin",
        "de",
        "standard",
        None,
    )
    assert (c2.email, c2.phone, c2.timezone, c2.locale, c2.segment, c2.iban) == (
        None,
        None,
        "UTC",
        "en",
        "key",
        "DE89370400440532013000",
    )

    rows[1][1] = "Globex Corporation"
    write_csv(path, header, rows[:2])
    again = invoke(["import", "customers", str(path)], cli_env(engine))

    assert again.exit_code == 1, again.output
    assert [r[-1] for r in read_rows(tmp_path / "customers.rejects.csv")[1:]] == [
        "customer 'C-2' already exists with different data (different: name)"
    ]
    write_csv(path, header, rows[:1])
    same = invoke(["import", "customers", str(path)], cli_env(engine))
    assert same.exit_code == 0, same.output
    assert read_rows(tmp_path / "customers.rejects.csv") == [[*header, "line", "reason"]]
    assert count(engine, Customer) == 2


async def test_a_row_stored_meanwhile_by_the_api_does_not_fail_the_batch(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cust = await h.customer(external_id="C-1")
    pol = await h.policy(
        name="short", steps=[{"key": "due", "offset": "P1D"}], escalate_after="P9D"
    )
    requests = bodies(cust["external_id"], pol["name"], date.today())
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(requests))
    real = bulk.new_invoice
    raced: list[str] = []

    def racing(*args: Any) -> Invoice:
        """Store the same invoice from another session first, as a concurrent POST would."""
        if args[0].external_id == "X-2" and not raced:
            raced.append("X-2")
            with Session(h.engine) as s:
                s.add(real(*args))
                s.commit()
        return real(*args)

    monkeypatch.setattr(bulk, "new_invoice", racing)

    result = await import_file(h, path)

    assert raced == ["X-2"]
    assert (result.created, result.unchanged, result.rejected) == (3, 1, 0)
    assert (result.workflows_started, result.workflows_running, result.exit_code) == (4, 0, 0)
    assert count(h.engine, Invoice) == 4
    for body in requests:
        await running(h, stored(h.engine, body["external_id"])[0].id)


async def test_invoice_lines_are_json_cells(h: Harness, tmp_path: Path) -> None:
    await h.customer(external_id="C-1")
    columns = [*INVOICE_COLUMNS[:7], "lines"]
    base = ["C-1", "EUR", "1000", "2026-11-01", "2026-12-01"]
    path = write_csv(
        tmp_path / "in.csv",
        columns,
        [
            [
                "L-1",
                "1",
                *base,
                '[{"description": "Work", "unit_price_minor": 1000, "amount_minor": 1000}]',
            ],
            ["L-2", "2", *base, "Work, 1000"],
            ["L-3", "3", *base, '[{"description": "Work"}]'],
        ],
    )

    result = await import_file(h, path)

    assert (result.created, result.rejected) == (1, 2)
    assert [(r[0], r[-1]) for r in read_rows(tmp_path / "in.rejects.csv")[1:]] == [
        ("L-2", "lines: not valid JSON (Expecting value: line 1 column 1 (char 0))"),
        ("L-3", "lines.0.unit_price_minor: Field required; lines.0.amount_minor: Field required"),
    ]
    l1, _ = stored(h.engine, "L-1")
    assert l1.lines == [
        {"description": "Work", "quantity": "1", "unit_price_minor": 1000, "amount_minor": 1000}
    ]
