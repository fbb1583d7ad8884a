"""The API on SQLite and PostgreSQL: validation, auth, idempotency, webhooks. Workflows run on
the time-skipping server with the real worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.testing import WorkflowEnvironment

from arflow.invoices import service as services
from models import Customer, DunningPolicy, Invoice, Payment
from tests.conftest import Harness, harness
from tests.webhook import signed_payment
from workflows.invoice import InvoiceWorkflow


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (workflows apply signals asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def error_of(resp: Any) -> str:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return str(body["error"]["message"])


# -- auth ---------------------------------------------------------------------------------


async def test_requests_need_a_known_key_and_the_right_role(h: Harness) -> None:
    resp = await h.http.get("/v1/customers/1")
    assert resp.status_code == 401
    assert "missing bearer" in error_of(resp)
    resp = await h.http.get("/v1/customers/1", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401
    assert "unknown API key" in error_of(resp)
    resp = await h.post("/v1/customers", {"external_id": "x", "name": "x"}, role="viewer")
    assert resp.status_code == 403
    assert "specialist" in error_of(resp)
    resp = await h.post("/v1/policies", {"name": "p"}, role="specialist")
    assert resp.status_code == 403
    assert count(h.engine, Customer) == 0


# -- customers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"phone": "030 123456"}, "phone", "E.164"),
        ({"email": "not-an-email"}, "email", "email"),
        ({"locale": "english"}, "locale", "pattern"),
        ({"nickname": "x"}, "nickname", "unknown field"),
        ({"name": ""}, "name", "at least 1"),
    ],
)
async def test_bad_customer_is_a_422_naming_the_field(
    h: Harness, override: dict[str, Any], field: str, words: str
) -> None:
    body = {"external_id": "C-1", "name": "Acme", "timezone": "UTC"} | override
    resp = await h.post("/v1/customers", body)
    assert resp.status_code == 422, resp.text
    details = resp.json()["error"]["details"]
    assert any(d["field"] == field and words in d["message"] for d in details), details
    assert count(h.engine, Customer) == 0


async def test_customer_round_trip_and_duplicate(h: Harness) -> None:
    created = await h.customer(external_id="C-42", timezone="America/New_York")
    got = await h.get(f"/v1/customers/{created['id']}")
    assert got.status_code == 200
    assert got.json()["timezone"] == "America/New_York"
    dup = await h.post("/v1/customers", {"external_id": "C-42", "name": "Other"})
    assert dup.status_code == 409
    assert "already exists" in error_of(dup)
    missing = await h.get("/v1/customers/999")
    assert missing.status_code == 404
    assert "customer 999 not found" in error_of(missing)


# -- policies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"escalate_after": "45 days"}, "malformed ISO 8601 duration"),
        ({"escalate_after": "-P1D"}, "must not be negative"),
        ({"steps": [{"key": "a", "offset": "P1X"}]}, "malformed ISO 8601 duration"),
        ({"steps": [{"key": "a", "offset": "P1D", "template": "nope"}]}, "unknown template"),
        ({"steps": [{"key": "a", "offset": "P7D"}, {"key": "b", "offset": "P1D"}]}, "ordered"),
        ({"steps": [{"key": "a", "offset": "P60D"}]}, "before escalate_after"),
        ({"steps": [{"key": "a", "offset": "P1D"}, {"key": "a", "offset": "P2D"}]}, "unique"),
        ({"steps": [{"key": "a", "offset": "P1D", "channel": "fax"}]}, "channel"),
        ({"send_at": "9am"}, "HH:MM"),
        ({"steps": []}, "at least 1"),
    ],
)
async def test_bad_policy_is_a_422(h: Harness, body: dict[str, Any], words: str) -> None:
    full = {"name": "p", "escalate_after": "P45D", "steps": [{"key": "a", "offset": "P1D"}]} | body
    resp = await h.post("/v1/policies", full, role="admin")
    assert resp.status_code == 422, resp.text
    assert words in error_of(resp)


async def test_policies_list_includes_the_default(h: Harness) -> None:
    await h.policy(escalate_after="PT30S", steps=[{"key": "s1", "offset": "PT5S"}])
    resp = await h.get("/v1/policies")
    names = [p["name"] for p in resp.json()]
    assert names[0] == "default"
    default = resp.json()[0]
    assert [s["offset"] for s in default["steps"]] == ["-P3D", "P1D", "P7D", "P14D", "P30D"]
    assert default["escalate_after"] == "P45D"
    dup = await h.post(
        "/v1/policies",
        {"name": "default", "escalate_after": "P1D", "steps": [{"key": "a", "offset": "PT0S"}]},
        role="admin",
    )
    assert dup.status_code == 409, dup.text


# -- invoices -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"amount_minor": 0}, "greater than 0"),
        ({"amount_minor": -100}, "greater than 0"),
        ({"amount_minor": 12.5}, "integer"),
        ({"amount_minor": "1000"}, "integer"),
        ({"currency": "EUX"}, "unknown currency"),
        ({"due_date": "2026-01-01", "issued_on": "2026-02-01"}, "due_date must not be before"),
        ({"customer_id": 9999}, "unknown customer 9999"),
        ({"policy_name": "nope"}, "unknown policy"),
        ({"due_at": "2026-12-01T10:00:00"}, "UTC offset"),
        ({"colour": "red"}, "unknown field"),
    ],
)
async def test_bad_invoice_is_a_422_and_stores_nothing(
    h: Harness, override: dict[str, Any], words: str
) -> None:
    cust = await h.customer()
    body = {
        "external_id": "INV-1",
        "number": "2026-001",
        "customer_id": cust["id"],
        "amount_minor": 1000,
        "currency": "EUR",
        "issued_on": "2026-11-01",
        "due_date": "2026-12-01",
    } | override
    resp = await h.post("/v1/invoices", body)
    assert resp.status_code == 422, resp.text
    assert words in error_of(resp)
    assert count(h.engine, Invoice) == 0


async def test_invoice_create_is_idempotent_on_external_id(h: Harness) -> None:
    cust = await h.customer()
    today = (await h.env.get_current_time()).date()  # the shared test server's clock moves
    due = today + timedelta(days=30)
    body = {
        "external_id": "INV-7",
        "number": "2026-007",
        "customer_external_id": cust["external_id"],
        "amount_minor": 5000,
        "currency": "usd",
        "issued_on": today.isoformat(),
        "due_date": due.isoformat(),
    }
    first = await h.post("/v1/invoices", body)
    assert first.status_code == 201, first.text
    inv = first.json()
    assert inv["currency"] == "USD"
    assert (inv["status"], inv["balance_minor"]) == ("open", 5000)
    assert inv["due_at"] == f"{due.isoformat()}T23:59:59Z"
    assert inv["next_action"]["step_key"] == "before_due"
    again = await h.post("/v1/invoices", body)
    assert again.status_code == 200
    assert again.json()["id"] == inv["id"]
    changed = await h.post("/v1/invoices", body | {"amount_minor": 6000})
    assert changed.status_code == 409
    assert "different data" in error_of(changed)
    assert count(h.engine, Invoice) == 1
    stored = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert stored["amount_minor"] == 5000  # the conflicting request changed nothing
    desc = await h.client.get_workflow_handle(inv["workflow_id"]).describe()
    assert desc.id.endswith(f"invoice-{inv['id']}")
    # a second start for the same invoice is rejected by Temporal, never a second workflow
    with Session(h.engine) as s:
        row = s.get(Invoice, inv["id"])
        assert row is not None
        owner = s.get(Customer, row.customer_id)
        rules = s.get(DunningPolicy, row.policy_id)
        assert owner is not None and rules is not None
        inp = services.workflow_input(row, owner, rules)
    with pytest.raises(WorkflowAlreadyStartedError):
        await h.client.start_workflow(
            InvoiceWorkflow.run,
            inp,
            id=inv["workflow_id"],
            task_queue=h.settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    again_desc = await h.client.get_workflow_handle(inv["workflow_id"]).describe()
    assert again_desc.run_id == desc.run_id  # still the one and only run
    timeline = (await h.get(f"/v1/invoices/{inv['id']}/timeline")).json()
    assert [e["kind"] for e in timeline] == ["created"]
    assert timeline[0]["actor"].startswith("specialist:")


async def test_list_filters(h: Harness) -> None:
    a = await h.customer()
    b = await h.customer()
    # "overdue" is judged by the wall clock, not the (skipped-ahead) test server's clock
    real_today = datetime.now(UTC).date()
    late = await h.invoice(
        a["id"],
        issued_on=(real_today - timedelta(days=40)).isoformat(),
        due_date=(real_today - timedelta(days=10)).isoformat(),
    )
    await h.invoice(a["id"])
    other = await h.invoice(b["id"])
    page = (await h.get("/v1/invoices", customer_id=a["id"])).json()
    assert page["total"] == 2
    page = (await h.get("/v1/invoices", overdue="true")).json()
    assert [i["id"] for i in page["items"]] == [late["id"]]
    await h.post(f"/v1/invoices/{other['id']}/cancel", {"reason": "duplicate"})
    page = (await h.get("/v1/invoices", status="cancelled")).json()
    assert [i["id"] for i in page["items"]] == [other["id"]]
    bad = await h.get("/v1/invoices", status="lost")
    assert bad.status_code == 422
    missing = await h.get("/v1/invoices/424242")
    assert missing.status_code == 404


# -- payment webhook ----------------------------------------------------------------------


async def test_webhook_rejects_bad_signatures(h: Harness) -> None:
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    old = await signed_payment(
        h, stamp=int(time.time()) - 301, invoice_id=inv["id"], amount_minor=1
    )
    assert old.status_code == 401
    assert "outside 300 s" in error_of(old)
    forged = await h.http.post(
        "/v1/webhooks/payments",
        json={"event_id": "e", "invoice_id": inv["id"], "amount_minor": 1, "currency": "EUR"},
        headers={"Arflow-Signature": f"t={int(time.time())},v1=deadbeef"},
    )
    assert forged.status_code == 401
    missing = await h.http.post("/v1/webhooks/payments", json={})
    assert missing.status_code == 401
    assert count(h.engine, Payment) == 0


async def test_same_event_twice_is_applied_once(h: Harness) -> None:
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    first = await signed_payment(h, event_id="evt_1", invoice_id=inv["id"], amount_minor=30_000)
    second = await signed_payment(h, event_id="evt_1", invoice_id=inv["id"], amount_minor=30_000)
    assert first.json()["status"] == "accepted"
    assert second.status_code == 200
    assert second.json()["payment_id"] == first.json()["payment_id"]

    def balance() -> int | None:
        got = h.events(inv["id"])
        return 90_000 if any(e.kind == "payment_applied" for e in got) else None

    assert await eventually(balance) == 90_000
    await asyncio.sleep(0.3)  # give a wrongly applied second copy time to show up
    stored = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert stored["balance_minor"] == 90_000
    assert [e.kind for e in h.events(inv["id"])].count("payment_applied") == 1
    third = await signed_payment(h, event_id="evt_1", invoice_id=inv["id"], amount_minor=30_000)
    assert third.json()["status"] == "duplicate"
    clash = await signed_payment(h, event_id="evt_1", invoice_id=inv["id"], amount_minor=1)
    assert clash.status_code == 409


async def test_webhook_validation(h: Harness) -> None:
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    wrong_currency = await signed_payment(h, invoice_id=inv["id"], amount_minor=100, currency="USD")
    assert wrong_currency.status_code == 200  # taken, but not applied: it waits in the queue
    assert wrong_currency.json()["status"] == "unmatched"
    queue = (await h.get("/v1/unmatched-payments")).json()["items"]
    assert [(q["id"], q["amount_minor"], q["currency"]) for q in queue] == [
        (wrong_currency.json()["line_id"], 100, "USD")
    ]
    assert queue[0]["reason"] == "paid in USD, the invoice is in EUR"
    unknown = await signed_payment(h, invoice_external_id="nope", amount_minor=100)
    assert unknown.status_code == 422
    assert "unknown invoice" in error_of(unknown)
    negative = await signed_payment(h, invoice_id=inv["id"], amount_minor=-5)
    assert negative.status_code == 422
    floaty = await signed_payment(h, invoice_id=inv["id"], amount_minor=10.5)
    assert floaty.status_code == 422
    both = await signed_payment(h, invoice_id=inv["id"], invoice_external_id="x", amount_minor=5)
    assert both.status_code == 422
    assert count(h.engine, Payment) == 0


async def test_payment_for_a_closed_invoice_is_recorded(h: Harness) -> None:
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    resp = await h.post(f"/v1/invoices/{inv['id']}/cancel", {"reason": "wrong customer"})
    assert resp.status_code == 200
    late = await signed_payment(h, invoice_id=inv["id"], amount_minor=120_000)
    assert late.status_code == 200
    assert late.json()["status"] == "recorded"
    with Session(h.engine) as s:
        payment = s.exec(select(Payment)).one()
    assert (payment.status, payment.amount_minor) == ("unapplied", 120_000)
    kinds = [e.kind for e in h.events(inv["id"])]
    assert kinds[-1] == "payment_after_close"
    stored = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert (stored["status"], stored["balance_minor"]) == ("cancelled", 120_000)
    owner = (await h.get(f"/v1/customers/{cust['id']}")).json()
    assert owner["credit"] == {"EUR": 120_000}  # the customer's money, usable on another invoice


async def test_cancel_needs_a_reason_and_an_open_invoice(h: Harness) -> None:
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    resp = await h.post(f"/v1/invoices/{inv['id']}/cancel", {"reason": ""})
    assert resp.status_code == 422
    resp = await h.post(f"/v1/invoices/{inv['id']}/cancel", {"reason": "x"}, role="viewer")
    assert resp.status_code == 403
    resp = await h.post("/v1/invoices/999/cancel", {"reason": "x"})
    assert resp.status_code == 404
    stored = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert stored["status"] == "open"


async def test_malformed_json_is_a_422(h: Harness) -> None:
    resp = await h.http.post(
        "/v1/customers",
        content=b"{not json",
        headers=h.as_role("specialist") | {"Content-Type": "application/json"},
    )
    assert resp.status_code == 422
    assert error_of(resp)
