"""A policy's ``min_balance_minor``: below it no reminder and no escalation; the invoice waits
on the worklist for a write-off decision (time-skipping server, real worker)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlmodel import Session, select

from models import Task
from tests.conftest import Harness
from tests.test_actions import eventually
from tests.webhook import signed_payment


def tasks(h: Harness, invoice_id: int) -> list[Task]:
    with Session(h.engine) as s:
        return list(s.exec(select(Task).where(Task.invoice_id == invoice_id)).all())


async def test_a_balance_below_the_minimum_stops_dunning_and_asks_for_a_write_off(
    h: Harness,
) -> None:
    policy = await h.policy(
        steps=[
            {"key": "late_1", "offset": "P1D"},
            {"key": "late_5", "offset": "P5D"},
            {"key": "late_9", "offset": "P9D"},
        ],
        escalate_after="P12D",
        min_balance_minor=5_000,
    )
    customer = await h.customer()
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=2)
    inv = await h.invoice(
        customer["id"], due_date=due.isoformat(), amount_minor=100_000, policy_name=policy["name"]
    )
    assert inv["policy_id"] == policy["id"]

    def at(days: int) -> datetime:
        """Noon of the day after ``days`` past due (a step of offset PnD falls due at the end
        of the due date + n days)."""
        return datetime.combine(due + timedelta(days=days + 1), time(12), UTC)

    def steps() -> list[str]:
        return [m.step_key for m in h.reminders(inv["id"])]

    await h.env.sleep(at(1) - now)
    assert steps() == ["late_1"]
    # A partial payment leaves 4,000: below the minimum.
    await signed_payment(h, invoice_id=inv["id"], amount_minor=96_000)
    assert await eventually(lambda: any(e.kind == "small_balance" for e in h.events(inv["id"])))
    got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert (got["status"], got["balance_minor"], got["next_action"]) == ("open", 4_000, None)
    [task] = tasks(h, inv["id"])
    assert (task.kind, task.status) == ("small_balance", "open")
    assert task.data == {"balance_minor": 4_000, "min_balance_minor": 5_000}
    # Neither the later reminders nor the escalation go out; the task is raised once.
    await h.env.sleep(at(20) - await h.env.get_current_time())
    assert steps() == ["late_1"]
    kinds = [e.kind for e in h.events(inv["id"])]
    assert kinds.count("small_balance") == 1
    assert "escalated" not in kinds and got["status"] == "open"
    assert len(tasks(h, inv["id"])) == 1
    # The write-off decision closes the invoice and its task.
    resp = await h.post(f"/v1/invoices/{inv['id']}/write-off", {"reason": "too small"}, "admin")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "written_off"
    [task] = tasks(h, inv["id"])
    assert task.status == "done"


async def test_an_invoice_above_the_minimum_is_chased_as_usual(h: Harness) -> None:
    policy = await h.policy(
        steps=[{"key": "late_1", "offset": "P1D"}],
        escalate_after="P30D",
        min_balance_minor=5_000,
    )
    customer = await h.customer()
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=2)
    inv = await h.invoice(
        customer["id"], due_date=due.isoformat(), amount_minor=5_000, policy_name=policy["name"]
    )
    await h.env.sleep(datetime.combine(due + timedelta(days=2), time(12), UTC) - now)
    assert [m.step_key for m in h.reminders(inv["id"])] == ["late_1"]
    assert tasks(h, inv["id"]) == []
    # The minimum is part of the policy as the API shows it; a negative one is refused.
    assert (await h.get(f"/v1/policies/{policy['id']}")).json()["min_balance_minor"] == 5_000
    bad = await h.post(
        "/v1/policies",
        {
            "name": "neg",
            "steps": [{"key": "a", "offset": "P1D"}],
            "escalate_after": "P9D",
            "min_balance_minor": -1,
        },
        "admin",
    )
    assert bad.status_code == 422
    assert "min_balance_minor" in bad.text
