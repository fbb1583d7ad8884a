"""A customer's contacts with roles (billing, escalation, copy), and who an email goes to.

Without Temporal (SQLite and PostgreSQL): the contacts API (CRUD, validation, roles, 404, 409,
422, 403, ids too large), the ``contact_*`` events masked for viewers, and the migration down
and up again (SQLite). Delivery: one step at a time through ``StepDelivery`` and the real
SendGrid SDK against the local fake server: a reminder is copied to the billing and copy
contacts, a final notice (and a ladder notice) to the escalation contact too, an opted-out
contact is left out, and the outbox row records the copies; a consolidated message too.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alembic import command
from api.app import create_app
from arflow.config import Settings
from arflow.customers.contacts import block
from arflow.messages.channels import ChannelRouter
from arflow.messages.delivery import StepDelivery
from arflow.messages.providers import SendGridEmailChannel
from arflow.migrate import alembic_config, upgrade
from models import Customer, CustomerContact, DunningPolicy, Invoice, OutboxMessage
from tests.conftest import API_KEYS, PROVIDERS, WEBHOOK_SECRET
from tests.faults.fakes import Answer, FakeProvider
from workflows.types import NextAction, ScheduledStep, SendReminderInput

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


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
        } | overrides
        resp = await self.http.post("/v1/customers", json=body, headers=role("specialist"))
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    async def add(self, customer_id: int, body: Any, who: str = "specialist") -> httpx.Response:
        return await self.http.post(
            f"/v1/customers/{customer_id}/contacts", json=body, headers=role(who)
        )

    async def change(
        self, customer_id: int, contact_id: int, body: Any, who: str = "specialist"
    ) -> httpx.Response:
        return await self.http.patch(
            f"/v1/customers/{customer_id}/contacts/{contact_id}", json=body, headers=role(who)
        )

    async def remove(
        self, customer_id: int, contact_id: int, who: str = "specialist"
    ) -> httpx.Response:
        return await self.http.delete(
            f"/v1/customers/{customer_id}/contacts/{contact_id}", headers=role(who)
        )

    async def contacts(self, customer_id: int, who: str = "viewer") -> list[dict[str, Any]]:
        resp = await self.http.get(f"/v1/customers/{customer_id}/contacts", headers=role(who))
        assert resp.status_code == 200, resp.text
        return list(resp.json())

    async def events(self, customer_id: int, who: str = "viewer") -> list[dict[str, Any]]:
        resp = await self.http.get(f"/v1/customers/{customer_id}/events", headers=role(who))
        assert resp.status_code == 200, resp.text
        return [e for e in resp.json() if e["kind"].startswith("contact_")]


@pytest.fixture
async def api(engine: Engine, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
    )
    app = create_app(settings, engine=engine, temporal=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        yield Api(http, engine)


# -- the API ------------------------------------------------------------------------------


async def test_contacts_are_added_listed_changed_and_removed(api: Api) -> None:
    cust = await api.customer()
    resp = await api.add(
        cust["id"], {"role": "billing", "name": "Ann Payable", "email": "Ann@Acme.Example.com"}
    )
    assert resp.status_code == 201, resp.text
    ann = resp.json()
    assert ann["email"] == "ann@acme.example.com"  # lower-cased
    assert (ann["role"], ann["primary"], ann["email_opt_out"]) == ("billing", False, False)
    resp = await api.add(cust["id"], {"role": "escalation", "phone": "+4930999888"})
    assert resp.status_code == 201, resp.text
    boss = resp.json()

    listed = await api.contacts(cust["id"])
    assert [(c["primary"], c["id"], c["role"], c["email"], c["phone"]) for c in listed] == [
        (True, None, "billing", "ap@acme.example.com", "+4930123456"),
        (False, ann["id"], "billing", "ann@acme.example.com", None),
        (False, boss["id"], "escalation", None, "+4930999888"),
    ]

    resp = await api.change(
        cust["id"], ann["id"], {"role": "copy", "name": None, "email_opt_out": True}
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["role"], resp.json()["name"], resp.json()["email_opt_out"]) == (
        "copy",
        None,
        True,
    )
    resp = await api.remove(cust["id"], boss["id"])
    assert resp.status_code == 204
    listed = await api.contacts(cust["id"])
    assert [(c["id"], c["role"], c["email_opt_out"]) for c in listed] == [
        (None, "billing", False),
        (ann["id"], "copy", True),
    ]


async def test_a_contact_is_checked_like_the_customer(api: Api) -> None:
    cust = await api.customer()
    bad = [
        ({"role": "billing"}, "email"),  # neither email nor phone
        ({"role": "billing", "email": "not-an-email"}, "email"),
        ({"role": "billing", "phone": "030 123456"}, "phone"),  # not E.164
        ({"role": "boss", "email": "b@acme.example.com"}, "role"),
        ({"role": "billing", "email": "b@acme.example.com", "extra": 1}, "extra"),
        ({"role": "billing", "email": "b@acme.example.com", "name": "x" * 201}, "name"),
        ({"role": "billing", "email": "b@acme.example.com", "name": ""}, "name"),
    ]
    for body, field in bad:
        resp = await api.add(cust["id"], body)
        assert resp.status_code == 422, (body, resp.text)
        assert field in resp.text, (body, resp.text)
    assert len(await api.contacts(cust["id"])) == 1  # nothing stored

    ann = (await api.add(cust["id"], {"role": "copy", "email": "ann@acme.example.com"})).json()
    for body, field in [
        ({}, "role"),  # at least one field
        ({"role": None}, "role"),
        ({"email_opt_out": None}, "email_opt_out"),
        ({"email": None}, "email"),  # no phone either: nothing would be left
        ({"phone": "12"}, "phone"),
        ({"id": 5}, "id"),
    ]:
        resp = await api.change(cust["id"], ann["id"], body)
        assert resp.status_code == 422, (body, resp.text)
        assert field in resp.text, (body, resp.text)
    [_, still] = await api.contacts(cust["id"])
    assert still["email"] == "ann@acme.example.com"


async def test_duplicates_are_409_and_the_same_address_may_have_two_roles(api: Api) -> None:
    cust = await api.customer()
    first = await api.add(cust["id"], {"role": "copy", "email": "ann@acme.example.com"})
    assert first.status_code == 201
    again = await api.add(cust["id"], {"role": "copy", "email": "ANN@acme.example.com"})
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "conflict"
    other_role = await api.add(cust["id"], {"role": "escalation", "email": "ann@acme.example.com"})
    assert other_role.status_code == 201, other_role.text
    # The primary billing address is the customer's own: not a second billing contact.
    primary = await api.add(cust["id"], {"role": "billing", "email": "AP@acme.example.com"})
    assert primary.status_code == 409, primary.text
    # A change into a duplicate is refused too, and changes nothing.
    resp = await api.change(cust["id"], other_role.json()["id"], {"role": "copy"})
    assert resp.status_code == 409, resp.text
    roles = [c["role"] for c in await api.contacts(cust["id"])]
    assert roles == ["billing", "copy", "escalation"]


async def test_unknown_customers_and_contacts_are_404(api: Api) -> None:
    cust = await api.customer()
    other = await api.customer()
    theirs = (await api.add(other["id"], {"role": "copy", "email": "x@other.example.com"})).json()
    body = {"role": "copy", "email": "c@acme.example.com"}
    missing = 999_999
    answers = [
        await api.http.get(f"/v1/customers/{missing}/contacts", headers=role("viewer")),
        await api.add(missing, body),
        await api.change(missing, theirs["id"], {"name": "X"}),
        await api.remove(missing, theirs["id"]),
        await api.change(cust["id"], missing, {"name": "X"}),
        await api.remove(cust["id"], missing),
        # another customer's contact is not this customer's
        await api.change(cust["id"], theirs["id"], {"name": "X"}),
        await api.remove(cust["id"], theirs["id"]),
    ]
    assert [r.status_code for r in answers] == [404] * len(answers), [r.text for r in answers]
    assert all(r.json()["error"]["code"] == "not_found" for r in answers)
    assert len(await api.contacts(other["id"])) == 2  # theirs is still there


async def test_ids_too_large_are_422_not_500(api: Api) -> None:
    cust = await api.customer()
    huge = 2**63
    answers = [
        await api.http.get(f"/v1/customers/{huge}/contacts", headers=role("viewer")),
        await api.add(huge, {"role": "copy", "email": "c@acme.example.com"}),
        await api.change(cust["id"], huge, {"name": "X"}),
        await api.remove(cust["id"], 2**31),
    ]
    assert [r.status_code for r in answers] == [422] * 4, [r.text for r in answers]


async def test_viewers_read_and_specialists_write(api: Api) -> None:
    cust = await api.customer()
    body = {"role": "copy", "email": "c@acme.example.com"}
    assert (await api.add(cust["id"], body, who="viewer")).status_code == 403
    made = await api.add(cust["id"], body)
    assert made.status_code == 201
    contact_id = made.json()["id"]
    assert (
        await api.change(cust["id"], contact_id, {"name": "C"}, who="viewer")
    ).status_code == 403
    assert (await api.remove(cust["id"], contact_id, who="viewer")).status_code == 403
    no_key = await api.http.get(f"/v1/customers/{cust['id']}/contacts")
    assert no_key.status_code == 401
    assert len(await api.contacts(cust["id"], who="viewer")) == 2


async def test_each_change_is_an_event_masked_for_viewers(api: Api) -> None:
    cust = await api.customer()
    made = (
        await api.add(
            cust["id"], {"role": "escalation", "name": "Bo", "email": "bo@acme.example.com"}
        )
    ).json()
    same = await api.change(cust["id"], made["id"], {"name": "Bo"})  # no change: no event
    assert same.status_code == 200
    await api.change(cust["id"], made["id"], {"email": "bob@acme.example.com", "name": "Bob"})
    await api.remove(cust["id"], made["id"])

    seen = await api.events(cust["id"], who="specialist")
    assert [e["kind"] for e in seen] == ["contact_added", "contact_changed", "contact_removed"]
    assert all(e["actor"].startswith("specialist:") for e in seen)
    added, changed, removed = seen
    assert added["data"] == {
        "contact_id": made["id"],
        "role": "escalation",
        "name": "Bo",
        "email": "bo@acme.example.com",
        "phone": None,
        "email_opt_out": False,
        "sms_opt_out": False,
    }
    assert changed["data"]["changes"] == {
        "email": {"from": "bo@acme.example.com", "to": "bob@acme.example.com"},
        "name": {"from": "Bo", "to": "Bob"},
    }
    assert removed["data"]["email"] == "bob@acme.example.com"

    masked = await api.events(cust["id"], who="viewer")
    added, changed, removed = masked
    assert (added["data"]["email"], added["data"]["phone"], added["data"]["name"]) == (
        "***",
        None,  # nothing to hide: shown as null
        "Bo",
    )
    assert changed["data"]["changes"]["email"] == {"from": "***", "to": "***"}
    assert changed["data"]["changes"]["name"] == {"from": "Bo", "to": "Bob"}
    assert removed["data"]["email"] == "***" and removed["data"]["role"] == "escalation"
    assert "bo@acme" not in str(masked) and "bob@acme" not in str(masked)


# -- the migration ------------------------------------------------------------------------


def test_the_migration_goes_down_to_0020_and_up_again(sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as s:
        customer = Customer(external_id="C-1", name="Acme", timezone="UTC")
        s.add(customer)
        s.flush()
        assert customer.id is not None
        s.add(CustomerContact(customer_id=customer.id, role="copy", email="c@acme.example.com"))
        s.commit()
    inspect = sa.inspect
    assert "cc" in {c["name"] for c in inspect(sqlite_engine).get_columns("outbox")}
    config = alembic_config()
    with sqlite_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0020")
    tables = set(inspect(sqlite_engine).get_table_names())
    assert "customer_contacts" not in tables and "outbox" in tables
    assert "cc" not in {c["name"] for c in inspect(sqlite_engine).get_columns("outbox")}
    with Session(sqlite_engine) as s:  # the customers survive (no batch copy of theirs)
        assert s.exec(select(Customer.name)).all() == ["Acme"]
    upgrade(sqlite_engine)
    assert "customer_contacts" in set(inspect(sqlite_engine).get_table_names())
    assert "cc" in {c["name"] for c in inspect(sqlite_engine).get_columns("outbox")}
    with sqlite_engine.connect() as conn:
        head = ScriptDirectory.from_config(config).get_current_head()  # later ones too
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == head


# -- who an email goes to -----------------------------------------------------------------


def delivery(fake: FakeProvider, tmp_path: Path) -> StepDelivery:
    """Email through the real SendGrid client, pointed at the fake."""
    sendgrid = SendGridEmailChannel(
        api_key=PROVIDERS["sendgrid_api_key"],
        from_email=PROVIDERS["email_from"],
        base_url=fake.url,
        timeout=2.0,
    )
    return StepDelivery(
        ChannelRouter({"email": sendgrid}),
        pay_url=lambda i, n, e: f"https://pay.example.com/{i}",
        print_folder=str(tmp_path / "print"),
    )


def seed(engine: Engine, invoices: int = 1, consolidate: bool = False) -> tuple[int, list[int]]:
    """A customer (primary ap@acme) with contacts of every role, one opted out, and
    ``invoices`` open invoices whose step ``due`` falls due at ``AT``."""
    with Session(engine) as s:
        policy = DunningPolicy(
            name=f"p-{uuid.uuid4().hex[:6]}",
            escalate_after="P30D",
            consolidate=consolidate,
            steps=[
                {"key": "due", "offset": "PT0S", "channel": "email", "template": "reminder"},
                {"key": "final", "offset": "P7D", "channel": "email", "template": "final_notice"},
            ],
        )
        customer = Customer(
            external_id=f"C-{uuid.uuid4().hex[:8]}",
            name="Acme GmbH",
            email="ap@acme.example.com",
            timezone="UTC",
        )
        s.add_all([policy, customer])
        s.flush()
        assert policy.id is not None and customer.id is not None
        s.add_all(
            [
                CustomerContact(
                    customer_id=customer.id, role="billing", email="ann@acme.example.com"
                ),
                CustomerContact(customer_id=customer.id, role="copy", email="cfo@acme.example.com"),
                CustomerContact(
                    customer_id=customer.id, role="escalation", email="ceo@acme.example.com"
                ),
                CustomerContact(
                    customer_id=customer.id,
                    role="copy",
                    email="gone@acme.example.com",
                    email_opt_out=True,
                ),
                # the primary address again, as another role: named once, as the recipient
                CustomerContact(customer_id=customer.id, role="copy", email="ap@acme.example.com"),
                CustomerContact(customer_id=customer.id, role="billing", phone="+4930111222"),
            ]
        )
        rows = [
            Invoice(
                external_id=f"I-{uuid.uuid4().hex[:8]}",
                number=f"INV-{n}",
                currency="EUR",
                issued_on=date(2026, 2, 1),
                due_date=date(2026, 3, 1),
                customer_id=customer.id,
                policy_id=policy.id,
                amount_minor=10_000,
                balance_minor=10_000,
                due_at=AT - timedelta(days=1, minutes=n),
                next_action="reminder",
                next_action_at=AT,
                next_action_step="due",
                request_hash="x" * 64,
            )
            for n in range(invoices)
        ]
        s.add_all(rows)
        s.commit()
        return customer.id, [r.id for r in rows if r.id is not None]


def step(
    invoice_id: int, key: str, template: str, kind: str = "dunning", consolidate: bool = False
) -> SendReminderInput:
    return SendReminderInput(
        invoice_id=invoice_id,
        step=ScheduledStep(key=key, channel="email", template=template, at=AT),
        balance_minor=10_000,
        skipped=[],
        next_action=NextAction(kind="escalation", at=AT + timedelta(days=29)),
        now=AT,
        kind=kind,
        consolidate=consolidate,
    )


def outbox(engine: Engine, invoice_id: int) -> dict[str, OutboxMessage]:
    with Session(engine) as s:
        rows = s.exec(select(OutboxMessage).where(OutboxMessage.invoice_id == invoice_id)).all()
        return {r.step_key: r for r in rows}


def sent_to(request: Any) -> tuple[list[str], list[str]]:
    [personalization] = request.json()["personalizations"]
    to = [e["email"] for e in personalization["to"]]
    return to, [e["email"] for e in personalization.get("cc", [])]


def test_a_reminder_is_copied_to_billing_and_copy_a_final_notice_to_escalation_too(
    engine: Engine, fake: FakeProvider, tmp_path: Path
) -> None:
    _, [invoice_id] = seed(engine)
    sender = delivery(fake, tmp_path)
    with Session(engine) as s:
        assert sender.send(s, step(invoice_id, "due", "reminder")).status == "sent"
    with Session(engine) as s:
        assert sender.send(s, step(invoice_id, "final", "final_notice")).status == "sent"
    reminder, final = fake.requests
    every = ["ann@acme.example.com", "cfo@acme.example.com"]
    assert sent_to(reminder) == (["ap@acme.example.com"], every)
    assert sent_to(final) == (["ap@acme.example.com"], [*every, "ceo@acme.example.com"])
    rows = outbox(engine, invoice_id)
    assert rows["due"].cc == every and rows["due"].status == "sent"
    assert rows["final"].cc == [*every, "ceo@acme.example.com"]
    assert "gone@acme.example.com" not in str(fake.requests[0].body)


def test_a_ladder_notice_reaches_the_escalation_contact_unless_opted_out(
    engine: Engine, fake: FakeProvider, tmp_path: Path
) -> None:
    customer_id, [invoice_id] = seed(engine)
    sender = delivery(fake, tmp_path)
    with Session(engine) as s:
        notice = step(invoice_id, "notice", "reminder", kind="ladder")
        assert sender.send(s, notice).status == "sent"
    [request] = fake.requests
    assert sent_to(request)[1][-1] == "ceo@acme.example.com"
    # An opted-out escalation contact is left out; with nobody to copy, no cc at all.
    with Session(engine) as s:
        for contact in s.exec(
            select(CustomerContact).where(CustomerContact.customer_id == customer_id)
        ).all():
            contact.email_opt_out = True
            s.add(contact)
        s.commit()
    with Session(engine) as s:
        assert sender.send(s, step(invoice_id, "final", "final_notice")).status == "sent"
    assert sent_to(fake.requests[1]) == (["ap@acme.example.com"], [])
    assert outbox(engine, invoice_id)["final"].cc is None


def test_a_refused_email_records_its_copies_and_a_blocked_one_goes_to_nobody(
    engine: Engine, fake: FakeProvider, tmp_path: Path
) -> None:
    customer_id, [invoice_id] = seed(engine)
    sender = delivery(fake, tmp_path)
    fake.answer(Answer(400, b'{"errors": [{"message": "bad"}]}'))
    with Session(engine) as s:
        assert sender.send(s, step(invoice_id, "due", "reminder")).status == "failed"
    row = outbox(engine, invoice_id)["due"]
    assert (row.status, row.cc) == ("failed", ["ann@acme.example.com", "cfo@acme.example.com"])
    # The customer's own email block stops the whole email, copies included.
    with Session(engine) as s:
        block(s, customer_id, "email", "unsubscribed", "specialist")
        s.commit()
    with Session(engine) as s:
        assert sender.send(s, step(invoice_id, "final", "final_notice")).status == "blocked"
    assert len(fake.requests) == 1
    assert outbox(engine, invoice_id)["final"].cc is None


def test_a_consolidated_message_is_copied_as_one_message_is(
    engine: Engine, fake: FakeProvider, tmp_path: Path
) -> None:
    _, ids = seed(engine, invoices=2, consolidate=True)
    sender = delivery(fake, tmp_path)
    with Session(engine) as s:
        assert sender.send(s, step(ids[0], "due", "reminder", consolidate=True)).status == "sent"
    [request] = fake.requests
    every = ["ann@acme.example.com", "cfo@acme.example.com"]
    assert sent_to(request) == (["ap@acme.example.com"], every)
    main, covered = outbox(engine, ids[0])["due"], outbox(engine, ids[1])["due"]
    assert main.cc == every
    assert (covered.status, covered.cc) == ("consolidated", every)
