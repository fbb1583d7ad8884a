"""Specialist actions on the time-skipping server (real worker and activities, SQLite):
disputes, payment plans, promises, pause/resume, write-off, assign, notes, idempotency."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from models import Customer, Dispute, Task
from tests.conftest import Harness
from tests.test_api import error_of, eventually
from tests.webhook import signed_payment
from workflows.invoice import InvoiceWorkflow

DAY = timedelta(days=1)


class Case:
    """One invoice under the default policy (09:00 UTC steps), due ``due`` days from now."""

    def __init__(self, h: Harness, inv: dict[str, Any], now: datetime, due: date) -> None:
        self.h, self.inv, self.now, self.due = h, inv, now, due
        self.id = inv["id"]

    def at(self, days_after_due: int, hour: int = 9) -> datetime:
        return datetime.combine(self.due + timedelta(days=days_after_due), time(hour), UTC)

    async def sleep_until(self, instant: datetime) -> None:
        now = await self.h.env.get_current_time()
        await self.h.env.sleep(max(instant - now, timedelta(0)))

    async def act(self, path: str, body: Any = None, role: str = "specialist", **kw: Any) -> Any:
        return await self.h.http.post(
            f"/v1/invoices/{self.id}{path}", json=body, headers=self.h.as_role(role) | kw
        )

    async def get(self, path: str = "") -> Any:
        return (await self.h.get(f"/v1/invoices/{self.id}{path}")).json()

    def steps(self) -> list[str]:
        # reminder steps only: not the confirmations to the customer (confirm-...)
        return [m.step_key for m in self.h.outbox(self.id) if not m.step_key.startswith("confirm-")]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.h.events(self.id)]

    async def state(self) -> Any:
        handle = self.h.client.get_workflow_handle_for(InvoiceWorkflow.run, self.inv["workflow_id"])
        return await handle.query(InvoiceWorkflow.state)


async def new_case(h: Harness, due_in: int = 10, amount: int = 120_000) -> Case:
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=due_in)
    cust = await h.customer()
    inv = await h.invoice(
        cust["id"],
        issued_on=now.date().isoformat(),
        due_date=due.isoformat(),
        amount_minor=amount,
    )
    return Case(h, inv, now, due)


# -- disputes ---------------------------------------------------------------------------


async def test_dispute_one_second_before_a_reminder_stops_it(h: Harness) -> None:
    c = await new_case(h)
    await c.sleep_until(c.at(1) - timedelta(seconds=1))
    assert c.steps() == ["before_due"]
    resp = await c.act("/disputes", {"reason": "goods damaged"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "disputed"
    assert body["next_action"]["kind"] == "dispute_deadline"
    await c.sleep_until(c.at(12))
    assert c.steps() == ["before_due"]  # first_late_day and late_7 never went out
    disputes = await c.get("/disputes")
    assert [(d["status"], d["reason"]) for d in disputes] == [("open", "goods damaged")]
    again = await c.act("/disputes", {"reason": "twice"})
    assert again.status_code == 409
    assert "already has an open dispute" in error_of(again)


async def test_dispute_past_its_deadline_goes_on_the_worklist(h: Harness) -> None:
    c = await new_case(h)
    resp = await c.act("/disputes", {"reason": "wrong quantity", "amount_minor": 20_000})
    assert resp.status_code == 200
    opened = await c.get()
    deadline = datetime.fromisoformat(opened["next_action"]["at"])
    await c.sleep_until(deadline - timedelta(minutes=1))
    assert "dispute_overdue" not in c.kinds()
    await c.sleep_until(deadline + timedelta(minutes=1))
    assert "dispute_overdue" in c.kinds()
    tasks = (await h.get("/v1/worklist", kind="dispute_overdue")).json()
    assert [(t["invoice_id"], t["kind"]) for t in tasks] == [(c.id, "dispute_overdue")]
    assert c.steps() == []


async def test_rejected_dispute_resumes_with_one_catch_up_reminder(h: Harness) -> None:
    c = await new_case(h)
    await c.sleep_until(c.at(0, 12))  # before_due sent, first_late_day not yet
    resp = await c.act("/disputes", {"reason": "not ordered"})
    dispute_id = (await c.get("/disputes"))[0]["id"]
    await c.sleep_until(c.at(16))  # first_late_day, late_7, late_14 passed meanwhile
    assert c.steps() == ["before_due"]
    resp = await c.act(
        f"/disputes/{dispute_id}/resolve", {"outcome": "rejected", "note": "order confirmed"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "open"
    await c.h.env.sleep(timedelta(minutes=5))
    sent = [m for m in c.h.outbox(c.id) if not m.step_key.startswith("confirm-")]
    assert [m.step_key for m in sent] == ["before_due", "late_14"]  # one catch-up, not three
    assert "rejected" in sent[-1].body
    # and the customer was told the dispute's outcome, once (arflow.messages.confirmations)
    told = [m for m in c.h.outbox(c.id) if m.step_key == f"confirm-dispute-outcome-{dispute_id}"]
    assert len(told) == 1
    skipped = [e.data["step"] for e in c.h.events(c.id) if e.kind == "reminder_skipped"]
    assert sorted(skipped) == ["first_late_day", "late_7"]
    again = await c.act(f"/disputes/{dispute_id}/resolve", {"outcome": "rejected", "note": "x"})
    assert again.status_code == 409
    # escalation (due +45) waits at least the policy's resume_grace (P7D) after resuming
    state = await c.state()
    assert state.next_action.step_key == "final_notice"
    assert (await c.get("/disputes"))[0]["status"] == "rejected"


async def test_upheld_dispute_with_credit(h: Harness) -> None:
    c = await new_case(h)
    await c.act("/disputes", {"reason": "partly damaged"})
    dispute_id = (await c.get("/disputes"))[0]["id"]
    too_much = await c.act(
        f"/disputes/{dispute_id}/resolve",
        {"outcome": "upheld", "credit_minor": 999_999, "note": "x"},
    )
    assert too_much.status_code == 422
    assert "open balance" in error_of(too_much)
    # (credits by an admin: a specialist's need a second person, see test_roles.py)
    resp = await c.act(
        f"/disputes/{dispute_id}/resolve",
        {"outcome": "upheld", "credit_minor": 20_000, "note": "two items damaged"},
        role="admin",
    )
    assert resp.json()["status"] == "open"
    assert resp.json()["balance_minor"] == 100_000
    # a second dispute, upheld in full, closes the invoice as credited
    await c.act("/disputes", {"reason": "rest missing too"})
    second = (await c.get("/disputes"))[-1]["id"]
    resp = await c.act(
        f"/disputes/{second}/resolve",
        {"outcome": "upheld", "credit_minor": 100_000, "note": "nothing delivered"},
        role="admin",
    )
    assert (resp.json()["status"], resp.json()["balance_minor"]) == ("credited", 0)
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, c.inv["workflow_id"])
    assert (await handle.result()).status == "credited"


async def test_payment_during_a_dispute(h: Harness) -> None:
    c = await new_case(h)
    await c.act("/disputes", {"reason": "price"})
    await signed_payment(h, invoice_id=c.id, amount_minor=50_000)
    assert await eventually(lambda: "payment_applied" in c.kinds())
    got = await c.get()
    assert (got["status"], got["balance_minor"]) == ("disputed", 70_000)
    await signed_payment(h, invoice_id=c.id, amount_minor=70_000)
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, c.inv["workflow_id"])
    assert (await handle.result()).status == "paid"
    assert (await c.get("/disputes"))[0]["status"] == "closed"


# -- payment plans ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "status", "words"),
    [
        ([(5, 60_000), (20, 50_000)], 422, "sum to 110000"),
        ([(20, 60_000), (5, 60_000)], 422, "strictly increasing"),
        ([(-1, 60_000), (20, 60_000)], 422, "in the past"),
        ([(d, 10_000) for d in range(1, 13)] + [(40, 0)], 422, "greater than 0"),
    ],
)
async def test_bad_plans_are_refused(
    h: Harness, plan: list[tuple[int, int]], status: int, words: str
) -> None:
    c = await new_case(h)
    today = c.now.date()
    body = {
        "installments": [
            {"due_date": (today + timedelta(days=d)).isoformat(), "amount_minor": a}
            for d, a in plan
        ]
    }
    resp = await c.act("/payment-plan", body)
    assert resp.status_code == status, resp.text
    assert words in error_of(resp)
    assert (await c.get())["hold"] is None


async def test_too_many_instalments_and_plan_on_a_disputed_invoice(h: Harness) -> None:
    c = await new_case(h, amount=130_000)
    today = c.now.date()
    many = [
        {"due_date": (today + timedelta(days=d)).isoformat(), "amount_minor": 10_000}
        for d in range(1, 14)
    ]
    resp = await c.act("/payment-plan", {"installments": many})
    assert resp.status_code == 422
    assert "at most 12" in error_of(resp)
    await c.act("/disputes", {"reason": "x"})
    ok_plan = [{"due_date": (today + timedelta(days=5)).isoformat(), "amount_minor": 130_000}]
    resp = await c.act("/payment-plan", {"installments": ok_plan})
    assert resp.status_code == 409
    assert "disputed" in error_of(resp)


async def test_plan_is_followed_then_broken(h: Harness) -> None:
    c = await new_case(h, due_in=2)
    today = c.now.date()
    d1, d2 = today + timedelta(days=10), today + timedelta(days=40)
    resp = await c.act(
        "/payment-plan",
        {
            "installments": [
                {"due_date": d1.isoformat(), "amount_minor": 60_000},
                {"due_date": d2.isoformat(), "amount_minor": 60_000},
            ],
            "note": "agreed on the phone",
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["hold"] == "plan"
    plan = await c.get("/payment-plan")
    assert (plan["status"], plan["note"]) == ("active", "agreed on the phone")
    # a partial payment goes to the first instalment
    await signed_payment(h, invoice_id=c.id, amount_minor=20_000)
    assert await eventually(lambda: "payment_applied" in c.kinds())
    # the original due date passes: no dunning reminder, only the plan's
    await c.sleep_until(datetime.combine(d1, time(9), UTC) - timedelta(hours=1))
    assert c.steps() == ["before_due", "plan1-1-before"]
    # instalment 1 is not paid in full: a late reminder, then broken after P5D
    await c.sleep_until(datetime.combine(d1 + DAY, time(10), UTC))
    assert c.steps()[-1] == "plan1-1-late"
    assert "40,00" in c.h.outbox(c.id)[-1].body or "€400.00" in c.h.outbox(c.id)[-1].body
    got = await c.get("/payment-plan")
    assert [(i["state"], i["paid_minor"]) for i in got["installments"]] == [
        ("late", 20_000),
        ("pending", 0),
    ]
    await c.sleep_until(datetime.combine(d1 + timedelta(days=5), time(10), UTC))
    assert "plan_broken" in c.kinds()
    got = await c.get("/payment-plan")
    assert got["status"] == "broken"
    assert [i["state"] for i in got["installments"]] == ["missed", "pending"]
    with Session(h.engine) as s:
        customer = s.get(Customer, c.inv["customer_id"])
        assert customer is not None and customer.broken_plans == 1
    # dunning resumes on the remaining balance with one catch-up reminder
    await c.h.env.sleep(timedelta(minutes=5))
    last = c.h.outbox(c.id)[-1]
    assert last.step_key == "late_7"
    assert "€1,000.00" in last.body and "lapsed" in last.body
    assert (await c.get())["hold"] is None


async def test_plan_paid_on_time_closes_the_invoice(h: Harness) -> None:
    c = await new_case(h, due_in=1)
    today = c.now.date()
    d1, d2 = today + timedelta(days=10), today + timedelta(days=20)
    await c.act(
        "/payment-plan",
        {
            "installments": [
                {"due_date": d1.isoformat(), "amount_minor": 70_000},
                {"due_date": d2.isoformat(), "amount_minor": 50_000},
            ]
        },
    )
    assert (await c.get("/payment-plan"))["status"] == "active"
    # instalment 1 overpaid early: it is not reminded, the excess rolls into instalment 2
    await signed_payment(h, invoice_id=c.id, amount_minor=80_000)
    # The plan's instalments are recorded in the step after the payment's own event: wait for
    # that step, not only for the payment (the test raced it under load).
    expected = [("paid", 70_000), ("pending", 10_000)]
    for _ in range(200):
        got = await c.get("/payment-plan")
        if [(i["state"], i["paid_minor"]) for i in got["installments"]] == expected:
            break
        await asyncio.sleep(0.05)
    assert [(i["state"], i["paid_minor"]) for i in got["installments"]] == expected
    await c.sleep_until(datetime.combine(d2, time(8), UTC))
    assert "plan1-1-before" not in c.steps()
    assert "plan1-2-before" in c.steps()
    await signed_payment(h, invoice_id=c.id, amount_minor=40_000)
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, c.inv["workflow_id"])
    assert (await handle.result()).status == "paid"
    assert (await c.get("/payment-plan"))["status"] == "completed"


async def test_cancelling_a_plan_resumes_dunning(h: Harness) -> None:
    c = await new_case(h)
    today = c.now.date()
    items = [{"due_date": (today + timedelta(days=30)).isoformat(), "amount_minor": 120_000}]
    await c.act("/payment-plan", {"installments": items})
    again = await c.act("/payment-plan", {"installments": items})
    assert again.status_code == 409
    resp = await h.http.delete(f"/v1/invoices/{c.id}/payment-plan", headers=h.as_role("specialist"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["hold"] is None
    assert (await c.get("/payment-plan"))["status"] == "cancelled"
    none_left = await h.http.delete(
        f"/v1/invoices/{c.id}/payment-plan", headers=h.as_role("specialist")
    )
    assert none_left.status_code == 409


# -- promises -----------------------------------------------------------------------------


async def test_promise_broken_then_paid_late(h: Harness) -> None:
    c = await new_case(h, due_in=5)
    promised = c.due + timedelta(days=10)
    resp = await c.act("/promise", {"promised_date": promised.isoformat(), "amount_minor": 120_000})
    assert resp.status_code == 200, resp.text
    assert resp.json()["hold"] == "promise"
    await c.sleep_until(datetime.combine(promised, time(12), UTC))
    assert c.steps() == []  # before_due, first_late_day and late_7 held back
    await c.sleep_until(datetime.combine(promised + timedelta(days=4), time(12), UTC))
    assert "promise_broken" in c.kinds()
    with Session(h.engine) as s:
        customer = s.get(Customer, c.inv["customer_id"])
        assert customer is not None and customer.broken_promises == 1
    # broken at the end of promised date + P3D: one catch-up (late_7, saying why; the
    # held-back before_due and first_late_day skipped), then late_14 on its own day
    assert c.steps() == ["late_7", "late_14"]
    sent = c.h.outbox(c.id)
    assert "promised" in sent[0].body and "promised" not in sent[1].body
    skipped = sorted(e.data["step"] for e in c.h.events(c.id) if e.kind == "reminder_skipped")
    assert skipped == ["before_due", "first_late_day"]
    await signed_payment(h, invoice_id=c.id, amount_minor=120_000)
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, c.inv["workflow_id"])
    assert (await handle.result()).status == "paid"


async def test_promise_kept(h: Harness) -> None:
    c = await new_case(h, due_in=1)
    promised = c.due + timedelta(days=10)
    await c.act("/promise", {"promised_date": promised.isoformat(), "amount_minor": 50_000})
    past = await c.act("/promise", {"promised_date": "2020-01-01", "amount_minor": 1})
    assert past.status_code == 422
    await signed_payment(h, invoice_id=c.id, amount_minor=50_000)
    assert await eventually(lambda: "promise_kept" in c.kinds())
    got = await c.get()
    assert (got["hold"], got["balance_minor"]) == (None, 70_000)


# -- pause, resume, write-off, assign, notes ---------------------------------------------


async def test_pause_across_the_escalation_deadline(h: Harness) -> None:
    """Rule: no escalation while paused; after resuming, escalation comes no earlier than
    the policy's resume_grace (P7D) later, and missed steps are not sent in a burst."""
    c = await new_case(h, due_in=1)
    await c.sleep_until(c.at(20))
    assert c.steps() == ["before_due", "first_late_day", "late_7", "late_14"]
    resp = await c.act("/pause", {"reason": "customer in insolvency talks"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["hold"], resp.json()["next_action"]) == ("paused", None)
    await c.sleep_until(c.at(60))  # final_notice (+30) and escalation (+45) passed
    assert (await c.get())["status"] == "open"
    assert c.steps() == ["before_due", "first_late_day", "late_7", "late_14"]
    resumed_at = await h.env.get_current_time()
    resp = await c.act("/resume", {"reason": "talks failed"})
    assert resp.status_code == 200, resp.text
    await c.h.env.sleep(timedelta(minutes=5))
    assert c.steps()[-1] == "final_notice"  # the one catch-up
    got = await c.get()
    assert got["next_action"]["kind"] == "escalation"
    assert datetime.fromisoformat(got["next_action"]["at"]) >= resumed_at + timedelta(days=7)
    await c.sleep_until(resumed_at + timedelta(days=6))
    assert (await c.get())["status"] == "open"
    await c.sleep_until(resumed_at + timedelta(days=8))
    assert (await c.get())["status"] == "escalated"


async def test_pause_until_a_date_resumes_by_itself(h: Harness) -> None:
    c = await new_case(h, due_in=5)
    until = c.due + timedelta(days=3)
    resp = await c.act("/pause", {"reason": "holiday", "until": until.isoformat()})
    assert resp.json()["next_action"]["kind"] == "resume"
    again = await c.act("/pause", {"reason": "twice"})
    assert again.status_code == 409
    await c.sleep_until(datetime.combine(until, time(0), UTC) - timedelta(minutes=1))
    assert c.steps() == []
    await c.sleep_until(datetime.combine(until, time(0), UTC) + timedelta(minutes=1))
    assert c.steps() == ["first_late_day"]  # before_due skipped, no burst
    not_paused = await c.act("/resume", {})
    assert not_paused.status_code == 409


async def test_write_off_is_for_admins(h: Harness) -> None:
    c = await new_case(h)
    denied = await c.act("/write-off", {"reason": "insolvent"})
    assert denied.status_code == 403
    resp = await c.act("/write-off", {"reason": "insolvent"}, role="admin")
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert (got["status"], got["balance_minor"]) == ("written_off", 120_000)
    closed = await c.act("/pause", {"reason": "late"})
    assert closed.status_code == 409
    note = await c.act("/notes", {"text": "file closed"})
    assert note.status_code == 201  # notes still go on a closed invoice's timeline


async def test_assign_notes_and_roles(h: Harness) -> None:
    c = await new_case(h)
    resp = await c.act("/assign", {"collector": "maria"})
    assert resp.json()["collector"] == "maria"
    listed = (await h.get("/v1/invoices", collector="maria")).json()
    assert [i["id"] for i in listed["items"]] == [c.id]
    assert (await h.get("/v1/invoices", collector="nobody")).json()["total"] == 0
    key = {"Idempotency-Key": "note-1"}
    first = await c.act("/notes", {"text": "called, will pay Friday"}, **key)
    second = await c.act("/notes", {"text": "called, will pay Friday"}, **key)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    timeline = await c.get("/timeline")
    assert [e["kind"] for e in timeline].count("note") == 1
    assert timeline[-1]["actor"].startswith("specialist:")
    for path, body in [
        ("/disputes", {"reason": "x"}),
        ("/pause", {"reason": "x"}),
        ("/notes", {"text": "x"}),
        ("/assign", {"collector": "x"}),
    ]:
        denied = await c.act(path, body, role="viewer")
        assert denied.status_code == 403, path


# -- concurrency --------------------------------------------------------------------------


async def test_double_click_with_an_idempotency_key_applies_once(h: Harness) -> None:
    c = await new_case(h)
    key = {"Idempotency-Key": "dbl-1"}
    a, b = await asyncio.gather(
        c.act("/disputes", {"reason": "double click"}, **key),
        c.act("/disputes", {"reason": "double click"}, **key),
    )
    assert (a.status_code, b.status_code) == (200, 200)
    assert a.json()["status"] == b.json()["status"] == "disputed"
    with Session(h.engine) as s:
        assert len(s.exec(select(Dispute).where(Dispute.invoice_id == c.id)).all()) == 1
    assert c.kinds().count("dispute_opened") == 1


async def test_double_click_without_a_key_is_refused_once(h: Harness) -> None:
    c = await new_case(h)
    a, b = await asyncio.gather(c.act("/pause", {"reason": "x"}), c.act("/pause", {"reason": "x"}))
    assert sorted([a.status_code, b.status_code]) == [200, 409]
    assert c.kinds().count("paused") == 1


async def test_update_racing_a_payment_stays_consistent(h: Harness) -> None:
    c = await new_case(h)
    today = c.now.date()
    plan = {
        "installments": [
            {"due_date": (today + timedelta(days=20)).isoformat(), "amount_minor": 120_000}
        ]
    }
    plan_resp, pay_resp = await asyncio.gather(
        c.act("/payment-plan", plan),
        signed_payment(h, invoice_id=c.id, amount_minor=120_000),
    )
    assert pay_resp.status_code == 200
    assert plan_resp.status_code in (200, 409)
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, c.inv["workflow_id"])
    final = await handle.result()
    assert final.status == "paid"
    got = await c.get()
    assert (got["status"], got["balance_minor"], got["hold"]) == ("paid", 0, None)
    if plan_resp.status_code == 200:
        assert (await c.get("/payment-plan"))["status"] == "completed"
    with Session(h.engine) as s:
        assert s.exec(select(Task)).all() == []
