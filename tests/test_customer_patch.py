"""PATCH /v1/customers/{id}: corrections of a customer's details.

Without Temporal (SQLite and PostgreSQL): validation, the customer_changed event (one per
correction, none for a no-op, masked for viewers), roles, what a new address does to blocks
and contact_failed tasks, and a change of zone Temporal cannot take yet (recorded, retried).
With the time-skipping server (SQLite): a Berlin customer moving to New York has their next
reminder at 09:00 New York time, nothing re-sent, and it goes to their new email address.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api.app import create_app
from arflow.config import Settings
from arflow.policies import service as policies
from models import ContactBlock, CustomerEvent, Invoice, Task
from tests.conftest import API_KEYS, WEBHOOK_SECRET, Harness
from workflows.progress import move_customer, schedule_for
from workflows.types import CustomerZone, InvoiceWorkflowInput, PolicySpec, StepSpec

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def role(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[name]}"}


@dataclass
class Api:
    http: httpx.AsyncClient
    engine: Engine

    async def customer(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "external_id": f"C-{uuid.uuid4().hex[:8]}",
            "name": "Acme GmbH",
            "email": "ap@acme.example.com",
            "phone": "+4930123456",
            "timezone": "Europe/Berlin",
            "iban": "DE89370400440532013000",
            "country": "DE",
        } | overrides
        resp = await self.http.post("/v1/customers", json=body, headers=role("specialist"))
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    async def patch(self, customer_id: int, body: Any, who: str = "specialist") -> httpx.Response:
        return await self.http.patch(f"/v1/customers/{customer_id}", json=body, headers=role(who))

    async def events(self, customer_id: int, who: str = "viewer") -> list[dict[str, Any]]:
        resp = await self.http.get(f"/v1/customers/{customer_id}/events", headers=role(who))
        assert resp.status_code == 200, resp.text
        return list(resp.json())

    def invoice(self, customer_id: int, status: str = "open") -> int:
        """An invoice row written straight into the database (no workflow)."""
        with Session(self.engine) as s:
            policy_id = policies.ensure_default_policy(s).id
            assert policy_id is not None
            inv = Invoice(
                external_id=f"I-{uuid.uuid4().hex[:8]}",
                number="1",
                currency="EUR",
                issued_on=date(2026, 3, 1),
                due_date=date(2026, 3, 31),
                customer_id=customer_id,
                policy_id=policy_id,
                amount_minor=1000,
                balance_minor=1000,
                due_at=datetime(2026, 3, 31, 22, tzinfo=UTC),
                status=status,
                request_hash="x" * 64,
            )
            s.add(inv)
            s.commit()
            assert inv.id is not None
            return inv.id

    def add(self, *rows: Any) -> None:
        with Session(self.engine) as s:
            s.add_all(rows)
            s.commit()

    def tasks(self, invoice_id: int) -> list[tuple[str, str]]:
        with Session(self.engine) as s:
            rows = s.exec(select(Task).where(Task.invoice_id == invoice_id)).all()
            return [(t.kind, t.status) for t in rows]

    def blocks(self, customer_id: int) -> dict[str, str]:
        with Session(self.engine) as s:
            rows = s.exec(select(ContactBlock).where(ContactBlock.customer_id == customer_id))
            return {b.channel: b.reason for b in rows.all()}


@pytest.fixture
async def api(engine: Engine, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
    )
    app = create_app(settings, engine=engine, temporal=None)  # Temporal "not connected"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        yield Api(http, engine)


def changed_events(engine: Engine, customer_id: int) -> list[CustomerEvent]:
    with Session(engine) as s:
        stmt = select(CustomerEvent).where(
            CustomerEvent.customer_id == customer_id, CustomerEvent.kind == "customer_changed"
        )
        return list(s.exec(stmt).all())


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"country": "XX"}, "country"),
        ({"iban": "DE00123"}, "iban"),
        ({"phone": "12"}, "phone"),
        ({"locale": "english"}, "locale"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),  # not nullable on create: not here either
        ({"timezone": None}, "timezone"),
        ({"external_id": "C-other"}, "external_id"),  # not changeable
        ({"segment": "high_risk"}, "segment"),  # segments and the profile set it
        ({"shoe_size": 44}, "shoe_size"),
    ],
)
async def test_bad_input_is_422_naming_the_field_and_changes_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    cust = await api.customer()
    resp = await api.patch(cust["id"], body)
    assert resp.status_code == 422, resp.text
    assert field in resp.text
    after = await api.http.get(f"/v1/customers/{cust['id']}", headers=role("viewer"))
    assert after.json() == cust
    assert changed_events(api.engine, cust["id"]) == []


async def test_an_empty_body_is_422(api: Api) -> None:
    cust = await api.customer()
    resp = await api.patch(cust["id"], {})
    assert resp.status_code == 422, resp.text
    assert "at least one field" in resp.text
    assert (await api.patch(cust["id"], ["name"])).status_code == 422


@pytest.mark.parametrize(("ident", "status"), [(999_999, 404), (2**63, 422), (10**30, 422)])
async def test_unknown_or_huge_ids(api: Api, ident: int, status: int) -> None:
    resp = await api.patch(ident, {"name": "X"})
    assert resp.status_code == status, resp.text


async def test_viewers_may_not_correct(api: Api) -> None:
    cust = await api.customer()
    resp = await api.patch(cust["id"], {"name": "Other"}, who="viewer")
    assert resp.status_code == 403, resp.text
    assert changed_events(api.engine, cust["id"]) == []


# -- the change and its event ---------------------------------------------------------------


async def test_a_correction_is_one_event_listing_old_and_new(api: Api) -> None:
    cust = await api.customer()
    resp = await api.patch(
        cust["id"],
        {
            "name": "Acme SE",
            "email": "billing@acme.example.com",
            "phone": None,
            "address": "Hauptstr. 1\n10115 Berlin",
            "locale": "de",
            "iban": "GB82WEST12345698765432",
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "Acme SE"
    assert body["phone"] is None
    assert body["changed_fields"] == ["address", "email", "iban", "locale", "name", "phone"]
    assert body["workflows"] == {"updated": [], "skipped": {}, "pending": {}}
    assert body["external_id"] == cust["external_id"]
    got = (await api.http.get(f"/v1/customers/{cust['id']}", headers=role("viewer"))).json()
    assert {k: got[k] for k in ("name", "email", "locale")} == {
        "name": "Acme SE",
        "email": "billing@acme.example.com",
        "locale": "de",
    }
    [event] = changed_events(api.engine, cust["id"])
    assert event.actor.startswith("specialist:")
    assert event.data["changes"] == {
        "name": {"from": "Acme GmbH", "to": "Acme SE"},
        "email": {"from": "ap@acme.example.com", "to": "billing@acme.example.com"},
        "phone": {"from": "+4930123456", "to": None},
        "address": {"from": None, "to": "Hauptstr. 1\n10115 Berlin"},
        "locale": {"from": "en", "to": "de"},
        "iban": {"from": "DE89370400440532013000", "to": "GB82WEST12345698765432"},
    }
    assert event.data["channels"] == {"email": "open", "letter": "open"}


async def test_the_same_values_again_are_no_event(api: Api) -> None:
    cust = await api.customer()
    resp = await api.patch(
        cust["id"], {"name": cust["name"], "email": cust["email"], "timezone": cust["timezone"]}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["changed_fields"] == []
    assert changed_events(api.engine, cust["id"]) == []
    # Part of a body the same, part new: only the new part is listed.
    resp = await api.patch(cust["id"], {"name": cust["name"], "locale": "fr"})
    [event] = changed_events(api.engine, cust["id"])
    assert event.data["changes"] == {"locale": {"from": "en", "to": "fr"}}


async def test_personal_data_in_the_event_is_masked_for_viewers(api: Api) -> None:
    cust = await api.customer()
    resp = await api.patch(
        cust["id"],
        {"email": "new@acme.example.com", "phone": None, "iban": None, "name": "Acme SE"},
    )
    assert resp.status_code == 200, resp.text
    [seen] = [e for e in await api.events(cust["id"], "viewer") if e["kind"] == "customer_changed"]
    assert seen["data"]["changes"] == {
        "email": {"from": "***", "to": "***"},
        "phone": {"from": "***", "to": None},
        "iban": {"from": "***", "to": None},
        "name": {"from": "Acme GmbH", "to": "Acme SE"},  # not personal data: shown
    }
    for who in ("specialist", "admin"):
        [full] = [e for e in await api.events(cust["id"], who) if e["kind"] == "customer_changed"]
        assert full["data"]["changes"]["email"] == {
            "from": "ap@acme.example.com",
            "to": "new@acme.example.com",
        }
        assert full["data"]["changes"]["iban"]["from"] == "DE89370400440532013000"
    # The stored event is untouched by what a viewer was shown.
    [stored] = changed_events(api.engine, cust["id"])
    assert stored.data["changes"]["phone"] == {"from": "+4930123456", "to": None}


# -- a new address --------------------------------------------------------------------------


async def test_a_new_email_lifts_a_bounce_and_closes_contact_failed(api: Api) -> None:
    cust = await api.customer()
    invoice_id = api.invoice(cust["id"])
    closed_id = api.invoice(cust["id"], status="paid")
    api.add(
        ContactBlock(
            customer_id=cust["id"],
            channel="email",
            reason="bounced",
            source="sendgrid",
            address=cust["email"],
        ),
        Task(invoice_id=invoice_id, kind="contact_failed", data={"step": "late_7"}),
        Task(invoice_id=closed_id, kind="legal_review", data={}),
    )
    resp = await api.patch(cust["id"], {"email": "new@acme.example.com"})
    assert resp.status_code == 200, resp.text
    assert api.blocks(cust["id"]) == {}
    assert api.tasks(invoice_id) == [("contact_failed", "done")]
    assert api.tasks(closed_id) == [("legal_review", "open")]
    [event] = changed_events(api.engine, cust["id"])
    assert event.data["channels"] == {"email": "unblocked (bounced)"}


@pytest.mark.parametrize("reason", ["unsubscribed", "spam_report", "manual"])
async def test_an_opt_out_stays_with_a_new_email(api: Api, reason: str) -> None:
    cust = await api.customer()
    invoice_id = api.invoice(cust["id"])
    api.add(
        ContactBlock(customer_id=cust["id"], channel="email", reason=reason, source="test"),
        Task(invoice_id=invoice_id, kind="contact_failed", data={"step": "late_7"}),
    )
    resp = await api.patch(cust["id"], {"email": "new@acme.example.com"})
    assert resp.status_code == 200, resp.text
    assert api.blocks(cust["id"]) == {"email": reason}
    assert api.tasks(invoice_id) == [("contact_failed", "open")]  # email is still closed
    [event] = changed_events(api.engine, cust["id"])
    assert event.data["channels"] == {"email": f"still blocked ({reason})"}


async def test_a_new_phone_lifts_a_failed_number_but_not_stop(api: Api) -> None:
    cust = await api.customer()
    api.add(
        ContactBlock(
            customer_id=cust["id"], channel="sms", reason="stop", source="twilio", address="+1"
        ),
        ContactBlock(
            customer_id=cust["id"], channel="call", reason="failed", source="twilio", address="+1"
        ),
    )
    resp = await api.patch(cust["id"], {"phone": "+4930999999"})
    assert resp.status_code == 200, resp.text
    assert api.blocks(cust["id"]) == {"sms": "stop"}


async def test_back_to_the_address_that_bounced_stays_blocked(api: Api) -> None:
    cust = await api.customer(email="new@acme.example.com")
    api.add(
        ContactBlock(
            customer_id=cust["id"],
            channel="email",
            reason="bounced",
            source="sendgrid",
            address="Old@Acme.example.com",
        )
    )
    assert (await api.patch(cust["id"], {"email": "old@acme.example.com"})).status_code == 200
    assert api.blocks(cust["id"]) == {"email": "bounced"}


# -- zone changes Temporal cannot take yet ----------------------------------------------------


async def test_a_zone_change_without_temporal_is_saved_recorded_pending_and_retried(
    api: Api,
) -> None:
    cust = await api.customer()
    open_id = api.invoice(cust["id"])
    api.invoice(cust["id"], status="paid")
    resp = await api.patch(cust["id"], {"timezone": "America/New_York"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["timezone"] == "America/New_York"
    assert body["workflows"] == {
        "updated": [],
        "skipped": {},
        "pending": {str(open_id): "Temporal is not connected"},
    }
    kinds = [e["kind"] for e in await api.events(cust["id"])]
    assert kinds == ["customer_changed", "customer_change_pending"]
    # A name change alone has nothing for the workflows, but the pending change is sent again.
    resp = await api.patch(cust["id"], {"name": "Acme SE"})
    assert resp.json()["workflows"]["pending"] == {str(open_id): "Temporal is not connected"}
    pending = [e for e in await api.events(cust["id"]) if e["kind"] == "customer_change_pending"]
    assert [e["data"]["invoice_ids"] for e in pending] == [[open_id], [open_id]]


async def test_no_workflow_update_for_fields_the_workflows_do_not_hold(api: Api) -> None:
    cust = await api.customer()
    api.invoice(cust["id"])
    resp = await api.patch(cust["id"], {"locale": "de", "email": "x@acme.example.com"})
    assert resp.json()["workflows"] == {"updated": [], "skipped": {}, "pending": {}}
    assert [e["kind"] for e in await api.events(cust["id"])] == ["customer_changed"]


# -- the workflow's side, as a pure function ------------------------------------------------


def _inp(timezone: str, **policy: Any) -> InvoiceWorkflowInput:
    return InvoiceWorkflowInput(
        invoice_id=1,
        currency="EUR",
        amount_minor=100,
        balance_minor=100,
        due_at=datetime(2026, 3, 20, 22, 59, 59, tzinfo=UTC),
        timezone=timezone,
        country="DE",
        policy=PolicySpec(
            policy_id=1,
            name="p",
            steps=[StepSpec("a", "-P2D"), StepSpec("b", "P0D")],
            escalate_after="P30D",
            send_at="09:00",
            contact_window="08:00-20:00",
            **policy,
        ),
        sent_steps=["a"],
    )


def test_move_customer_retimes_unsent_steps_only() -> None:
    inp = _inp("Europe/Berlin")
    assert move_customer(inp, CustomerZone("Europe/Berlin", "DE"), datetime.now(UTC)) == []
    now = datetime(2026, 3, 19, 12, tzinfo=UTC)
    events = move_customer(inp, CustomerZone("America/New_York", "US"), now)
    assert [(e.kind, e.data) for e in events] == [
        (
            "customer_zone_changed",
            {
                "timezone": {"from": "Europe/Berlin", "to": "America/New_York"},
                "country": {"from": "DE", "to": "US"},
            },
        )
    ]
    schedule, _ = schedule_for(inp)
    b = next(s for s in schedule if s.key == "b")
    assert b.at == datetime(2026, 3, 20, 9, tzinfo=NEW_YORK)
    assert inp.sent_steps == ["a"] and inp.deferred == {}


def test_a_step_the_new_zone_makes_due_waits_for_its_window() -> None:
    # New York -> Berlin at 21:30 Berlin time: step b (09:00 on the 20th) is 09:00 Berlin now,
    # long past at 21:30 on the 20th, but Berlin's window has closed: 08:00 the next morning.
    inp = _inp("America/New_York")
    now = datetime(2026, 3, 20, 21, 30, tzinfo=BERLIN)
    move_customer(inp, CustomerZone("Europe/Berlin", "DE"), now)
    assert inp.deferred == {"b": datetime(2026, 3, 21, 8, tzinfo=BERLIN)}
    schedule, _ = schedule_for(inp)
    assert next(s for s in schedule if s.key == "b").at == datetime(2026, 3, 21, 8, tzinfo=BERLIN)


# -- with the workflow (time-skipping server) -------------------------------------------------


def local(day: date, hour: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hour), zone).astimezone(UTC)


async def sleep_until(h: Harness, instant: datetime) -> None:
    now = await h.env.get_current_time()
    await h.env.sleep(max(instant - now, timedelta(0)))


async def test_moving_to_new_york_retimes_the_next_reminder_and_uses_the_new_email(
    h: Harness,
) -> None:
    cust = await h.customer(timezone="Europe/Berlin", email="old@acme.example.com")
    policy = await h.policy(
        send_at="09:00",
        contact_window="08:00-20:00",
        escalate_after="P30D",
        steps=[
            {"key": "first", "offset": "-P29D", "template": "reminder_before_due"},
            {"key": "second", "offset": "-P28D", "template": "reminder_before_due"},
        ],
    )
    today = (await h.env.get_current_time()).astimezone(BERLIN).date()
    due = today + timedelta(days=30)
    inv = await h.invoice(cust["id"], policy_id=policy["id"], due_date=due.isoformat())
    first_day, second_day = today + timedelta(days=1), today + timedelta(days=2)

    await sleep_until(h, local(first_day, 10, BERLIN))
    assert [(m.step_key, m.recipient) for m in h.outbox(inv["id"])] == [
        ("first", "old@acme.example.com")
    ]
    before = (await h.get(f"/v1/invoices/{inv['id']}")).json()["next_action"]
    assert datetime.fromisoformat(before["at"]) == local(second_day, 9, BERLIN)

    resp = await h.http.patch(
        f"/v1/customers/{cust['id']}",
        json={"timezone": "America/New_York", "email": "new@acme.example.com"},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["workflows"] == {"updated": [inv["id"]], "skipped": {}, "pending": {}}
    after = (await h.get(f"/v1/invoices/{inv['id']}")).json()["next_action"]
    assert (after["step_key"], datetime.fromisoformat(after["at"])) == (
        "second",
        local(second_day, 9, NEW_YORK),
    )
    moved = [e for e in h.events(inv["id"]) if e.kind == "customer_zone_changed"]
    assert [e.data for e in moved] == [
        {"timezone": {"from": "Europe/Berlin", "to": "America/New_York"}}
    ]
    customer_kinds = [e["kind"] for e in (await h.get(f"/v1/customers/{cust['id']}/events")).json()]
    assert customer_kinds == ["customer_changed", "customer_change_delivered"]

    await sleep_until(h, local(second_day, 10, BERLIN))  # 09:00 Berlin passed: nothing yet
    assert [m.step_key for m in h.outbox(inv["id"])] == ["first"]
    await sleep_until(h, local(second_day, 10, NEW_YORK))
    assert [(m.step_key, m.recipient) for m in h.outbox(inv["id"])] == [
        ("first", "old@acme.example.com"),
        ("second", "new@acme.example.com"),
    ]
    # The same correction again: no event, no second update to the workflow.
    again = await h.http.patch(
        f"/v1/customers/{cust['id']}",
        json={"timezone": "America/New_York"},
        headers=h.as_role("specialist"),
    )
    assert again.json()["workflows"]["updated"] == []
    assert len([e for e in h.events(inv["id"]) if e.kind == "customer_zone_changed"]) == 1
