"""The managed list of collectors (issue 15): a reminder sent in a collector's name gives a
listed, active collector's address as Reply-To, never an arbitrary string; a customer's
collector must be on the list; anything else falls back to the team's ``email_reply_to`` and
the fallback is recorded. Reminders go through the real SendGrid SDK to a local fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from alembic import command
from arflow.migrate import alembic_config
from models import Collector, Customer, InvoiceEvent
from tests.conftest import PROVIDERS, Harness, harness
from tests.faults.fakes import Answer, FakeProvider
from tests.test_api import error_of

TEAM_REPLY_TO = "ar-team@arflow.example.com"


@pytest.fixture
def provider_settings() -> dict[str, Any]:
    return PROVIDERS | {"email_reply_to": TEAM_REPLY_TO}


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path, with_worker=False) as h:
        yield h


async def _collector(h: Harness, name: str, email: str) -> dict[str, Any]:
    resp = await h.post("/v1/collectors", {"name": name, "email": email}, "admin")
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def test_collectors_are_listed_by_admins(h: Harness) -> None:
    jana = await _collector(h, " Jana Weber ", "Jana.Weber@ACME.example")
    assert (jana["name"], jana["email"], jana["active"]) == (
        "Jana Weber",
        "jana.weber@acme.example",
        True,
    )
    dup = await h.post("/v1/collectors", {"name": "J", "email": "jana.weber@acme.example"}, "admin")
    assert dup.status_code == 409
    for body in ({"name": "X", "email": "not an address"}, {"name": " ", "email": "x@y.example"}):
        bad = await h.post("/v1/collectors", body, "admin")
        assert bad.status_code == 422, bad.text
    refused = await h.post("/v1/collectors", {"name": "M", "email": "m@evil.example"})
    assert refused.status_code == 403  # a specialist may not add Reply-To addresses

    off = await h.http.patch(
        f"/v1/collectors/{jana['id']}", json={"active": False}, headers=h.as_role("admin")
    )
    assert off.status_code == 200 and off.json()["active"] is False
    null = await h.http.patch(
        f"/v1/collectors/{jana['id']}", json={"active": None}, headers=h.as_role("admin")
    )
    assert null.status_code == 422
    missing = await h.http.patch(
        "/v1/collectors/999999", json={"active": False}, headers=h.as_role("admin")
    )
    assert missing.status_code == 404
    listed = (await h.get("/v1/collectors")).json()
    assert [(c["email"], c["active"]) for c in listed] == [("jana.weber@acme.example", False)]


async def test_a_customer_collector_must_be_a_listed_active_collector(h: Harness) -> None:
    cust = await h.customer()
    path = f"/v1/customers/{cust['id']}/profile"

    async def assign(value: str) -> Any:
        return await h.http.put(
            path, json={"assigned_collector": value}, headers=h.as_role("specialist")
        )

    unknown = await assign("mallory@evil.example")
    assert unknown.status_code == 422, unknown.text
    assert "not a known collector" in error_of(unknown)
    with Session(h.engine) as s:
        assert s.get(Customer, cust["id"]).assigned_collector is None  # type: ignore[union-attr]

    jana = await _collector(h, "Jana Weber", "jana.weber@acme.example")
    assert (await assign("JANA.WEBER@acme.example")).status_code == 200  # the address
    assert (await assign("Jana Weber")).status_code == 200  # or the name
    await h.http.patch(
        f"/v1/collectors/{jana['id']}", json={"active": False}, headers=h.as_role("admin")
    )
    inactive = await assign("jana.weber@acme.example")
    assert inactive.status_code == 422 and "not an active collector" in error_of(inactive)


async def _key_account_reminder(
    h: Harness, fake: FakeProvider, customer_collector: str | None, invoice_collector: str | None
) -> tuple[dict[str, Any], list[InvoiceEvent]]:
    """One reminder to a key account, whose emails come from its collector."""
    fake.answer(Answer(202, headers={"X-Message-Id": "sg-ka"}))
    pol = await h.policy(
        escalate_after="P30D", steps=[{"key": "due", "offset": "PT0S", "channel": "email"}]
    )
    cust = await h.customer()
    resp = await h.http.put(
        f"/v1/customers/{cust['id']}/profile",
        json={"segment": "key_account"},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    if customer_collector is not None:  # data from before the list: written directly
        with Session(h.engine) as s:
            row = s.get(Customer, cust["id"])
            assert row is not None
            row.assigned_collector = customer_collector
            s.add(row)
            s.commit()
    due_at = (await h.env.get_current_time()) + timedelta(hours=1)
    inv = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        due_at=due_at.isoformat(),
        due_date=due_at.date().isoformat(),
    )
    if invoice_collector is not None:  # the invoice's owner: free text in the API
        resp = await h.post(f"/v1/invoices/{inv['id']}/assign", {"collector": invoice_collector})
        assert resp.status_code == 200, resp.text
    await h.env.sleep(timedelta(hours=1, minutes=1))
    [sent] = fake.requests
    with Session(h.engine) as s:
        events = s.exec(
            select(InvoiceEvent).where(
                InvoiceEvent.invoice_id == inv["id"], InvoiceEvent.kind == "reply_to_fallback"
            )
        ).all()
    return sent.json(), list(events)


async def test_an_unknown_collector_is_never_the_reply_to(
    fakes: tuple[Harness, FakeProvider],
) -> None:
    """An invoice assigned to any string (an attacker's address, say) sends with the team's
    Reply-To and the team as the sender; the fallback is on the invoice's timeline."""
    h, fake = fakes
    body, events = await _key_account_reminder(h, fake, None, "mallory@evil.example")
    assert body["reply_to"] == {"email": TEAM_REPLY_TO}
    assert body["from"]["email"] == "billing@arflow.example.com"
    assert "mallory" not in str(body["from"])
    [event] = events
    assert event.data == {
        "step": "due",
        "collector_id": None,
        "collector": "mallory@evil.example",
        "reason": "unknown collector",
        "reply_to": "email_reply_to",
    }


async def test_a_deactivated_collector_is_no_longer_the_reply_to(
    fakes: tuple[Harness, FakeProvider],
) -> None:
    h, fake = fakes
    jana = await _collector(h, "Jana Weber", "jana.weber@acme.example")
    await h.http.patch(
        f"/v1/collectors/{jana['id']}", json={"active": False}, headers=h.as_role("admin")
    )
    body, events = await _key_account_reminder(h, fake, "jana.weber@acme.example", None)
    assert body["reply_to"] == {"email": TEAM_REPLY_TO}
    assert [e.data["reason"] for e in events] == ["inactive collector"]


async def test_a_listed_collector_is_the_sender_and_the_reply_to(
    fakes: tuple[Harness, FakeProvider],
) -> None:
    h, fake = fakes
    await _collector(h, "Jana Weber", "jana.weber@acme.example")
    body, events = await _key_account_reminder(h, fake, None, "Jana.Weber@acme.example")
    assert body["reply_to"] == {"email": "jana.weber@acme.example"}
    assert body["from"] == {"email": "billing@arflow.example.com", "name": "Jana Weber"}
    assert events == []


def test_the_migration_lists_the_collectors_already_assigned(tmp_path: Path) -> None:
    """Existing assignments keep working: 0016 lists every distinct collector of customers
    and invoices (an address once, whatever its case; a name without an address)."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head")
    db = create_engine(url)
    with Session(db) as s:
        for n, value in enumerate(
            ["Jana.Weber@acme.example", "jana.weber@acme.example", "ann", None]
        ):
            s.add(Customer(external_id=f"C{n}", name="C", timezone="UTC", assigned_collector=value))
        s.commit()
    command.downgrade(config, "0016-1")  # the data as it was before the list
    command.upgrade(config, "0016")
    with Session(db) as s:
        rows = s.exec(select(Collector).order_by(Collector.name)).all()
    assert [(c.name, c.email, c.active) for c in rows] == [
        ("Jana.Weber@acme.example", "jana.weber@acme.example", True),
        ("ann", None, True),
    ]
    db.dispose()
