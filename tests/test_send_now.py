"""One click: send the next reminder now, for one invoice or as a bulk job (time-skipping
server, real worker: the job's workflow and activity run for real)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any, cast

import httpx
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.app import create_app
from models import Job
from tests.conftest import Harness
from tests.test_actions import new_case
from tests.test_api import error_of


async def daytime(h: Harness) -> None:
    """On to the next 10:00 UTC: send-now respects the default contact window (08-21 local)."""
    now = await h.env.get_current_time()
    ten = datetime.combine(now.date(), time(10), UTC)
    await h.env.sleep((ten if ten > now else ten + timedelta(days=1)) - now)


async def test_send_now_sends_the_next_step_once_and_says_who(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    await daytime(h)
    first = await c.act("/send-now")
    assert first.status_code == 200, first.text
    assert first.json()["stage"] == "before_due"
    assert c.steps() == ["before_due"]
    sent = [e for e in h.events(c.id) if e.kind == "reminder_sent"]
    assert sent[0].actor.startswith("specialist:")
    assert sent[0].data["sent_early"] is True
    # Not due yet, and the next step is an overdue reminder: refused, nothing sent.
    early = await c.act("/send-now")
    assert early.status_code == 409
    assert "not due yet" in error_of(early)
    # At its own time the step already sent is not sent again; the loop goes on.
    await c.sleep_until(c.at(1, hour=10))
    assert c.steps() == ["before_due", "first_late_day"]
    again = await c.act("/send-now", **{"Idempotency-Key": "click-1"})
    twice = await c.act("/send-now", **{"Idempotency-Key": "click-1"})
    assert (again.status_code, twice.status_code) == (200, 200)
    assert c.steps() == ["before_due", "first_late_day", "late_7"]  # a double click sends once
    await c.sleep_until(c.at(7, hour=10))
    assert c.steps() == ["before_due", "first_late_day", "late_7"]


async def test_send_now_is_refused_on_hold_or_dispute(h: Harness) -> None:
    c = await new_case(h)
    assert (await c.act("/pause", {"reason": "talking"})).status_code == 200
    resp = await c.act("/send-now")
    assert resp.status_code == 409
    assert error_of(resp) == "reminders are on hold (paused)"
    assert c.steps() == []


async def job_done(h: Harness, job_id: int) -> dict[str, Any]:
    for _ in range(200):
        job = (await h.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] == "done":
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def test_bulk_send_now_job_reports_each_invoice(h: Harness) -> None:
    a = await new_case(h, due_in=10)
    b = await new_case(h, due_in=10)
    paused = await new_case(h, due_in=10)
    assert (await paused.act("/pause", {"reason": "x"})).status_code == 200
    await daytime(h)
    resp = await h.post("/v1/reminders/send-now", {"invoice_ids": [a.id, b.id, paused.id]})
    assert resp.status_code == 202, resp.text
    job = await job_done(h, resp.json()["id"])
    assert job["total"] == 3
    assert job["counts"] == {"pending": 0, "sent": 2, "refused": 1, "failed": 0}
    details = {i["invoice_id"]: (i["status"], i["detail"]) for i in job["items"]}
    assert details == {
        a.id: ("sent", "before_due"),
        b.id: ("sent", "before_due"),
        paused.id: ("refused", "reminders are on hold (paused)"),
    }
    assert a.steps() == ["before_due"] and paused.steps() == []


async def test_bulk_send_now_by_filter_and_validation(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    customer_id = c.inv["customer_id"]
    resp = await h.post("/v1/reminders/send-now", {"filter": {"customer_id": customer_id}})
    assert resp.status_code == 202, resp.text
    job = await job_done(h, resp.json()["id"])
    assert [i["invoice_id"] for i in job["items"]] == [c.id]
    assert job["params"] == {"filter": {"status": "open", "customer_id": customer_id}}
    for body, message in [
        ({}, "give exactly one of invoice_ids or filter"),
        ({"invoice_ids": []}, "invoice_ids must not be empty"),
        ({"invoice_ids": [999_999]}, "unknown invoices [999999]"),
        ({"filter": {"segment": "nobody"}}, "the filter selects no invoice"),
    ]:
        bad = await h.post("/v1/reminders/send-now", body)
        assert bad.status_code == 422, bad.text
        assert message in bad.text
    assert (await h.get("/v1/jobs/424242")).status_code == 404
    viewer = await h.post("/v1/reminders/send-now", {"invoice_ids": [c.id]}, role="viewer")
    assert viewer.status_code == 403


async def test_send_now_outside_the_contact_window_waits_for_it(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    now = await h.env.get_current_time()
    night = datetime.combine(now.date() + timedelta(days=1), time(23), UTC)
    await h.env.sleep(night - now)
    resp = await c.act("/send-now")
    assert resp.status_code == 409
    morning = datetime.combine(night.date() + timedelta(days=1), time(8), UTC)
    assert error_of(resp) == (
        f"outside the customer's contact hours: step before_due goes out at {morning.isoformat()}"
    )
    assert c.steps() == []
    await h.env.sleep(morning - night + timedelta(minutes=1))
    assert c.steps() == ["before_due"]


class _Unreachable:
    """A Temporal client whose server does not answer."""

    async def start_workflow(self, *args: Any, **kwargs: Any) -> Any:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")


async def test_bulk_send_now_when_temporal_does_not_answer(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    app = create_app(h.settings, engine=h.engine, temporal=cast(Client, _Unreachable()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        resp = await http.post(
            "/v1/reminders/send-now", json={"invoice_ids": [c.id]}, headers=h.as_role("specialist")
        )
    assert resp.status_code == 503, resp.text
    assert resp.json() == {
        "error": {"code": "workflow_unavailable", "message": "Temporal did not answer; retry"}
    }
    with Session(h.engine) as session:
        job = session.exec(select(Job).order_by(col(Job.id).desc())).first()
    assert job is not None and job.status == "failed" and job.finished_at is not None
    assert c.steps() == []
