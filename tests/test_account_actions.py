"""Account-level actions: pause and resume every open invoice of one customer at once (a job
on the time-skipping server with a real worker: the job's workflow and activity run for
real, and each invoice's workflow gets the same recorded update as a one-invoice pause)."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from models import CustomerEvent, InvoiceCommand
from tests.conftest import Harness
from tests.test_actions import Case
from tests.test_api import error_of
from tests.test_send_now import job_done


async def cases(h: Harness, n: int) -> tuple[int, list[Case]]:
    """``n`` open invoices of one new customer, due in 10 days."""
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=10)
    customer = await h.customer()
    made = []
    for _ in range(n):
        inv = await h.invoice(
            customer["id"], issued_on=now.date().isoformat(), due_date=due.isoformat()
        )
        made.append(Case(h, inv, now, due))
    return customer["id"], made


def customer_events(h: Harness, customer_id: int) -> list[CustomerEvent]:
    with Session(h.engine) as s:
        stmt = select(CustomerEvent).where(CustomerEvent.customer_id == customer_id)
        return list(s.exec(stmt.order_by(col(CustomerEvent.id))).all())


async def test_pausing_an_account_holds_every_open_invoice_until_it_resumes(h: Harness) -> None:
    customer_id, (a, b, disputed) = await cases(h, 3)
    assert (await disputed.act("/disputes", {"reason": "wrong price"})).status_code == 200
    other_id, (other,) = await cases(h, 1)

    resp = await h.post(f"/v1/customers/{customer_id}/pause", {"reason": "CFO on the phone"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["kind"] == "pause"
    job = await job_done(h, resp.json()["id"])
    assert job["counts"] == {"pending": 0, "applied": 2, "refused": 1, "failed": 0}
    items = {i["invoice_id"]: (i["status"], i["detail"]) for i in job["items"]}
    assert items[a.id] == items[b.id] == ("applied", "paused")
    assert items[disputed.id][0] == "refused"
    reason = "CFO on the phone"
    assert job["params"] == {"customer_id": customer_id, "reason": reason, "until": None}
    for c in (a, b):
        assert (await c.get())["hold"] == "paused"
        paused = [e for e in c.h.events(c.id) if e.kind == "paused"]
        assert len(paused) == 1 and paused[0].actor.startswith("specialist:")
    # The request is on the customer's timeline, with the job that carried it out.
    events = [(e.kind, e.data["job_id"]) for e in customer_events(h, customer_id)]
    assert ("account_paused", job["id"]) in events
    # Another customer's invoice is untouched, and nothing went out while paused.
    assert (await other.get())["hold"] is None
    await a.sleep_until(a.at(8))
    assert a.steps() == b.steps() == []
    assert other.steps() != []

    resp = await h.post(f"/v1/customers/{customer_id}/resume", None)
    assert resp.status_code == 202, resp.text
    job = await job_done(h, resp.json()["id"])
    assert job["counts"]["applied"] == 2 and job["counts"]["refused"] == 1
    assert (await a.get())["hold"] is None and (await b.get())["hold"] is None
    assert ("account_resumed", job["id"]) in [
        (e.kind, e.data["job_id"]) for e in customer_events(h, customer_id)
    ]
    # Each invoice's update went through the recorded-command path (workflows/trust.py).
    with Session(h.engine) as s:
        names = s.exec(select(InvoiceCommand.name).where(InvoiceCommand.invoice_id == a.id)).all()
    assert sorted(names) == ["pause", "resume"]
    assert other_id != customer_id


async def test_account_pause_until_a_date_and_bad_requests(h: Harness) -> None:
    customer_id, (c,) = await cases(h, 1)
    until = (c.due + timedelta(days=20)).isoformat()
    resp = await h.post(f"/v1/customers/{customer_id}/pause", {"reason": "audit", "until": until})
    assert resp.status_code == 202, resp.text
    job = await job_done(h, resp.json()["id"])
    assert job["counts"]["applied"] == 1
    assert (await c.get())["hold"] == "paused"

    for body, status, message in [
        ({}, 422, "reason"),
        ({"reason": ""}, 422, "reason"),
        ({"reason": "x", "extra": 1}, 422, "extra"),
        ({"reason": "x", "until": "not-a-date"}, 422, "until"),
    ]:
        bad = await h.post(f"/v1/customers/{customer_id}/pause", body)
        assert bad.status_code == status, bad.text
        assert message in bad.text
    missing = await h.post("/v1/customers/999999/pause", {"reason": "x"})
    assert missing.status_code == 404
    assert "customer 999999" in error_of(missing)
    viewer = await h.post(f"/v1/customers/{customer_id}/pause", {"reason": "x"}, role="viewer")
    assert viewer.status_code == 403
    # A customer with nothing open: 422, and no job is stored.
    empty = await h.customer()
    resp = await h.post(f"/v1/customers/{empty['id']}/resume", {"reason": "x"})
    assert resp.status_code == 422
    assert "no open invoice" in error_of(resp)
    assert customer_events(h, empty["id"]) == []
