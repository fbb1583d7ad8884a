"""A customer changing segment moves their open invoices' workflows to the segment's policy
from the next step on: nothing re-sent, nothing skipped without a record (time-skipping
server, real worker)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment

from arflow.schedules import ensure_customer_review_schedule
from tests.conftest import Harness, harness
from tests.test_actions import new_case
from tests.webhook import signed_payment
from workflows.types import StatementRun


async def first_segment(
    h: Harness, name: str, policy: dict[str, Any], *rules: dict[str, Any]
) -> None:
    """A segment evaluated before the defaults, with ``policy``."""
    resp = await h.post(
        "/v1/segments",
        {"name": name, "position": 1, "policy_name": policy["name"], "rules": list(rules)},
        role="admin",
    )
    assert resp.status_code == 201, resp.text


async def policies_become(h: Harness, invoices: list[dict[str, Any]], policy_id: int) -> list[int]:
    """The invoices' policies once all are ``policy_id`` (switches run in a workflow of their
    own), or as they are after 10 s."""

    async def policies() -> list[int]:
        return [(await h.get(f"/v1/invoices/{i['id']}")).json()["policy_id"] for i in invoices]

    for _ in range(200):
        if await policies() == [policy_id] * len(invoices):
            break
        await asyncio.sleep(0.05)
    return await policies()


async def test_switch_to_high_risk_follows_its_steps_from_now_on(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    await c.sleep_until(c.at(2, hour=10))  # before_due and first_late_day sent
    assert c.steps() == ["before_due", "first_late_day"]
    resp = await h.http.put(
        f"/v1/customers/{c.inv['customer_id']}/profile",
        json={"segment": "high_risk"},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert (result["segment"], result["segment_changed"]) == ("high_risk", True)
    assert result["policy_change_invoice_ids"] == [c.id]
    assert result["policy_switch_failed"] == {}
    changed = next(e for e in h.events(c.id) if e.kind == "policy_changed")
    # The high-risk policy's call on the due date has passed: recorded, not made late.
    assert changed.data == {
        "from": "default",
        "to": "high_risk",
        "reason": "segment standard -> high_risk",
        "skipped": ["due_date_call"],
        "from_version": 1,
        "to_version": 1,
    }
    invoice = await c.get()
    policies = {p["name"]: p["id"] for p in (await h.get("/v1/policies")).json()}
    assert invoice["policy_id"] == policies["high_risk"]
    assert invoice["next_action"]["step_key"] == "late_3"
    await c.sleep_until(c.at(3, hour=10))
    # late_3 is the high-risk policy's SMS on day 3; nothing earlier was sent again.
    assert c.steps() == ["before_due", "first_late_day", "late_3"]
    assert [m.channel for m in h.outbox(c.id)] == ["email", "email", "sms"]


async def test_no_switch_when_the_segment_stays(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    resp = await h.http.put(
        f"/v1/customers/{c.inv['customer_id']}/profile",
        json={"annual_revenue_minor": 1_000_000},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["segment_changed"] is False
    assert "policy_changed" not in c.kinds()


async def test_a_payment_lifts_the_credit_hold(h: Harness) -> None:
    cust = await h.customer()
    inv = await h.invoice(cust["id"], amount_minor=50_000)
    resp = await h.http.put(
        f"/v1/customers/{cust['id']}/profile",
        json={"credit_limit_minor": 10_000, "credit_currency": "EUR"},
        headers=h.as_role("specialist"),
    )
    assert resp.json()["profile"]["credit_hold"] is True  # 500.00 open, limit 100.00
    assert (await signed_payment(h, invoice_id=inv["id"], amount_minor=45_000)).status_code == 200

    async def lifted() -> bool:
        profile = (await h.get(f"/v1/customers/{cust['id']}/profile")).json()
        return profile["profile"]["credit_hold"] is False

    for _ in range(100):
        if await lifted():
            break
        await asyncio.sleep(0.05)
    assert await lifted()
    kinds = [e["kind"] for e in (await h.get(f"/v1/customers/{cust['id']}/events")).json()]
    assert "credit_hold_on" in kinds and "credit_hold_off" in kinds


async def test_a_payment_that_moves_the_customer_switches_their_other_invoices(
    h: Harness,
) -> None:
    """Paying on time makes the customer a prompt payer (a segment with its own policy): the
    move is recorded on the customer and their other open invoice follows the new policy."""
    prompt = await h.policy(
        escalate_after="P60D",
        steps=[{"key": "gentle", "offset": "P10D", "template": "reminder_overdue"}],
    )
    await first_segment(
        h, "prompt_payers", prompt, {"field": "paid_on_time_pct", "op": "gte", "value": 100}
    )
    cust = await h.customer()
    first = await h.invoice(cust["id"], amount_minor=10_000)
    second = await h.invoice(cust["id"], amount_minor=20_000)
    assert first["policy_id"] == second["policy_id"] != prompt["id"]
    now = (await h.env.get_current_time()).isoformat()
    paid = await signed_payment(h, invoice_id=first["id"], amount_minor=10_000, paid_at=now)
    assert paid.status_code == 200, paid.text

    assert await policies_become(h, [second], prompt["id"]) == [prompt["id"]]
    events = (await h.get(f"/v1/customers/{cust['id']}/events")).json()
    moved = next(e for e in events if e["kind"] == "segment_changed")
    assert (moved["data"]["from"], moved["data"]["to"]) == ("standard", "prompt_payers")
    assert moved["data"]["invoice_ids"] == [second["id"]]
    changed = next(e for e in h.events(second["id"]) if e.kind == "policy_changed")
    assert changed.data["to"] == prompt["name"]
    assert changed.data["reason"] == "segment standard -> prompt_payers"
    assert (await h.get(f"/v1/invoices/{first['id']}")).json()["status"] == "paid"


async def test_a_segment_without_sms_sends_the_step_on_its_fallback(h: Harness) -> None:
    """Key accounts are not texted: an SMS step goes out by email (its fallback), and the
    timeline says why."""
    pol = await h.policy(
        escalate_after="PT1H",
        steps=[{"key": "nudge", "offset": "PT1M", "channel": "sms", "fallback": ["email"]}],
    )
    cust = await h.customer()
    resp = await h.http.put(
        f"/v1/customers/{cust['id']}/profile",
        json={"segment": "key_account"},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    now = await h.env.get_current_time()
    inv = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        issued_on=(now.date() - timedelta(days=30)).isoformat(),
        due_date=now.date().isoformat(),
    )
    await h.env.sleep(timedelta(days=1, minutes=2))  # past the end of the due day + 1 min
    rows = h.outbox(inv["id"])
    assert [(m.step_key, m.channel, m.status) for m in rows] == [
        ("nudge", "sms", "blocked"),
        ("nudge", "email", "sent"),
    ]
    assert rows[0].detail == "sms is not a channel of segment key_account"


async def test_a_broken_promise_that_moves_the_customer_switches_their_invoices(
    h: Harness,
) -> None:
    """The same from the workflow's own change: a promise broken counts on the customer, a
    rule on broken promises moves them, and both invoices follow the new segment's policy."""
    strict = await h.policy(
        escalate_after="P20D",
        steps=[{"key": "firm", "offset": "P2D", "template": "reminder_overdue"}],
    )
    await first_segment(
        h, "unreliable", strict, {"field": "broken_promises", "op": "gte", "value": 1}
    )
    cust = await h.customer()
    now = await h.env.get_current_time()
    first = await h.invoice(cust["id"], due_date=(now.date() + timedelta(days=5)).isoformat())
    second = await h.invoice(cust["id"])
    promised = (now.date() + timedelta(days=1)).isoformat()
    resp = await h.http.post(
        f"/v1/invoices/{first['id']}/promise",
        json={"promised_date": promised, "amount_minor": 50_000},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    await h.env.sleep(timedelta(days=5))  # the promise's grace (3 days) is over

    assert await policies_become(h, [first, second], strict["id"]) == [strict["id"]] * 2
    events = (await h.get(f"/v1/customers/{cust['id']}/events")).json()
    moved = next(e for e in events if e["kind"] == "segment_changed")
    assert (moved["data"]["to"], moved["data"]["invoice_ids"]) == (
        "unreliable",
        [first["id"], second["id"]],
    )
    assert "promise_broken" in [e.kind for e in h.events(first["id"])]


async def test_the_daily_review_moves_customers_whose_figures_changed_with_time(
    h: Harness,
) -> None:
    """No event at all: an invoice growing overdue moves its customer when the daily review
    runs, and their open invoices follow the new segment's policy."""
    firm = await h.policy(
        escalate_after="P60D",
        steps=[{"key": "firm", "offset": "P40D", "template": "reminder_overdue"}],
    )
    await first_segment(
        h, "slow_payers", firm, {"field": "max_days_overdue", "op": "gte", "value": 10}
    )
    cust = await h.customer()
    now = await h.env.get_current_time()
    late = await h.invoice(cust["id"], due_date=(now.date() + timedelta(days=1)).isoformat())
    later = await h.invoice(cust["id"])
    review = f"review-{uuid.uuid4().hex[:8]}"
    counts = await h.client.execute_workflow(
        "CustomerReviewWorkflow",
        StatementRun(at=now),
        id=review,
        task_queue=h.settings.task_queue,
        result_type=dict[str, int],
    )
    assert counts == {"customers": 1, "moved": 0, "holds_changed": 0}

    await h.env.sleep(timedelta(days=13))
    at = await h.env.get_current_time()
    counts = await h.client.execute_workflow(
        "CustomerReviewWorkflow",
        StatementRun(at=at),
        id=review + "-2",
        task_queue=h.settings.task_queue,
        result_type=dict[str, int],
    )
    assert counts == {"customers": 1, "moved": 1, "holds_changed": 0}

    assert await policies_become(h, [late, later], firm["id"]) == [firm["id"]] * 2
    events = (await h.get(f"/v1/customers/{cust['id']}/events")).json()
    moved = next(e for e in events if e["kind"] == "segment_changed")
    assert moved["data"]["to"] == "slow_payers" and moved["actor"] == "workflow"


async def test_reevaluating_by_api_switches_the_movers_invoices(h: Harness) -> None:
    """An admin changes a segment's rules and re-evaluates at once: the customers who move
    take their open invoices to the new policy."""
    gentle = await h.policy(
        escalate_after="P90D",
        steps=[{"key": "soft", "offset": "P20D", "template": "reminder_overdue"}],
    )
    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    await first_segment(h, "everyone", gentle)
    resp = await h.post("/v1/segments/reevaluate", None, role="admin")
    assert resp.status_code == 200, resp.text
    [result] = [r for r in resp.json() if r["profile"]["customer_id"] == cust["id"]]
    assert (result["segment"], result["policy_change_invoice_ids"]) == ("everyone", [inv["id"]])
    assert result["policy_switch_failed"] == {}
    assert (await h.get(f"/v1/invoices/{inv['id']}")).json()["policy_id"] == gentle["id"]


@pytest.mark.devserver
async def test_the_daily_review_schedule_exists(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(dev_env, sqlite_engine, tmp_path) as h:
        schedule_id = await ensure_customer_review_schedule(h.client, h.settings)
        handle = h.client.get_schedule_handle(schedule_id)
        try:
            described = await handle.describe()
            [calendar] = described.schedule.spec.calendars
            assert [(r.start, r.end) for r in calendar.hour] == [(5, 5)]
            action = described.schedule.action
            assert isinstance(action, ScheduleActionStartWorkflow)
            assert action.workflow == "CustomerReviewWorkflow"
        finally:
            await handle.delete()
