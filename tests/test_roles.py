"""Roles on the actions that make a debt vanish (issue 15, "role bypass"): a specialist may
cancel only before any reminder went out; a specialist's dispute credit above the policy's
threshold waits for an admin or a second specialist (four eyes); raising a credit limit is an
admin's. Time-skipping server, real worker, SQLite."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from models import CreditApproval, Invoice, Task
from tests.conftest import API_KEYS, Harness, harness
from tests.test_actions import Case, new_case
from tests.test_api import eventually
from tests.webhook import signed_payment

SECOND_SPECIALIST = "test-specialist-2"
KEYS = ",".join([*(f"{k}:{r}" for r, k in API_KEYS.items()), f"{SECOND_SPECIALIST}:specialist"])


def actor(role: str, key: str) -> str:
    return f"{role}:{hashlib.sha256(key.encode()).hexdigest()[:8]}"


SPECIALIST = actor("specialist", API_KEYS["specialist"])
OTHER_SPECIALIST = actor("specialist", SECOND_SPECIALIST)
ADMIN = actor("admin", API_KEYS["admin"])


@pytest.fixture
async def h(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> AsyncIterator[Harness]:
    async with harness(ts_env, sqlite_engine, tmp_path, api_keys=KEYS) as h:
        yield h


async def as_second(h: Harness, path: str, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {SECOND_SPECIALIST}"}
    return await h.http.post(path, json=body, headers=headers)


def status_of(h: Harness, invoice_id: int) -> str:
    with Session(h.engine) as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None
        return invoice.status


def forbidden(resp: httpx.Response) -> str:
    assert resp.status_code == 403, resp.text
    error = resp.json()["error"]
    assert error["code"] == "forbidden"
    return str(error["message"])


async def reminded_case(h: Harness) -> Case:
    """An invoice whose first reminder (before_due, 3 days before due at 09:00) went out."""
    c = await new_case(h)
    await c.sleep_until(c.at(-3) + timedelta(minutes=5))
    assert c.steps() == ["before_due"]
    return c


# -- cancel ----------------------------------------------------------------------------------


async def test_a_specialist_cancels_only_before_any_reminder(h: Harness) -> None:
    fresh = await new_case(h, due_in=30)
    reminded = await reminded_case(h)

    refused = await reminded.act("/cancel", {"reason": "customer asked"})
    assert "reminder" in forbidden(refused) and "admin" in forbidden(refused)
    assert (await reminded.get())["status"] == "open"
    assert "cancelled" not in reminded.kinds()

    assert fresh.steps() == []
    resp = await fresh.act("/cancel", {"reason": "issued in error"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled"


async def test_an_admin_cancels_after_a_reminder(h: Harness) -> None:
    c = await reminded_case(h)
    forbidden(await c.act("/cancel", {"reason": "goodwill"}))
    resp = await c.act("/cancel", {"reason": "goodwill"}, role="admin")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled"
    cancelled = [e for e in h.events(c.id) if e.kind == "cancelled"]
    assert [e.actor for e in cancelled] == [ADMIN]


# -- dispute credits: four eyes --------------------------------------------------------------


DEFAULT = "default"


async def disputed_case(h: Harness, threshold: int | str | None = DEFAULT) -> tuple[Case, int]:
    """An invoice of 1,200.00 with an open dispute, under a policy whose credits above
    ``threshold`` need approval (the default policy: every credit); (case, dispute id)."""
    chosen: dict[str, Any] = {}
    if threshold != DEFAULT:
        policy = await h.policy(
            escalate_after="P45D",
            steps=[{"key": "late", "offset": "P1D"}],
            dispute_credit_approval_minor=threshold,
        )
        chosen["policy_id"] = policy["id"]
    now = await h.env.get_current_time()
    cust = await h.customer()
    inv = await h.invoice(cust["id"], amount_minor=120_000, **chosen)
    c = Case(h, inv, now, now.date() + timedelta(days=30))
    resp = await c.act("/disputes", {"reason": "two items damaged"})
    assert resp.status_code == 200, resp.text
    return c, (await c.get("/disputes"))[0]["id"]


CREDIT = {"outcome": "upheld", "credit_minor": 50_000, "note": "damaged in transit"}


async def ask_credit(c: Case, dispute_id: int) -> dict[str, Any]:
    resp = await c.act(f"/disputes/{dispute_id}/resolve", CREDIT)
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_a_credit_above_the_threshold_waits_for_approval(h: Harness) -> None:
    c, dispute_id = await disputed_case(h)
    pending = await ask_credit(c, dispute_id)
    assert pending["status"] == "pending"
    assert (pending["dispute_id"], pending["credit_minor"]) == (dispute_id, 50_000)
    assert pending["requested_by"] == SPECIALIST and pending["decided_by"] is None
    # nothing applied: the balance, the dispute and the workflow's state are as they were
    invoice = await c.get()
    assert (invoice["status"], invoice["balance_minor"]) == ("disputed", 120_000)
    assert (await c.get("/disputes"))[0]["status"] == "open"
    assert (await c.state()).balance_minor == 120_000
    # a worklist task, an event, and the same request again is the same approval
    tasks = (await h.get("/v1/worklist", kind="credit_approval")).json()
    assert [(t["invoice_id"], t["data"]["approval_id"]) for t in tasks] == [(c.id, pending["id"])]
    requested = [e for e in h.events(c.id) if e.kind == "credit_approval_requested"]
    assert [(e.actor, e.data["credit_minor"]) for e in requested] == [(SPECIALIST, 50_000)]
    assert (await ask_credit(c, dispute_id))["id"] == pending["id"]
    listed = (await h.get("/v1/approvals", invoice_id=c.id)).json()
    assert [a["id"] for a in listed] == [pending["id"]]
    assert (await h.get("/v1/approvals", status="approved")).json() == []
    # while it waits, the dispute cannot be resolved another way
    other = await c.act(f"/disputes/{dispute_id}/resolve", {"outcome": "rejected", "note": "x"})
    assert other.status_code == 409, other.text


async def test_the_requester_cannot_approve_their_own_credit(h: Harness) -> None:
    c, dispute_id = await disputed_case(h)
    pending = await ask_credit(c, dispute_id)
    resp = await h.post(f"/v1/approvals/{pending['id']}/approve", None)
    assert "requester" in forbidden(resp)
    assert (await c.get())["balance_minor"] == 120_000
    assert (await h.get(f"/v1/approvals/{pending['id']}")).json()["status"] == "pending"


async def test_a_second_specialist_approves_and_the_credit_is_applied(h: Harness) -> None:
    c, dispute_id = await disputed_case(h)
    pending = await ask_credit(c, dispute_id)
    resp = await as_second(h, f"/v1/approvals/{pending['id']}/approve")
    assert resp.status_code == 200, resp.text
    approved = resp.json()
    assert (approved["status"], approved["decided_by"]) == ("approved", OTHER_SPECIALIST)
    invoice = await c.get()
    assert (invoice["status"], invoice["balance_minor"]) == ("open", 70_000)
    dispute = (await c.get("/disputes"))[0]
    assert (dispute["status"], dispute["credit_minor"]) == ("upheld", 50_000)
    # both actors on the timeline: the workflow's resolution and the approval itself
    upheld = next(e for e in h.events(c.id) if e.kind == "dispute_upheld")
    assert (upheld.actor, upheld.data["approved_by"]) == (SPECIALIST, OTHER_SPECIALIST)
    decided = next(e for e in h.events(c.id) if e.kind == "credit_approval_approved")
    assert decided.actor == OTHER_SPECIALIST
    assert (decided.data["requested_by"], decided.data["decided_by"]) == (
        SPECIALIST,
        OTHER_SPECIALIST,
    )
    with Session(h.engine) as s:
        task = s.exec(select(Task).where(Task.kind == "credit_approval")).one()
    assert task.status == "done"
    again = await h.post(f"/v1/approvals/{pending['id']}/approve", None, role="admin")
    assert again.status_code == 409, again.text
    assert (await c.get())["balance_minor"] == 70_000


async def test_a_declined_credit_is_recorded_and_nothing_is_credited(h: Harness) -> None:
    c, dispute_id = await disputed_case(h, threshold=10_000)
    pending = await ask_credit(c, dispute_id)
    resp = await h.post(
        f"/v1/approvals/{pending['id']}/decline", {"note": "photos show no damage"}, role="admin"
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["decided_by"]) == ("declined", ADMIN)
    assert (await c.get())["balance_minor"] == 120_000
    declined = next(e for e in h.events(c.id) if e.kind == "credit_approval_declined")
    assert (declined.data["requested_by"], declined.data["decided_by"]) == (SPECIALIST, ADMIN)
    assert (await h.get("/v1/worklist", kind="credit_approval")).json() == []
    # the dispute is still open: resolved another way now
    resp = await c.act(f"/disputes/{dispute_id}/resolve", {"outcome": "rejected", "note": "ok"})
    assert resp.status_code == 200, resp.text


async def test_an_approval_the_workflow_refuses_stays_pending(h: Harness) -> None:
    """The invoice was paid in full while the credit waited: the workflow refuses it, nothing
    is credited and the approval can still be declined."""
    c, dispute_id = await disputed_case(h)
    pending = await ask_credit(c, dispute_id)
    paid = await signed_payment(h, invoice_id=c.id, amount_minor=120_000)
    assert paid.status_code == 200, paid.text
    assert await eventually(lambda: status_of(h, c.id) == "paid")
    refused = await as_second(h, f"/v1/approvals/{pending['id']}/approve")
    assert refused.status_code == 409, refused.text
    assert (await h.get(f"/v1/approvals/{pending['id']}")).json()["status"] == "pending"
    assert (await c.get())["balance_minor"] == 0
    assert "credit_approval_approved" not in c.kinds()
    resp = await as_second(h, f"/v1/approvals/{pending['id']}/decline", {"note": "paid"})
    assert resp.status_code == 200, resp.text


async def test_admin_credits_directly_and_small_credits_need_nobody(h: Harness) -> None:
    c, dispute_id = await disputed_case(h, threshold=10_000)
    small = {"outcome": "upheld", "credit_minor": 10_000, "note": "one item"}
    resp = await c.act(f"/disputes/{dispute_id}/resolve", small)  # at the threshold: allowed
    assert resp.status_code == 200, resp.text
    assert resp.json()["balance_minor"] == 110_000
    await c.act("/disputes", {"reason": "the rest too"})
    second = (await c.get("/disputes"))[-1]["id"]
    resp = await c.act(f"/disputes/{second}/resolve", CREDIT, role="admin")
    assert resp.status_code == 200, resp.text
    assert resp.json()["balance_minor"] == 60_000
    with Session(h.engine) as s:
        assert s.exec(select(CreditApproval)).all() == []


async def test_no_threshold_and_the_default_threshold(h: Harness) -> None:
    c, dispute_id = await disputed_case(h, threshold=None)  # null: no approval needed
    resp = await c.act(f"/disputes/{dispute_id}/resolve", CREDIT)
    assert resp.status_code == 200, resp.text
    default = await h.policy(escalate_after="P45D", steps=[{"key": "late", "offset": "P1D"}])
    assert default["dispute_credit_approval_minor"] == 0  # every credit needs approval
    for bad in (-1, 10**16, "lots"):
        resp = await h.post(
            "/v1/policies",
            {
                "name": "bad",
                "escalate_after": "P45D",
                "steps": [{"key": "late", "offset": "P1D"}],
                "dispute_credit_approval_minor": bad,
            },
            role="admin",
        )
        assert resp.status_code == 422, resp.text
        assert "dispute_credit_approval_minor" in resp.json()["error"]["message"]


# -- credit limits ---------------------------------------------------------------------------


async def test_raising_a_credit_limit_is_an_admins(h: Harness) -> None:
    cust = await h.customer()
    path = f"/v1/customers/{cust['id']}/profile"

    async def put(body: dict[str, Any], role: str = "specialist") -> httpx.Response:
        return await h.http.put(path, json=body, headers=h.as_role(role))

    first = await put({"credit_limit_minor": 100_000, "credit_currency": "EUR"})
    assert first.status_code == 200, first.text  # none before: setting one restricts
    lower = await put({"credit_limit_minor": 50_000, "credit_currency": "EUR"})
    assert lower.status_code == 200, lower.text
    for raise_ in (
        {"credit_limit_minor": 60_000, "credit_currency": "EUR"},
        {"credit_limit_minor": 50_000, "credit_currency": "USD"},  # not comparable
        {"credit_limit_minor": None},  # no limit at all
    ):
        assert "admin" in forbidden(await put(raise_))
    profile = (await h.get(path)).json()["profile"]
    assert (profile["credit_limit_minor"], profile["credit_currency"]) == (50_000, "EUR")
    raised = await put({"credit_limit_minor": 80_000, "credit_currency": "EUR"}, role="admin")
    assert raised.status_code == 200, raised.text
    assert raised.json()["profile"]["credit_limit_minor"] == 80_000
    events = (await h.get(f"/v1/customers/{cust['id']}/events", kind="credit_limit_raised")).json()
    assert [(e["actor"], e["data"]["from_minor"], e["data"]["to_minor"]) for e in events] == [
        (ADMIN, 50_000, 80_000)
    ]
    assert (events[0]["data"]["requested_by"], events[0]["data"]["approved_by"]) == (ADMIN, ADMIN)


# -- the dashboard -----------------------------------------------------------------------------


async def test_the_invoice_page_shows_a_pending_credit(h: Harness) -> None:
    """The dashboard shows the pending credit, and offers a specialist no form that would
    cancel, write off or credit around these rules."""
    c, dispute_id = await disputed_case(h)
    pending = await ask_credit(c, dispute_id)
    form = await h.http.get("/app/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    data = {"api_key": API_KEYS["specialist"], "csrf_token": token[1], "next": "/app"}
    assert (await h.http.post("/app/login", data=data)).status_code == 303
    page = await h.http.get(f"/app/invoices/{c.id}")
    assert page.status_code == 200
    assert f'id="approval-{pending["id"]}"' in page.text
    assert "waits for approval" in page.text
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert csrf, page.text
    headers = {"X-CSRF-Token": csrf[1], "HX-Request": "true"}
    for action in ("cancel", "resolve", "approve"):
        resp = await h.http.post(f"/app/invoices/{c.id}/{action}", data={}, headers=headers)
        assert resp.status_code == 404, (action, resp.text)
    # Write-off is an admin's: not offered to a specialist, and refused if posted anyway.
    assert 'id="action-write-off"' not in page.text
    off = await h.http.post(
        f"/app/invoices/{c.id}/write-off", data={"reason": "x"}, headers=headers
    )
    assert off.status_code == 403, off.text
    # The dispute's resolve form goes through the same four-eyes rule as the API: while a
    # credit waits for approval, another resolution is refused.
    again = await h.http.post(
        f"/app/invoices/{c.id}/resolve-dispute",
        data={"dispute_id": str(dispute_id), "outcome": "upheld", "credit": "100.00", "note": "x"},
        headers=headers,
    )
    assert again.status_code == 409, again.text
    invoice = await c.get()
    assert (invoice["status"], invoice["balance_minor"]) == ("disputed", 120_000)
