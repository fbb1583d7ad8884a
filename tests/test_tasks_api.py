"""Tasks that can be worked (issue 17): every new task has an owner, ``GET /v1/tasks`` filters
and pages them, ``PATCH /v1/tasks/{id}`` assigns, snoozes and closes one with an event on the
invoice's timeline, and migration 0018 fills the new columns of the tasks already there.

The API runs in-process without Temporal (nothing here goes to a workflow), on SQLite and
PostgreSQL in turn."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alembic import command
from api.app import create_app
from arflow.config import Settings
from arflow.invoices import tasks, worklist
from arflow.invoices.recording import record_change
from arflow.migrate import alembic_config, upgrade
from arflow.policies import service as policies
from models import Customer, Invoice, InvoiceEvent, Task
from tests.conftest import API_KEYS, ROOT, WEBHOOK_SECRET
from tests.test_api import error_of
from tests.test_web import Web, seed_invoice, web_settings
from workflows.types import ChangeSet, EventSpec, TaskRecord

NOW = datetime.now(UTC)
CSRF = "X-CSRF-Token"


@dataclass
class Api:
    http: httpx.AsyncClient
    engine: Engine

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEYS[role]}"}

    async def get(self, role: str = "viewer", **params: Any) -> httpx.Response:
        return await self.http.get("/v1/tasks", params=params, headers=self.headers(role))

    async def patch(
        self, task_id: int | str, body: Any, role: str = "specialist"
    ) -> httpx.Response:
        return await self.http.patch(f"/v1/tasks/{task_id}", json=body, headers=self.headers(role))

    def events(self, kind: str) -> list[InvoiceEvent]:
        with Session(self.engine) as s:
            stmt = select(InvoiceEvent).where(InvoiceEvent.kind == kind)
            return list(s.exec(stmt.order_by(InvoiceEvent.id)).all())  # type: ignore[arg-type]

    def task(self, task_id: int) -> Task:
        with Session(self.engine) as s:
            found = s.get(Task, task_id)
            assert found is not None
            return found


@pytest.fixture
async def api(engine: Engine, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        task_queue=f"tq-{uuid.uuid4()}",
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
    )
    app = create_app(settings, engine=engine, temporal=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        yield Api(http=http, engine=engine)


def customer(engine: Engine, name: str = "Bergmann GmbH", collector: str | None = None) -> int:
    with Session(engine) as s:
        row = Customer(
            external_id=f"C-{uuid.uuid4().hex[:8]}",
            name=name,
            timezone="UTC",
            assigned_collector=collector,
        )
        s.add(row)
        s.commit()
        assert row.id is not None
        return row.id


def invoice(engine: Engine, customer_id: int, collector: str | None = None) -> int:
    with Session(engine) as s:
        policy = policies.ensure_default_policy(s)
        assert policy.id is not None
        today = NOW.date()
        row = Invoice(
            external_id=f"INV-{uuid.uuid4().hex[:8]}",
            number=f"2026-{uuid.uuid4().hex[:6]}",
            currency="EUR",
            issued_on=today - timedelta(days=40),
            due_date=today - timedelta(days=10),
            due_at=NOW - timedelta(days=10),
            customer_id=customer_id,
            policy_id=policy.id,
            amount_minor=120_000,
            balance_minor=120_000,
            request_hash="x" * 64,
            collector=collector,
        )
        s.add(row)
        s.commit()
        assert row.id is not None
        return row.id


def task(
    engine: Engine,
    invoice_id: int,
    kind: str = "call",
    due_at: datetime | None = NOW,
    created_at: datetime | None = None,
) -> int:
    with Session(engine) as s:
        row = tasks.new_task(s, invoice_id, kind, {"n": 1}, due_at=due_at, created_at=created_at)
        s.commit()
        assert row.id is not None
        return row.id


async def collector(api: Api, name: str, email: str) -> int:
    resp = await api.http.post(
        "/v1/collectors", json={"name": name, "email": email}, headers=api.headers("admin")
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


# -- the default owner --------------------------------------------------------------------------


def test_a_new_task_is_owned_by_the_invoice_collector_else_the_customer_one(
    engine: Engine,
) -> None:
    both = invoice(engine, customer(engine, collector="cust@acme.example"), "inv@acme.example")
    customer_only = invoice(engine, customer(engine, collector="cust@acme.example"))
    blank = invoice(engine, customer(engine, collector="  "), "")
    nobody = invoice(engine, customer(engine))
    with Session(engine) as s:
        owners = [s.get(Task, task(engine, i)) for i in (both, customer_only, blank, nobody)]
    assert [t.assignee if t else "missing" for t in owners] == [
        "inv@acme.example",
        "cust@acme.example",
        None,
        None,
    ]


def test_a_task_the_workflow_records_gets_the_default_owner(engine: Engine) -> None:
    """The real path of a dispute past its SLA: the workflow's recorded change."""
    invoice_id = invoice(engine, customer(engine, collector="cust@acme.example"))
    change = ChangeSet(
        invoice_id=invoice_id,
        actor="workflow",
        dedupe_key="sla:1",
        events=[EventSpec("dispute_sla_missed", {})],
        status="disputed",
        hold=None,
        balance_minor=120_000,
        next_action=None,
        task=TaskRecord(kind=tasks.DISPUTE_OVERDUE, due_at=NOW, data={"dispute_id": 1}),
    )
    with Session(engine) as s:
        record_change(s, change)
        found = s.exec(select(Task).where(Task.invoice_id == invoice_id)).one()
    assert (found.kind, found.assignee) == (tasks.DISPUTE_OVERDUE, "cust@acme.example")


def test_every_task_is_created_through_new_task() -> None:
    """A ``Task(...)`` built anywhere else would have no owner: only ``new_task`` builds one."""
    builders = []
    for package in ("arflow", "activities", "api"):
        for path in (ROOT / package).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), start=1):
                if "Task(" in line and "class " not in line and "new_task" not in line:
                    builders.append(f"{path.relative_to(ROOT)}:{n}")
    assert [b.split(":")[0] for b in builders] == ["arflow/invoices/tasks.py"], builders


# -- the list -----------------------------------------------------------------------------------


async def test_tasks_are_filtered_and_paged_soonest_due_first(api: Api) -> None:
    engine = api.engine
    acme = customer(engine, "Acme AG")
    bergmann = customer(engine, "Bergmann GmbH", collector="ben@acme.example")
    inv_a = invoice(engine, acme, "ann@acme.example")
    inv_b = invoice(engine, bergmann)
    late = task(engine, inv_a, "call", NOW + timedelta(days=3))
    undated = task(engine, inv_a, "legal_review", None)
    soon = task(engine, inv_b, "call", NOW - timedelta(days=1))
    unowned = task(engine, invoice(engine, acme), "delivery_uncertain", NOW + timedelta(days=1))

    everything = (await api.get()).json()
    assert [t["id"] for t in everything["items"]] == [soon, unowned, late, undated]
    assert (everything["total"], everything["limit"], everything["offset"]) == (4, 50, 0)
    first = everything["items"][0]
    assert first["invoice_id"] == inv_b and first["customer_id"] == bergmann
    assert first["customer_name"] == "Bergmann GmbH" and first["invoice_number"].startswith("2026-")
    assert (first["status"], first["assignee"], first["data"]) == (
        "open",
        "ben@acme.example",
        {"n": 1},
    )

    async def ids(**params: Any) -> list[int]:
        resp = await api.get(**params)
        assert resp.status_code == 200, resp.text
        return [t["id"] for t in resp.json()["items"]]

    assert await ids(kind="call") == [soon, late]
    assert await ids(assignee="ann@acme.example") == [late, undated]
    assert await ids(assignee="none") == [unowned]
    assert await ids(customer_id=acme) == [unowned, late, undated]
    assert await ids(invoice_id=inv_a) == [late, undated]
    assert await ids(due_before=(NOW + timedelta(days=2)).isoformat()) == [soon, unowned]
    naive = (NOW + timedelta(days=2)).replace(tzinfo=None).isoformat()
    assert await ids(due_before=naive) == [soon, unowned]  # without a zone: UTC
    assert await ids(kind="call", customer_id=acme) == [late]
    assert await ids(status="done") == []
    page = (await api.get(limit=2, offset=1)).json()
    assert [t["id"] for t in page["items"]] == [unowned, late]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    assert (await api.get(offset=10)).json() == {"items": [], "total": 4, "limit": 50, "offset": 10}


async def test_equal_due_dates_are_ordered_by_creation_then_id(api: Api) -> None:
    inv = invoice(api.engine, customer(api.engine))
    newer = task(api.engine, inv, due_at=NOW, created_at=NOW)
    older = task(api.engine, inv, due_at=NOW, created_at=NOW - timedelta(hours=1))
    same = task(api.engine, inv, due_at=NOW, created_at=NOW)
    assert [t["id"] for t in (await api.get()).json()["items"]] == [older, newer, same]


async def test_bad_and_huge_query_values_are_422_not_500(api: Api) -> None:
    for params in (
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"offset": 2**40},
        {"customer_id": 2**63},
        {"invoice_id": 0},
        {"status": "closed"},
        {"due_before": "tomorrow"},
        {"kind": "k" * 51},
    ):
        resp = await api.get(**params)
        assert resp.status_code == 422, (params, resp.text)
    assert (await api.get(offset=2**31 - 1)).status_code == 200
    assert (await api.get(limit=500)).status_code == 200


# -- snoozing -----------------------------------------------------------------------------------


async def test_a_snoozed_task_leaves_the_open_list_and_comes_back_after(api: Api) -> None:
    inv = invoice(api.engine, customer(api.engine))
    sleeper, awake = task(api.engine, inv), task(api.engine, inv)
    until = NOW + timedelta(days=2)
    resp = await api.patch(sleeper, {"snoozed_until": until.isoformat()})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "snoozed"
    assert datetime.fromisoformat(resp.json()["snoozed_until"]) == until

    open_ids = [t["id"] for t in (await api.get(status="open")).json()["items"]]
    snoozed = [t["id"] for t in (await api.get(status="snoozed")).json()["items"]]
    assert (open_ids, snoozed) == ([awake], [sleeper])
    assert {t["id"] for t in (await api.get()).json()["items"]} == {sleeper, awake}
    [event] = api.events("task_snoozed")
    assert event.data["task_id"] == sleeper and event.data["previous"] is None
    assert datetime.fromisoformat(event.data["snoozed_until"]) == until
    assert event.actor.startswith("specialist")

    with Session(api.engine) as s:  # two days and a minute later
        later, _ = worklist.list_tasks(s, status="open", now=until + timedelta(minutes=1))
        still, _ = worklist.list_tasks(s, status="open", now=until - timedelta(minutes=1))
    assert [t.id for t in later] == [sleeper, awake] and [t.id for t in still] == [awake]

    woken = await api.patch(sleeper, {"snoozed_until": None})
    assert woken.status_code == 200 and woken.json()["status"] == "open"
    assert len(api.events("task_snoozed")) == 2
    assert [t["id"] for t in (await api.get(status="open")).json()["items"]] == [sleeper, awake]


async def test_a_snooze_must_be_in_the_next_year(api: Api) -> None:
    tid = task(api.engine, invoice(api.engine, customer(api.engine)))
    for when in (NOW - timedelta(minutes=1), NOW + timedelta(days=366)):
        resp = await api.patch(tid, {"snoozed_until": when.isoformat()})
        assert resp.status_code == 422, resp.text
        assert "snoozed_until" in error_of(resp)
    assert api.task(tid).snoozed_until is None and api.events("task_snoozed") == []
    ok = await api.patch(tid, {"snoozed_until": (NOW + timedelta(days=364)).isoformat()})
    assert ok.status_code == 200, ok.text


# -- assigning ----------------------------------------------------------------------------------


async def test_assigning_checks_the_collectors_list_once_it_has_entries(api: Api) -> None:
    tid = task(api.engine, invoice(api.engine, customer(api.engine)))
    free = await api.patch(tid, {"assignee": "anyone"})  # the list is empty: free text
    assert free.status_code == 200 and free.json()["assignee"] == "anyone"

    jana = await collector(api, "Jana Weber", "jana@acme.example")
    await collector(api, "Otto Old", "otto@acme.example")
    off = await api.http.patch(
        "/v1/collectors/" + str(jana + 1), json={"active": False}, headers=api.headers("admin")
    )
    assert off.status_code == 200
    for unknown in ("Max Unknown", "otto@acme.example"):
        resp = await api.patch(tid, {"assignee": unknown})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["details"][0]["field"] == "assignee"
    assert api.task(tid).assignee == "anyone"

    ok = await api.patch(tid, {"assignee": " jana@acme.example "})
    assert ok.status_code == 200 and ok.json()["assignee"] == "jana@acme.example"
    again = await api.patch(tid, {"assignee": "jana@acme.example"})  # no change: no event
    assert again.status_code == 200
    gone = await api.patch(tid, {"assignee": None})
    assert gone.status_code == 200 and gone.json()["assignee"] is None
    events = [(e.data["previous"], e.data["assignee"]) for e in api.events("task_assigned")]
    assert events == [
        (None, "anyone"),
        ("anyone", "jana@acme.example"),
        ("jana@acme.example", None),
    ]
    assert [t["id"] for t in (await api.get(assignee="none")).json()["items"]] == [tid]


# -- closing ------------------------------------------------------------------------------------


async def test_closing_records_the_outcome_once_and_a_second_close_is_409(api: Api) -> None:
    inv = invoice(api.engine, customer(api.engine))
    tid = task(api.engine, inv)
    body = {"status": "done", "outcome": "resolved", "note": "customer paid by phone"}
    resp = await api.patch(tid, body)
    assert resp.status_code == 200, resp.text
    shown = resp.json()
    assert (shown["status"], shown["outcome"], shown["note"]) == (
        "done",
        "resolved",
        "customer paid by phone",
    )
    assert shown["closed_by"].startswith("specialist") and shown["closed_at"]
    [event] = api.events("task_closed")
    assert event.invoice_id == inv and event.actor == shown["closed_by"]
    assert event.data == {
        "task_id": tid,
        "task": "call",
        "status": "done",
        "previous": "open",
        "outcome": "resolved",
        "note": "customer paid by phone",
    }

    again = await api.patch(tid, {"status": "done", "outcome": "duplicate"})
    assert again.status_code == 409 and "already done" in error_of(again)
    later = await api.patch(tid, {"assignee": "someone"})
    assert later.status_code == 409
    assert len(api.events("task_closed")) == 1 and api.task(tid).outcome == "resolved"
    with Session(api.engine) as s:  # its cause ending afterwards closes nothing more
        assert tasks.close_tasks(s, [inv], ["call"], "invoice paid") == []
    assert [t["id"] for t in (await api.get(status="done")).json()["items"]] == [tid]
    assert (await api.get(status="open")).json()["total"] == 0


async def test_closing_by_its_cause_fills_the_columns_and_keeps_the_data_keys(api: Api) -> None:
    inv = invoice(api.engine, customer(api.engine))
    tid = task(api.engine, inv, tasks.CONTACT_FAILED)
    with Session(api.engine) as s:
        assert tasks.close_tasks(s, [inv], [tasks.CONTACT_FAILED], "invoice paid") == [tid]
        s.commit()
    found = api.task(tid)
    assert (found.status, found.outcome, found.note, found.closed_by) == (
        "done",
        "cause_ended",
        "invoice paid",
        "workflow",
    )
    assert found.closed_at is not None
    assert found.data["closed_reason"] == "invoice paid" and found.data["closed_by"] == "workflow"
    resp = await api.patch(tid, {"status": "done", "outcome": "resolved"})
    assert resp.status_code == 409


async def test_a_change_can_assign_snooze_and_close_at_once_with_one_event_each(api: Api) -> None:
    tid = task(api.engine, invoice(api.engine, customer(api.engine)))
    resp = await api.patch(
        tid, {"assignee": "ann", "status": "done", "outcome": "other", "note": None}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["assignee"] == "ann" and resp.json()["note"] is None
    assert [len(api.events(k)) for k in ("task_assigned", "task_snoozed", "task_closed")] == [
        1,
        0,
        1,
    ]


async def test_bad_bodies_are_422_and_change_nothing(api: Api) -> None:
    tid = task(api.engine, invoice(api.engine, customer(api.engine)))
    future = (NOW + timedelta(days=1)).isoformat()
    bodies: list[Any] = [
        {},
        {"assignee": "ann", "colour": "red"},
        {"status": "done"},
        {"status": "done", "outcome": "sorted"},
        {"status": "open"},
        {"status": None},
        {"outcome": "resolved"},
        {"note": "just a note"},
        {"assignee": "   "},
        {"assignee": "a" * 101},
        {"status": "done", "outcome": "resolved", "note": "n" * 2001},
        {"snoozed_until": "next week"},
        {"snoozed_until": (NOW - timedelta(days=1)).isoformat()},
        {"snoozed_until": future, "status": "done"},
        [],
    ]
    for body in bodies:
        resp = await api.patch(tid, body)
        assert resp.status_code == 422, (body, resp.text)
        assert "error" in resp.json()
    found = api.task(tid)
    assert (found.status, found.assignee, found.snoozed_until) == ("open", None, None)
    events = [*api.events("task_assigned"), *api.events("task_snoozed"), *api.events("task_closed")]
    assert events == []


# -- who may, and ids ---------------------------------------------------------------------------


async def test_a_viewer_lists_but_cannot_change_tasks(api: Api) -> None:
    tid = task(api.engine, invoice(api.engine, customer(api.engine)))
    assert (await api.get("viewer")).status_code == 200
    refused = await api.patch(tid, {"assignee": "ann"}, role="viewer")
    assert refused.status_code == 403
    anonymous = await api.http.patch(f"/v1/tasks/{tid}", json={"assignee": "ann"})
    assert anonymous.status_code == 401
    assert (await api.http.get("/v1/tasks")).status_code == 401
    assert api.task(tid).assignee is None
    assert (await api.patch(tid, {"assignee": "ann"}, role="admin")).status_code == 200


async def test_unknown_and_huge_task_ids_are_404_or_422_never_500(api: Api) -> None:
    body = {"assignee": "ann"}
    for task_id, status in (
        (999_999, 404),
        (2**31 - 1, 404),
        (2**31, 422),
        (2**64, 422),
        ("x", 422),
        (-1, 404),
    ):
        resp = await api.patch(task_id, body)
        assert resp.status_code == status, (task_id, resp.text)
        assert "error" in resp.json()


# -- migration 0018 -----------------------------------------------------------------------------


def test_the_migration_fills_owner_and_closing_of_existing_tasks(engine: Engine) -> None:
    """Tasks written before 0018: their owner from the invoice or the customer, and how the
    closed ones were closed from the keys their closers put in ``data``."""
    owned = invoice(engine, customer(engine, collector="cust@acme.example"), "inv@acme.example")
    by_customer = invoice(engine, customer(engine, collector="cust@acme.example"))
    nobody = invoice(engine, customer(engine))
    closed_at = "2026-11-02T10:15:00+00:00"
    rows = [
        Task(invoice_id=owned, kind="call", data={}),
        Task(
            invoice_id=by_customer,
            kind="contact_failed",
            status="done",
            data={"closed_reason": "invoice paid", "closed_at": closed_at, "closed_by": "provider"},
        ),
        Task(
            invoice_id=nobody,
            kind="call",
            status="done",
            data={"outcome": "reached", "by": "specialist:ab12", "at": closed_at, "note": "ok"},
        ),
        Task(
            invoice_id=nobody,
            kind="agency_placement_failed",
            status="done",
            data={"resolved": "the agency took it on a later attempt"},
        ),
        Task(invoice_id=nobody, kind="credit_approval", status="done", data={}),
    ]
    with Session(engine) as s:
        s.add_all(rows)
        s.commit()
        ids = [r.id for r in rows]
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0018-1")  # the tasks as they were before
    try:
        upgrade(engine, "0018")
        with Session(engine) as s:
            found = [s.get(Task, i) for i in ids]
    finally:
        upgrade(engine)  # back to the head: the PostgreSQL database is shared by later tests
    got = [
        (t.assignee, t.outcome, t.note, t.closed_by, t.closed_at) for t in found if t is not None
    ]
    at = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
    assert got == [
        ("inv@acme.example", None, None, None, None),
        ("cust@acme.example", "cause_ended", "invoice paid", "provider", at),
        (None, "reached", "ok", "specialist:ab12", at),
        (None, "cause_ended", "the agency took it on a later attempt", None, None),
        (None, None, None, None, None),
    ]
    assert all(t is not None and t.snoozed_until is None for t in found)


# -- the dashboard's worklist -------------------------------------------------------------------


async def test_the_dashboard_worklist_closes_assigns_and_snoozes_a_task(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    app = create_app(web_settings(sqlite_engine, tmp_path), engine=sqlite_engine, temporal=None)
    invoice_id = seed_invoice(sqlite_engine)
    first, second = task(sqlite_engine, invoice_id), task(sqlite_engine, invoice_id, "legal_review")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        web = Web(http=http, engine=sqlite_engine, invoice_id=invoice_id)
        token = await web.login("viewer")
        page = await http.get("/app/worklist")
        assert f'id="task-{first}"' in page.text and "Bergmann GmbH" in page.text
        assert "task-close" not in page.text  # a viewer sees no forms
        refused = await http.post(
            f"/app/tasks/{first}/close", data={"outcome": "resolved"}, headers={CSRF: token}
        )
        assert refused.status_code == 403

        http.cookies.clear()  # signed out
        token = await web.login("specialist")
        page = await http.get("/app/worklist")
        assert page.text.count('class="task-close"') == 2 and 'name="outcome"' in page.text
        missing = await http.post(f"/app/tasks/{first}/close", data={}, headers={CSRF: token})
        assert missing.status_code == 422 and "outcome" in missing.text
        closed = await http.post(
            f"/app/tasks/{first}/close",
            data={"outcome": "no_action_needed", "note": "paid already"},
            headers={CSRF: token},
        )
        assert closed.status_code == 200, closed.text
        assert "done: no_action_needed · paid already" in closed.text
        assert "task-close" not in closed.text
        again = await http.post(
            f"/app/tasks/{first}/close", data={"outcome": "resolved"}, headers={CSRF: token}
        )
        assert again.status_code == 409 and "already done" in again.text

        assigned = await http.post(
            f"/app/tasks/{second}/assign", data={"assignee": "ann"}, headers={CSRF: token}
        )
        assert assigned.status_code == 200 and "Assignee saved." in assigned.text
        until = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
        snoozed = await http.post(
            f"/app/tasks/{second}/snooze", data={"snoozed_until": until}, headers={CSRF: token}
        )
        assert snoozed.status_code == 200 and "snoozed until" in snoozed.text
        past = await http.post(
            f"/app/tasks/{second}/snooze",
            data={"snoozed_until": "2020-01-01T10:00"},
            headers={CSRF: token},
        )
        assert past.status_code == 422 and "in the future" in past.text
        unknown = await http.post(
            "/app/tasks/999999/assign", data={"assignee": "ann"}, headers={CSRF: token}
        )
        assert unknown.status_code == 404
        page = await http.get("/app/worklist")
        assert f'id="task-{first}"' not in page.text and f'id="task-{second}"' not in page.text
        assert "No open task." in page.text
    with Session(sqlite_engine) as s:
        kinds = s.exec(
            select(InvoiceEvent.kind).where(col(InvoiceEvent.kind).startswith("task_"))
        ).all()
        found = s.get(Task, second)
    assert sorted(kinds) == ["task_assigned", "task_closed", "task_snoozed"]
    assert found is not None and found.assignee == "ann" and found.snoozed_until is not None
    assert found.snoozed_until.strftime("%Y-%m-%dT%H:%M") == until  # the form's time is UTC
