"""End to end on the real Temporal dev server: API → workflow → reminders → webhook → paid."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from tests.conftest import harness
from tests.test_api import eventually
from tests.webhook import signed_payment

pytestmark = pytest.mark.devserver


async def test_seconds_policy_from_create_to_paid(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(dev_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer(timezone="America/New_York")
        pol = await h.policy(
            escalate_after="PT60S",
            steps=[
                {"key": "early", "offset": "-PT1S", "template": "reminder_before_due"},
                {"key": "late", "offset": "PT2S", "template": "reminder_overdue"},
                {"key": "later", "offset": "PT40S", "template": "reminder_overdue"},
            ],
        )
        due_at = datetime.now(UTC) + timedelta(seconds=2)
        inv = await h.invoice(
            cust["id"],
            policy_id=pol["id"],
            due_at=due_at.isoformat(),
            due_date=due_at.date().isoformat(),
        )

        def sent_steps() -> list[str]:
            return [e.data["step"] for e in h.events(inv["id"]) if e.kind == "reminder_sent"]

        assert await eventually(lambda: len(sent_steps()) >= 2, timeout=20)
        timeline = (await h.get(f"/v1/invoices/{inv['id']}/timeline")).json()
        assert [e["kind"] for e in timeline] == ["created", "reminder_sent", "reminder_sent"]
        messages = (await h.get(f"/v1/invoices/{inv['id']}/messages")).json()
        assert [m["step_key"] for m in messages] == ["early", "late"]
        assert messages[0]["recipient"] == "ap@acme.example.com"
        sent_at = datetime.fromisoformat(messages[1]["sent_at"])
        assert sent_at >= due_at + timedelta(seconds=2)  # not before its instant

        resp = await signed_payment(h, invoice_id=inv["id"], amount_minor=inv["amount_minor"])
        assert resp.json()["status"] == "accepted"
        handle = h.client.get_workflow_handle(inv["workflow_id"])
        await asyncio.wait_for(handle.result(), timeout=20)
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.COMPLETED
        got = (await h.get(f"/v1/invoices/{inv['id']}")).json()
        assert (got["status"], got["balance_minor"], got["next_action"]) == ("paid", 0, None)
        assert sent_steps() == ["early", "late"]  # "later" never went out
        timeline = (await h.get(f"/v1/invoices/{inv['id']}/timeline")).json()
        # the payment's confirmation to the customer may be recorded before or after
        kinds = [e["kind"] for e in timeline if not e["kind"].startswith("confirmation_")]
        assert kinds[-2:] == ["payment_applied", "paid"]


async def test_specialist_actions_on_the_dev_server(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Updates with validators on the real server: a double-clicked dispute (same
    Idempotency-Key) is applied once, a refused action answers 409, rejection resumes."""
    async with harness(dev_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"])
        path = f"/v1/invoices/{inv['id']}"
        headers = h.as_role("specialist") | {"Idempotency-Key": "click-1"}
        first, second = await asyncio.gather(
            h.http.post(f"{path}/disputes", json={"reason": "damaged"}, headers=headers),
            h.http.post(f"{path}/disputes", json={"reason": "damaged"}, headers=headers),
        )
        assert (first.status_code, second.status_code) == (200, 200)
        disputes = (await h.get(f"{path}/disputes")).json()
        assert len(disputes) == 1
        refused = await h.post(f"{path}/pause", {"reason": "x"})
        assert refused.status_code == 409
        assert "disputed" in refused.json()["error"]["message"]
        resolved = await h.post(
            f"{path}/disputes/{disputes[0]['id']}/resolve",
            {"outcome": "rejected", "note": "delivery note signed"},
        )
        assert resolved.status_code == 200
        assert resolved.json()["status"] == "open"
        paused = await h.post(f"{path}/pause", {"reason": "holiday"})
        assert paused.json()["hold"] == "paused"
        written = await h.post(f"{path}/write-off", {"reason": "bankrupt"}, role="admin")
        assert written.json()["status"] == "written_off"
        handle = h.client.get_workflow_handle(inv["workflow_id"])
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.COMPLETED
        timeline = (await h.get(f"{path}/timeline")).json()
        # the customer is told the dispute's outcome (a confirmation, not a collection event)
        kinds = [e["kind"] for e in timeline if not e["kind"].startswith("confirmation_")]
        assert kinds == ["created", "dispute_opened", "dispute_rejected", "paused", "written_off"]
