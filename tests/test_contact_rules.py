"""Contact rules in the running workflow (time-skipping server, real worker and activities):
fallback channels, opt-outs, the daily cap per customer, call tasks and their outcomes with
the Reg F cooldown, letters into the print batch, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from models import ContactBlock, Task
from tests.conftest import Harness
from tests.test_api import error_of

DAY = timedelta(days=1)


async def sleep_until(h: Harness, instant: datetime) -> None:
    now = await h.env.get_current_time()
    await h.env.sleep(max(instant - now, timedelta(0)))


async def one_step_policy(h: Harness, channel: str, fallback: list[str], **rules: Any) -> Any:
    return await h.policy(
        escalate_after="P30D",
        steps=[{"key": "due", "offset": "PT0S", "channel": channel, "fallback": fallback}],
        **rules,
    )


async def invoice_due_in(h: Harness, customer: dict[str, Any], policy: Any, hours: int) -> Any:
    due_at = (await h.env.get_current_time()) + timedelta(hours=hours)
    return await h.invoice(
        customer["id"],
        policy_id=policy["id"],
        due_at=due_at.isoformat(),
        due_date=due_at.date().isoformat(),
    ), due_at


def kinds(h: Harness, invoice_id: int) -> list[str]:
    return [e.kind for e in h.events(invoice_id)]


async def test_no_email_address_falls_back_to_sms(h: Harness) -> None:
    cust = await h.customer(email=None)
    pol = await one_step_policy(h, "email", ["sms"])
    inv, due_at = await invoice_due_in(h, cust, pol, 1)
    await sleep_until(h, due_at + timedelta(minutes=1))
    rows = [(m.channel, m.status, m.detail) for m in h.outbox(inv["id"])]
    assert rows == [("email", "blocked", "no email on file"), ("sms", "sent", None)]
    events = [(e.kind, e.data.get("channel")) for e in h.events(inv["id"])][1:]
    assert events == [("channel_unavailable", "email"), ("reminder_sent", "sms")]
    sent = h.events(inv["id"])[-1]
    assert sent.data["fallback"] is True


async def test_opted_out_channel_with_no_fallback_leaves_a_task(h: Harness) -> None:
    cust = await h.customer()
    with Session(h.engine) as s:
        s.add(
            ContactBlock(
                customer_id=cust["id"], channel="email", reason="unsubscribed", source="test"
            )
        )
        s.commit()
    pol = await one_step_policy(h, "email", [])
    inv, due_at = await invoice_due_in(h, cust, pol, 1)
    await sleep_until(h, due_at + timedelta(minutes=1))
    assert [(m.channel, m.status) for m in h.outbox(inv["id"])] == [("email", "blocked")]
    assert kinds(h, inv["id"])[-2:] == ["channel_unavailable", "reminder_undeliverable"]
    tasks = (await h.get("/v1/worklist", kind="contact_failed")).json()
    assert [(t["invoice_id"], t["data"]["step"]) for t in tasks] == [(inv["id"], "due")]
    state = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert state["next_action"]["kind"] == "escalation"  # the step is over, not retried


async def test_daily_cap_per_customer_moves_the_second_message_to_the_next_day(
    h: Harness,
) -> None:
    cust = await h.customer(timezone="UTC")
    pol = await one_step_policy(h, "email", [], max_messages_per_day=1)
    # By SMS: one message per channel is what consolidation would merge; the cap is across
    # channels.
    by_sms = await one_step_policy(h, "sms", [], max_messages_per_day=1)
    first, due_at = await invoice_due_in(h, cust, pol, 1)
    second = await h.invoice(
        cust["id"],
        policy_id=by_sms["id"],
        due_at=due_at.isoformat(),
        due_date=due_at.date().isoformat(),
    )
    await sleep_until(h, due_at + timedelta(minutes=5))
    sent = [m for i in (first, second) for m in h.outbox(i["id"]) if m.status == "sent"]
    assert len(sent) == 1  # one of the two; the other waits
    waiting = second if sent[0].invoice_id == first["id"] else first
    state = (await h.get(f"/v1/invoices/{waiting['id']}")).json()
    next_day = datetime.combine(due_at.date() + DAY, datetime.min.time(), UTC)
    assert datetime.fromisoformat(state["next_action"]["at"]) == next_day
    await sleep_until(h, next_day + timedelta(minutes=1))
    assert [m.status for m in h.outbox(waiting["id"])] == ["sent"]


async def test_call_step_goes_to_the_worklist_and_its_outcome_counts(h: Harness) -> None:
    cust = await h.customer()
    pol = await h.policy(
        escalate_after="P30D",
        steps=[
            {"key": "call1", "offset": "PT0S", "channel": "call"},
            {"key": "call2", "offset": "P2D", "channel": "call"},
        ],
    )
    inv, due_at = await invoice_due_in(h, cust, pol, 1)
    await sleep_until(h, due_at + timedelta(minutes=1))
    [task] = (await h.get("/v1/worklist", kind="call")).json()
    assert (task["invoice_id"], task["data"]["step"], task["data"]["phone"]) == (
        inv["id"],
        "call1",
        "+4930123456",
    )
    promised = (await h.env.get_current_time()).date() + timedelta(days=20)
    bad = await h.post(
        f"/v1/call-tasks/{task['id']}/outcome",
        {
            "outcome": "no_answer",
            "promise": {"promised_date": promised.isoformat(), "amount_minor": 5},
        },
    )
    assert bad.status_code == 409
    resp = await h.post(
        f"/v1/call-tasks/{task['id']}/outcome",
        {
            "outcome": "reached",
            "note": "will pay",
            "promise": {"promised_date": promised.isoformat(), "amount_minor": 120_000},
        },
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["task"]["status"], resp.json()["hold"]) == ("done", "promise")
    again = await h.post(f"/v1/call-tasks/{task['id']}/outcome", {"outcome": "reached"})
    assert again.status_code == 409
    assert "already has an outcome" in error_of(again)
    assert "call_outcome" in kinds(h, inv["id"])
    assert [m.status for m in h.outbox(inv["id"])] == ["delivered"]


async def test_reg_f_cooldown_after_a_conversation_holds_the_next_call(h: Harness) -> None:
    cust = await h.customer()
    pol = await h.policy(
        escalate_after="P30D",
        call_cooldown="P7D",
        steps=[
            {"key": "call1", "offset": "PT0S", "channel": "call"},
            {"key": "call2", "offset": "P2D", "channel": "call"},
        ],
    )
    inv, due_at = await invoice_due_in(h, cust, pol, 1)
    await sleep_until(h, due_at + timedelta(minutes=1))
    [task] = (await h.get("/v1/worklist", kind="call")).json()
    # The conversation is recorded at the workflow's time, as a specialist would on that day.
    with Session(h.engine) as s:
        row = s.get(Task, task["id"])
        assert row is not None
        talked = await h.env.get_current_time()
        row.data = row.data | {"outcome": "reached", "reached_at": talked.isoformat()}
        row.status = "done"
        s.add(row)
        s.commit()
    await sleep_until(h, due_at + 2 * DAY + timedelta(minutes=1))
    assert [m.step_key for m in h.outbox(inv["id"])] == ["call1"]  # call2 waits: cooldown
    state = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert datetime.fromisoformat(state["next_action"]["at"]) == talked + 7 * DAY
    await sleep_until(h, talked + 7 * DAY + timedelta(minutes=1))
    assert [m.step_key for m in h.outbox(inv["id"])] == ["call1", "call2"]


async def test_wrong_number_blocks_calls_and_sms(h: Harness) -> None:
    cust = await h.customer()
    pol = await one_step_policy(h, "call", [])
    inv, due_at = await invoice_due_in(h, cust, pol, 1)
    await sleep_until(h, due_at + timedelta(minutes=1))
    [task] = (await h.get("/v1/worklist", kind="call")).json()
    resp = await h.post(f"/v1/call-tasks/{task['id']}/outcome", {"outcome": "wrong_number"})
    assert resp.status_code == 200
    with Session(h.engine) as s:
        blocks = s.exec(select(ContactBlock).where(ContactBlock.customer_id == cust["id"])).all()
    assert sorted((b.channel, b.reason) for b in blocks) == [
        ("call", "wrong_number"),
        ("sms", "wrong_number"),
    ]
    assert (
        await h.post("/v1/call-tasks/999999/outcome", {"outcome": "reached"})
    ).status_code == 404


async def test_letter_goes_to_the_print_batch_as_a_pdf(h: Harness) -> None:
    cust = await h.customer(name="Müller & Söhne KG", address="Hauptstraße 1\n10115 Berlin")
    pol = await one_step_policy(h, "letter", [])
    inv, due_at = await invoice_due_in(h, cust, pol, 1)
    await sleep_until(h, due_at + timedelta(minutes=1))
    [row] = h.outbox(inv["id"])
    assert (row.channel, row.status, row.recipient) == (
        "letter",
        "printed",
        "Hauptstraße 1\n10115 Berlin",
    )
    path = Path(row.provider_id or "")
    assert path.parent.parent == Path(h.settings.print_folder)
    assert path.read_bytes().startswith(b"%PDF")


async def test_letter_without_address_falls_back_to_email(h: Harness) -> None:
    cust = await h.customer()
    pol = await one_step_policy(h, "letter", ["email"])
    inv, due_at = await invoice_due_in(h, cust, pol, 1)
    await sleep_until(h, due_at + timedelta(minutes=1))
    assert [(m.channel, m.status) for m in h.outbox(inv["id"])] == [
        ("letter", "blocked"),
        ("email", "sent"),
    ]


async def test_quiet_hours_hold_a_step_until_the_window_opens(h: Harness) -> None:
    cust = await h.customer(timezone="Europe/Berlin")
    pol = await one_step_policy(h, "email", [], contact_window="08:00-21:00")
    now = await h.env.get_current_time()
    # Due at 23:30 Berlin time on the day after tomorrow.
    day = now.date() + 2 * DAY
    due_local = datetime.combine(day, datetime.min.time()).replace(hour=23, minute=30)
    from zoneinfo import ZoneInfo

    due_at = due_local.replace(tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)
    inv = await h.invoice(
        cust["id"], policy_id=pol["id"], due_at=due_at.isoformat(), due_date=day.isoformat()
    )
    morning = (
        datetime.combine(day + DAY, datetime.min.time())
        .replace(hour=8, tzinfo=ZoneInfo("Europe/Berlin"))
        .astimezone(UTC)
    )
    assert datetime.fromisoformat(inv["next_action"]["at"]) == morning
    await sleep_until(h, due_at + timedelta(minutes=5))
    assert h.outbox(inv["id"]) == []  # 23:35 in Berlin: nothing goes out
    await sleep_until(h, morning + timedelta(minutes=1))
    assert [m.status for m in h.outbox(inv["id"])] == ["sent"]


async def test_steps_of_one_customer_on_one_day_go_out_as_one_message(h: Harness) -> None:
    cust = await h.customer(timezone="UTC")
    pol = await one_step_policy(h, "email", [], consolidate=True)
    now = await h.env.get_current_time()
    morning = datetime.combine(now.date() + 2 * DAY, datetime.min.time(), UTC) + timedelta(hours=9)
    first = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        due_at=morning.isoformat(),
        due_date=morning.date().isoformat(),
    )
    later = morning + timedelta(hours=5)
    second = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        amount_minor=80_000,
        due_at=later.isoformat(),
        due_date=later.date().isoformat(),
    )
    other_day = morning + DAY
    third = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        due_at=other_day.isoformat(),
        due_date=other_day.date().isoformat(),
    )
    await sleep_until(h, morning + timedelta(minutes=1))
    [main] = h.outbox(first["id"])
    [covered] = h.outbox(second["id"])
    assert (main.status, covered.status) == ("sent", "consolidated")
    assert second["number"] in main.body and "€800.00" in main.body
    assert h.outbox(third["id"]) == []  # another day: its own message
    await sleep_until(h, later + timedelta(minutes=1))
    assert [m.status for m in h.outbox(second["id"])] == ["consolidated"]  # no second email
    sent = [e for e in h.events(second["id"]) if e.kind == "reminder_sent"]
    assert len(sent) == 1 and sent[0].data["delivery"] == "consolidated"
    state = (await h.get(f"/v1/invoices/{second['id']}")).json()
    assert state["stage"] == "due"
