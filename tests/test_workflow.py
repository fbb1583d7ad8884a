"""InvoiceWorkflow on the time-skipping server, driven through the API, with real activities."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import perf_counter
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from models import AgencyPlacement
from tests.conftest import harness
from tests.webhook import signed_payment
from workflows.invoice import InvoiceWorkflow

DEFAULT_STEPS = ["before_due", "first_late_day", "late_7", "late_14", "final_notice"]


async def test_full_default_policy_runs_to_agency(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer(timezone="Europe/Berlin")
        inv = await h.invoice(cust["id"])
        started = perf_counter()
        await ts_env.sleep(timedelta(days=80))
        elapsed = perf_counter() - started

        sent = h.outbox(inv["id"])
        assert [m.step_key for m in sent] == DEFAULT_STEPS
        assert all(m.status == "sent" for m in sent)
        assert "Final notice" in sent[-1].subject
        got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
        assert got["status"] == "escalated"
        assert got["next_action"] is None
        with Session(sqlite_engine) as s:
            placement = s.exec(select(AgencyPlacement)).one()
        assert placement.invoice_id == inv["id"]
        assert placement.amount_minor == 120_000
        assert Path(placement.reference).exists()
        kinds = [e.kind for e in h.events(inv["id"])]
        assert kinds == ["created"] + ["reminder_sent"] * 5 + ["escalated"]
        print(f"45-day default policy ran in {elapsed:.3f}s of wall time")


def _next_dst_change(zone: ZoneInfo, after: date) -> date:
    """The first day after ``after`` whose 12:00 local offset differs from the day before."""
    day = after
    while True:
        nxt = day + timedelta(days=1)
        noon = datetime.combine(day, time(12), zone).utcoffset()
        if datetime.combine(nxt, time(12), zone).utcoffset() != noon:
            return nxt
        day = nxt


@pytest.mark.parametrize("tz", ["Pacific/Tongatapu", "Pacific/Honolulu", "Europe/Berlin"])
async def test_reminders_go_out_at_nine_local_on_the_right_day(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path, tz: str
) -> None:
    """UTC+13, UTC-10, and Berlin across a DST change: each reminder waits for 09:00 local on
    the right local day (so the UTC hour of Berlin's two reminders differs)."""
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        zone = ZoneInfo(tz)
        now = await ts_env.get_current_time()
        local_today = now.astimezone(zone).date()
        due = local_today + timedelta(days=10)
        if tz == "Europe/Berlin":  # the pre-due reminder before the change, the next after it
            due = _next_dst_change(zone, local_today + timedelta(days=5))
        cust = await h.customer(timezone=tz)
        inv = await h.invoice(cust["id"], due_date=due.isoformat())
        first_late = datetime.combine(due + timedelta(days=1), time(9), zone)
        # one minute before 09:00 local on the first late day: only the pre-due reminder
        await ts_env.sleep(first_late.astimezone(UTC) - now - timedelta(minutes=1))
        assert [m.step_key for m in h.outbox(inv["id"])] == ["before_due"]
        await ts_env.sleep(timedelta(minutes=2))
        assert [m.step_key for m in h.outbox(inv["id"])] == ["before_due", "first_late_day"]
        sent = [e for e in h.events(inv["id"]) if e.kind == "reminder_sent"]
        scheduled = [datetime.fromisoformat(e.data["scheduled_for"]) for e in sent]
        assert [s.astimezone(zone).time() for s in scheduled] == [time(9), time(9)]
        assert scheduled[0].astimezone(zone).date() == due - timedelta(days=3)
        assert scheduled[1].astimezone(zone).date() == due + timedelta(days=1)
        if tz == "Europe/Berlin":
            assert scheduled[0].astimezone(UTC).hour != scheduled[1].astimezone(UTC).hour


async def test_payment_before_due_sends_no_overdue_reminders(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"])
        await ts_env.sleep(timedelta(days=5))
        resp = await signed_payment(h, invoice_id=inv["id"], amount_minor=120_000)
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "accepted"
        handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, inv["workflow_id"])
        result = await handle.result()
        assert result.status == "paid"
        await ts_env.sleep(timedelta(days=60))
        assert h.reminders(inv["id"]) == []  # only the payment's confirmation
        got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
        assert (got["status"], got["balance_minor"]) == ("paid", 0)
        assert got["closed_at"] is not None


async def test_partial_payment_keeps_dunning_on_the_remainder(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"])
        resp = await signed_payment(h, invoice_id=inv["id"], amount_minor=20_000)
        assert resp.json()["status"] == "accepted"
        await ts_env.sleep(timedelta(days=70))
        sent = h.reminders(inv["id"])
        assert [m.step_key for m in sent] == DEFAULT_STEPS
        assert "€1,000.00 of €1,200.00" in sent[1].body  # the remainder, not the original
        got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
        assert (got["status"], got["balance_minor"]) == ("open", 100_000)
        applied = [e for e in h.events(inv["id"]) if e.kind == "payment_applied"]
        assert applied[0].data["balance_after"] == 100_000


async def test_escalation_waits_for_the_configured_timeout(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        pol = await h.policy(
            send_at="09:00",
            escalate_after="P20D",
            steps=[{"key": "late", "offset": "P1D", "template": "reminder_overdue"}],
        )
        now = await ts_env.get_current_time()
        due = now.date() + timedelta(days=1)
        inv = await h.invoice(cust["id"], due_date=due.isoformat(), policy_id=pol["id"])
        escalate_at = datetime.combine(due + timedelta(days=20), datetime.min.time(), UTC).replace(
            hour=9
        )
        await ts_env.sleep(escalate_at - now - timedelta(hours=1))
        assert (await h.get(f"/v1/invoices/{inv['id']}")).json()["status"] == "open"
        await ts_env.sleep(timedelta(hours=2))
        got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
        assert got["status"] == "escalated"
        # a payment after escalation still closes the invoice
        resp = await signed_payment(h, invoice_id=inv["id"], amount_minor=120_000)
        assert resp.json()["status"] == "accepted"
        result = await h.client.get_workflow_handle_for(
            InvoiceWorkflow.run, inv["workflow_id"]
        ).result()
        assert result.status == "paid"


async def test_overdue_import_sends_only_the_latest_step(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        now = await ts_env.get_current_time()
        due = now.date() - timedelta(days=10)  # first_late_day and late_7 have passed
        inv = await h.invoice(
            cust["id"],
            issued_on=(due - timedelta(days=30)).isoformat(),
            due_date=due.isoformat(),
        )
        await ts_env.sleep(timedelta(hours=1))
        assert [m.step_key for m in h.outbox(inv["id"])] == ["late_7"]
        skipped = sorted(
            e.data["step"] for e in h.events(inv["id"]) if e.kind == "reminder_skipped"
        )
        assert skipped == ["before_due", "first_late_day"]
        got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
        assert got["next_action"]["step_key"] == "late_14"
        await ts_env.sleep(timedelta(days=5))
        assert [m.step_key for m in h.outbox(inv["id"])] == ["late_7", "late_14"]


async def test_cancel_stops_the_workflow(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"])
        resp = await h.post(f"/v1/invoices/{inv['id']}/cancel", {"reason": "issued in error"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "cancelled"
        result = await h.client.get_workflow_handle_for(
            InvoiceWorkflow.run, inv["workflow_id"]
        ).result()
        assert result.status == "cancelled"
        again = await h.post(f"/v1/invoices/{inv['id']}/cancel", {"reason": "twice"})
        assert again.status_code == 409
        assert "already cancelled" in again.json()["error"]["message"]
        ev = [e for e in h.events(inv["id"]) if e.kind == "cancelled"]
        assert ev[0].actor.startswith("specialist:") and ev[0].data["reason"] == "issued in error"
        await ts_env.sleep(timedelta(days=60))
        assert h.reminders(inv["id"]) == []  # only the payment's confirmation
