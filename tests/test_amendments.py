"""Correcting an issued invoice: credit notes lower the balance, a new due date or policy moves
the schedule (time-skipping server, real worker; the default policy: before_due 3 days before,
then 1, 7, 14 and 30 days after, at 09:00 UTC)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlmodel import Session, select

from models import CreditNote, Invoice, InvoiceCommand
from tests.conftest import Harness
from tests.test_actions import new_case
from tests.test_api import error_of


async def test_a_credit_note_lowers_the_balance_once_and_the_last_one_credits(
    h: Harness,
) -> None:
    c = await new_case(h, amount=100_000)
    body = {"amount_minor": 30_000, "reason": "returned goods", "external_id": "CN-1"}
    resp = await c.act("/credit-notes", body)
    assert resp.status_code == 201, resp.text
    note = resp.json()
    assert (note["status"], note["amount_minor"], note["currency"]) == ("applied", 30_000, "EUR")
    inv = await c.get()
    assert (inv["balance_minor"], inv["status"], inv["amount_minor"]) == (70_000, "open", 100_000)
    # The same number and body again: the first outcome, not a second credit.
    again = await c.act("/credit-notes", body)
    assert again.status_code == 201 and again.json()["id"] == note["id"]
    assert (await c.get())["balance_minor"] == 70_000
    # The same number with another amount: 409, nothing changes.
    other = await c.act("/credit-notes", body | {"amount_minor": 1})
    assert other.status_code == 409
    assert "exists with another" in error_of(other)
    # More than the balance: 422 before anything is stored.
    too_much = await c.act(
        "/credit-notes", {"amount_minor": 70_001, "reason": "x", "external_id": "CN-2"}
    )
    assert too_much.status_code == 422
    assert "open balance 70000" in error_of(too_much)
    with Session(h.engine) as s:
        assert s.exec(select(CreditNote).where(CreditNote.external_id == "CN-2")).first() is None
    events = [e for e in h.events(c.id) if e.kind == "credit_note"]
    assert len(events) == 1 and events[0].data["credit_note_id"] == note["id"]
    assert events[0].actor.startswith("specialist:")

    # The rest: the invoice is credited and its workflow ends; nothing more is sent.
    last = await c.act(
        "/credit-notes", {"amount_minor": 70_000, "reason": "settled", "external_id": "CN-3"}
    )
    assert last.status_code == 201, last.text
    inv = await c.get()
    assert (inv["status"], inv["balance_minor"]) == ("credited", 0)
    await c.sleep_until(c.at(20))
    assert c.steps() == []
    closed = await c.act("/credit-notes", {"amount_minor": 1, "reason": "x", "external_id": "CN-4"})
    assert closed.status_code == 409
    listed = (await h.get(f"/v1/invoices/{c.id}/credit-notes")).json()
    assert [(n["external_id"], n["status"]) for n in listed] == [
        ("CN-1", "applied"),
        ("CN-3", "applied"),
    ]


async def test_a_credit_note_on_a_disputed_invoice_is_refused_and_kept_as_refused(
    h: Harness,
) -> None:
    c = await new_case(h)
    assert (await c.act("/disputes", {"reason": "damaged"})).status_code == 200
    body = {"amount_minor": 1_000, "reason": "goodwill", "external_id": "CN-D"}
    resp = await c.act("/credit-notes", body)
    assert resp.status_code == 409
    assert "resolve the dispute" in error_of(resp)
    with Session(h.engine) as s:
        note = s.exec(select(CreditNote).where(CreditNote.external_id == "CN-D")).one()
    assert note.status == "refused" and note.detail is not None
    # Sent again: the first outcome, the refusal.
    again = await c.act("/credit-notes", body)
    assert again.status_code == 409
    assert "was refused" in error_of(again)
    assert (await c.get())["balance_minor"] == 120_000


async def test_a_later_due_date_moves_the_schedule_and_sends_nothing_twice(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    await c.sleep_until(c.at(1, hour=10))
    assert c.steps() == ["before_due", "first_late_day"]
    later = c.due + timedelta(days=20)
    resp = await h.http.patch(
        f"/v1/invoices/{c.id}",
        json={"due_date": later.isoformat(), "reason": "customer's PO was re-issued"},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["due_date"] == later.isoformat()
    assert body["next_action"]["step_key"] == "late_7"
    changed = [e for e in h.events(c.id) if e.kind == "due_date_changed"]
    assert len(changed) == 1 and changed[0].data["due_date"] == later.isoformat()
    with Session(h.engine) as s:
        row = s.get(Invoice, c.id)
        assert row is not None and row.due_date == later
    # Old late_7 (due + 7) passes without a send; the new one comes 7 days after the new date.
    await c.sleep_until(c.at(8, hour=10))
    assert c.steps() == ["before_due", "first_late_day"]
    await asyncio.sleep(0)
    new_late_7 = later + timedelta(days=7)
    await c.sleep_until(c.at((new_late_7 - c.due).days, hour=10))
    assert c.steps() == ["before_due", "first_late_day", "late_7"]


async def test_an_earlier_due_date_skips_the_steps_already_past(h: Harness) -> None:
    c = await new_case(h, due_in=20)
    now = await h.env.get_current_time()
    earlier = now.date() - timedelta(days=8)
    resp = await h.http.patch(
        f"/v1/invoices/{c.id}",
        json={"due_date": max(earlier, c.now.date()).isoformat()},
        headers=h.as_role("specialist"),
    )
    # issued today: a due date before the issue date is refused, nothing changes
    too_early = await h.http.patch(
        f"/v1/invoices/{c.id}",
        json={"due_date": (c.now.date() - timedelta(days=1)).isoformat()},
        headers=h.as_role("specialist"),
    )
    assert too_early.status_code == 422
    assert "before issued_on" in error_of(too_early)
    assert resp.status_code == 200, resp.text
    # Due today: before_due (3 days before) has passed and is skipped, not sent in a burst.
    changed = [e for e in h.events(c.id) if e.kind == "due_date_changed"]
    assert changed[0].data["skipped"] == ["before_due"]
    await asyncio.sleep(0.2)
    assert c.steps() == []


async def test_patch_changes_the_policy_and_refuses_bad_input(h: Harness) -> None:
    c = await new_case(h)
    policy = await h.policy(steps=[{"key": "only", "offset": "P2D"}], escalate_after="P30D")
    headers = h.as_role("specialist")
    resp = await h.http.patch(
        f"/v1/invoices/{c.id}", json={"policy_name": policy["name"]}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["policy_id"] == policy["id"]
    assert "policy_changed" in c.kinds()
    for body, fragment in [
        ({}, "give due_date or policy_name"),
        ({"policy_name": "nope"}, "policy 'nope' not found"),
        ({"due_date": "not a date"}, "due_date"),
        ({"amount_minor": 5}, "amount_minor"),
    ]:
        bad = await h.http.patch(f"/v1/invoices/{c.id}", json=body, headers=headers)
        assert bad.status_code == 422, bad.text
        assert fragment in bad.text
    viewer = await h.http.patch(
        f"/v1/invoices/{c.id}", json={"policy_name": "x"}, headers=h.as_role("viewer")
    )
    assert viewer.status_code == 403
    missing = await h.http.patch("/v1/invoices/999999", json={"policy_name": "x"}, headers=headers)
    assert missing.status_code == 404
    # Every update went through the recorded-command path.
    with Session(h.engine) as s:
        names = s.exec(select(InvoiceCommand.name).where(InvoiceCommand.invoice_id == c.id)).all()
    assert list(names) == ["change_policy"]
