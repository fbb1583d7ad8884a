"""Determinism: histories of finished workflows replay against the current code.

``tests/histories/*.json`` are saved histories of earlier versions; a change to the workflow
that breaks them needs ``workflow.patched()``. Regenerate a history with
``python -m tests.test_replay <path>`` only when its shape is meant to change (the file name's
prefix, ``v1-`` to ``v4-``, picks the lifecycle).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.worker import workflow_runner as runner
from arflow import gateway
from arflow.codec import data_converter
from arflow.config import Settings
from arflow.invoices import service as services
from arflow.policies import service as policies
from models import Customer, Invoice, Payment, PaymentPlan
from tests.conftest import CODEC_KEYS, Harness, harness
from tests.test_api import eventually
from tests.webhook import signed_payment
from workflows import options
from workflows.invoice import InvoiceWorkflow
from workflows.schedule import default_due_at
from workflows.trust import PAYMENTS_FROM_ROWS, RECORDED_COMMANDS
from workflows.types import CancelRequest, InvoiceState, PaymentSignal

HISTORIES = Path(__file__).parent / "histories"
# The production converter with the codec on: histories saved before it (unencrypted) replay.
REPLAYER = Replayer(
    workflows=[InvoiceWorkflow],
    data_converter=data_converter(Settings(environment="test", codec_keys=CODEC_KEYS)),
)


async def run_lifecycle(
    env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> WorkflowHistory:
    """Partial payment, the whole default policy, escalation, then payment in full."""
    async with harness(env, engine, tmp_path) as h:
        cust = await h.customer(timezone="Europe/Berlin")
        inv = await h.invoice(cust["id"])
        await signed_payment(h, invoice_id=inv["id"], amount_minor=20_000)
        await env.sleep(timedelta(days=80))
        await signed_payment(h, invoice_id=inv["id"], amount_minor=100_000)
        handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, inv["workflow_id"])
        assert (await handle.result()).status == "paid"
        return await handle.fetch_history()


async def run_ladder_lifecycle(
    env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> WorkflowHistory:
    """Issue 7's paths: a ladder (final notice by letter and email, the agency), stage fees,
    monthly interest and compensation, a partial payment, a recall from the agency, the
    legal stage, then payment in full."""
    async with harness(env, engine, tmp_path) as h:
        pol = await h.policy(
            send_at="09:00",
            escalate_after="P20D",
            steps=[{"key": "late_7", "offset": "P7D", "template": "reminder_overdue"}],
            ladder=[
                {"key": "final", "kind": "notice", "channels": ["letter", "email"]},
                {"key": "agency", "kind": "agency", "wait": "P10D"},
                {"key": "legal", "kind": "legal", "wait": "P30D"},
            ],
            charges={
                "preset": "eu_b2b",
                "ecb_reference_rate_pct": "4.5",
                "stage_fees_minor": {"final": 1500},
            },
        )
        cust = await h.customer(address="Hauptstr. 1\n10115 Berlin")
        inv = await h.invoice(cust["id"], policy_id=pol["id"])
        await env.sleep(timedelta(days=45))
        paid = await signed_payment(h, invoice_id=inv["id"], amount_minor=20_000)
        assert paid.status_code == 200, paid.text
        await env.sleep(timedelta(days=35))  # at the agency since day 60 (due in 30)
        recalled = await h.post(
            f"/v1/invoices/{inv['id']}/agency/recall", {"reason": "handled in-house"}
        )
        assert recalled.status_code == 200, recalled.text
        await env.sleep(timedelta(days=40))  # legal 30 days after the recall
        await signed_payment(h, invoice_id=inv["id"], amount_minor=100_000)
        handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, inv["workflow_id"])
        assert (await handle.result()).status == "paid"
        kinds = [e.kind for e in h.events(inv["id"])]
        for kind in ("escalated", "agency_recalled", "legal_stage", "charge_posted"):
            assert kind in kinds, (kind, kinds)
        return await handle.fetch_history()


async def run_trust_lifecycle(
    env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> WorkflowHistory:
    """Issue 15's paths: payments loaded from their rows (one by a made-up id, refused),
    a promise recorded by the API and applied, a cancel sent past the API and refused, then
    payment in full."""
    async with harness(env, engine, tmp_path) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"])
        handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, inv["workflow_id"])
        await signed_payment(h, invoice_id=inv["id"], amount_minor=20_000)
        forged = PaymentSignal(payment_id=10**9, amount_minor=100_000, currency="EUR")
        await handle.signal(InvoiceWorkflow.payment_received, forged)
        today = (await env.get_current_time()).date()
        promised = await h.post(
            f"/v1/invoices/{inv['id']}/promise",
            {"promised_date": (today + timedelta(days=5)).isoformat(), "amount_minor": 100_000},
        )
        assert promised.status_code == 200, promised.text
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("cancel", CancelRequest("x", "mallory"))
        await env.sleep(timedelta(days=2))
        await signed_payment(h, invoice_id=inv["id"], amount_minor=100_000)
        assert (await handle.result()).status == "paid"
        kinds = [e.kind for e in h.events(inv["id"])]
        for kind in ("payment_signal_rejected", "command_rejected", "promise_kept", "paid"):
            assert kind in kinds, (kind, kinds)
        return await handle.fetch_history()


async def run_workspace_lifecycle(
    env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> WorkflowHistory:
    """Issue 17's workflow paths: a credit note, a corrected due date, the customer's new time
    zone (``customer_changed``), a payment leaving less than the policy's minimum balance (the
    small_balance hold), then the write-off."""
    async with harness(env, engine, tmp_path) as h:
        pol = await h.policy(
            send_at="09:00",
            contact_window="08:00-20:00",
            escalate_after="P40D",
            min_balance_minor=5_000,
            steps=[
                {"key": "late_1", "offset": "P1D", "template": "reminder_overdue"},
                {"key": "late_10", "offset": "P10D", "template": "reminder_overdue"},
            ],
        )
        cust = await h.customer(timezone="Europe/Berlin")
        inv = await h.invoice(cust["id"], policy_id=pol["id"])
        path = f"/v1/invoices/{inv['id']}"
        note = {"amount_minor": 20_000, "reason": "returned goods", "external_id": "CN-V4"}
        assert (await h.post(f"{path}/credit-notes", note)).status_code == 201
        due = (await env.get_current_time()).date() + timedelta(days=40)
        moved = await h.http.patch(
            path, json={"due_date": due.isoformat()}, headers=h.as_role("specialist")
        )
        assert moved.status_code == 200, moved.text
        zone = await h.http.patch(
            f"/v1/customers/{cust['id']}",
            json={"timezone": "America/New_York"},
            headers=h.as_role("specialist"),
        )
        assert zone.status_code == 200, zone.text
        await env.sleep(timedelta(days=43))  # late_1 goes out, 09:00 New York
        await signed_payment(h, invoice_id=inv["id"], amount_minor=96_000)
        await env.sleep(timedelta(days=20))  # late_10 and the escalation held: 4,000 left
        off = await h.post(f"{path}/write-off", {"reason": "too small to chase"}, "admin")
        assert off.status_code == 200, off.text
        handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, inv["workflow_id"])
        assert (await handle.result()).status == "written_off"
        kinds = [e.kind for e in h.events(inv["id"])]
        for kind in ("credit_note", "due_date_changed", "customer_zone_changed", "small_balance"):
            assert kind in kinds, (kind, kinds)
        assert [m.step_key for m in h.reminders(inv["id"])] == ["late_1"]
        return await handle.fetch_history()


LIFECYCLES = {
    "v1": run_lifecycle,
    "v2": run_ladder_lifecycle,
    "v3": run_trust_lifecycle,
    "v4": run_workspace_lifecycle,
}


async def test_a_fresh_history_replays(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    history = await run_lifecycle(ts_env, sqlite_engine, tmp_path)
    result = await REPLAYER.replay_workflow(history)
    assert result.replay_failure is None


async def test_a_fresh_ladder_history_replays(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    history = await run_ladder_lifecycle(ts_env, sqlite_engine, tmp_path)
    result = await REPLAYER.replay_workflow(history)
    assert result.replay_failure is None


async def test_a_fresh_trust_history_replays(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    history = await run_trust_lifecycle(ts_env, sqlite_engine, tmp_path)
    result = await REPLAYER.replay_workflow(history)
    assert result.replay_failure is None


async def test_a_fresh_workspace_history_replays(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    history = await run_workspace_lifecycle(ts_env, sqlite_engine, tmp_path)
    result = await REPLAYER.replay_workflow(history)
    assert result.replay_failure is None


def test_a_saved_history_takes_the_trusted_paths() -> None:
    """The v3 history was made with both patches on, so its replay runs the new code."""
    (path,) = HISTORIES.glob("v3-*.json")
    # Patch markers and local activities are markers whose details are base64 payloads.
    raw = path.read_text()
    found = re.findall(r'"data": ?"([A-Za-z0-9+/=]+)"', raw)
    text = "\n".join([raw, *(base64.b64decode(d).decode(errors="replace") for d in found)])
    for needle in (PAYMENTS_FROM_ROWS, RECORDED_COMMANDS, "load_payment", "check_command"):
        assert needle in text, needle


# The invoice's histories (v1-, v2-, ...); the other workflow types replay in test_replay_all.
@pytest.mark.parametrize("path", sorted(HISTORIES.glob("v*-*.json")), ids=lambda p: p.name)
async def test_saved_histories_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await REPLAYER.replay_workflow(history)
    assert result.replay_failure is None


async def test_carried_state_is_not_sent_again(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """What continue-as-new carries: steps already sent or skipped are not sent again."""
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        now = await ts_env.get_current_time()
        with Session(h.engine) as s:
            policy = policies.ensure_default_policy(s)
            customer = s.get(Customer, cust["id"])
            assert customer is not None
            row = Invoice(
                external_id="CARRIED-1",
                number="2026-100",
                currency="EUR",
                issued_on=now.date() - timedelta(days=40),
                due_date=now.date() - timedelta(days=10),
                due_at=default_due_at(now.date() - timedelta(days=10), "UTC"),
                customer_id=cust["id"],
                policy_id=policy.id or 0,
                amount_minor=100_000,
                balance_minor=70_000,
                request_hash="-",
            )
            s.add(row)
            s.commit()
            s.refresh(row)
            carried = services.workflow_input(row, customer, policy)
        carried.sent_steps = ["before_due", "first_late_day"]
        carried.skipped_steps = ["late_7"]
        run = await h.client.start_workflow(
            InvoiceWorkflow.run,
            carried,
            id=h.settings.workflow_id(row.id),
            task_queue=h.settings.task_queue,
        )
        await ts_env.sleep(timedelta(days=50))
        assert [m.step_key for m in h.outbox(row.id or 0)] == ["late_14", "final_notice"]
        state = await run.query(InvoiceWorkflow.state)
        assert (state.status, state.balance_minor) == ("escalated", 70_000)
        assert state.sent_steps == ["before_due", "first_late_day", "late_14", "final_notice"]


async def test_a_long_life_continues_as_new_with_its_state(
    dev_env: WorkflowEnvironment,
    sqlite_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Continue-as-new at the workflow's own bound (lowered here to 40 events; the server's
    suggestion comes at 4,096): a plan of six weekly instalments, paid in twelve partial
    payments with a note each time, spreads over several runs; each run starts from the state
    the last one carried (the balance, the payments applied, the plan and its instalments),
    every payment is applied once and the plan completes. On the dev server, as in production:
    the time-skipping server's clock stuck now and then when a run continued as new."""
    bound = 40
    monkeypatch.setattr(options, "CONTINUE_AS_NEW_AT_EVENTS", bound)
    # As production runs it, the workflows package passed through the sandbox: the sandbox's
    # own copy of it would not see the lowered bound.
    async with harness(dev_env, sqlite_engine, tmp_path, workflow_sandbox_passthrough=True) as h:
        pol = await h.policy(
            max_installments=6,
            escalate_after="P90D",
            steps=[{"key": "late_7", "offset": "P7D", "template": "reminder_overdue"}],
        )
        cust = await h.customer()
        inv = await h.invoice(cust["id"], policy_id=pol["id"], amount_minor=60_000)
        path, wid = f"/v1/invoices/{inv['id']}", inv["workflow_id"]
        today = (await dev_env.get_current_time()).date()
        weeks = [(today + timedelta(days=7 * (i + 1))).isoformat() for i in range(6)]
        plan = await h.post(
            f"{path}/payment-plan",
            {"installments": [{"due_date": d, "amount_minor": 10_000} for d in weeks]},
        )
        assert plan.status_code == 200, plan.text
        handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, wid)
        plan_id = (await handle.query(InvoiceWorkflow.state)).plan_id
        assert plan_id is not None
        runs_seen, paid = set(), 0
        for n in range(12):
            resp = await signed_payment(h, invoice_id=inv["id"], amount_minor=5_000)
            assert resp.status_code == 200, resp.text
            paid += 5_000
            note = await h.post(f"{path}/notes", {"text": f"call {n}: paid 50.00"})
            assert note.status_code == 201, note.text
            if paid == 60_000:
                break
            left = 60_000 - paid
            assert await eventually(partial(balance_is, h, inv["id"], left), timeout=30)
            # The current run, whichever it is, holds what the runs before it did.
            state = await current_state(handle)
            assert (state.status, state.balance_minor) == ("open", left)
            assert (state.hold, state.plan_id) == ("plan", plan_id)
            runs_seen.add((await handle.describe()).run_id)
        final = await handle.result()
        assert (final.status, final.balance_minor) == ("paid", 0)
        runs = await gateway.workflow_runs(h.client, wid)
        assert len(runs) >= 3 and len(runs_seen) >= 3, [len(e) for e in runs.values()]
        # Each run ended by continuing as new close to the bound (one pass of the loop after).
        lengths = sorted(len(events) for events in runs.values())
        assert lengths[-1] < bound + 40, lengths
        # Each run replays (the bound is still the lowered one, as when they ran).
        replayer = Replayer(workflows=[InvoiceWorkflow], workflow_runner=runner(h.settings))
        for events in runs.values():
            replayed = await replayer.replay_workflow(WorkflowHistory(wid, events))
            assert replayed.replay_failure is None
        kinds = [e.kind for e in h.events(inv["id"])]
        assert kinds.count("payment_applied") == 12 and kinds.count("note") == 12
        assert kinds.count("plan_completed") == 1 and kinds.count("paid") == 1
        with Session(h.engine) as s:
            payments = s.exec(select(Payment).where(Payment.invoice_id == inv["id"])).all()
            row = s.get(PaymentPlan, plan_id)
        assert len(payments) == 12 and sum(p.amount_minor for p in payments) == 60_000
        assert row is not None and row.status == "completed"
        assert [i["state"] for i in row.installments] == ["paid"] * 6


async def current_state(handle: WorkflowHandle[Any, InvoiceState]) -> InvoiceState:
    """The ``state`` query of the current run. The balance is written by an activity before
    the task that applied the payment completes; when that task continues as new, a query
    sent meanwhile can time out: asked again, the new run answers."""
    for _ in range(10):
        try:
            return await handle.query(InvoiceWorkflow.state, rpc_timeout=timedelta(seconds=5))
        except RPCError:
            await asyncio.sleep(0.5)
    return await handle.query(InvoiceWorkflow.state)


def balance_is(h: Harness, invoice_id: int, expected: int) -> bool:
    with Session(h.engine) as s:
        row = s.get(Invoice, invoice_id)
        return row is not None and row.balance_minor == expected


async def _save(path: Path) -> None:
    from tests.conftest import TEST_SERVER, _sqlite_engine

    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(TEST_SERVER))
    tmp = path.parent / ".tmp-history"
    tmp.mkdir(exist_ok=True)
    history = await LIFECYCLES[path.name.split("-")[0]](env, _sqlite_engine(tmp), tmp)
    path.write_text(history.to_json())
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(_save(Path(sys.argv[1])))
    sys.stdout.flush()
    os._exit(0)  # sdk-python #300
