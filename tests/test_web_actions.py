"""The dashboard's action forms reach the invoice's workflow through the same domain calls as
the JSON API (arflow.invoices.actions): each form, once submitted, shows its confirmation and
leaves the same event on the timeline as the API's route would."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import API_KEYS, Harness, harness

CSRF_IN_PAGE = re.compile(r'"X-CSRF-Token": "([^"]+)"')
CSRF_IN_FORM = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


async def _login(h: Harness, role: str) -> dict[str, str]:
    form = await h.http.get("/app/login")
    token = CSRF_IN_FORM.search(form.text)
    assert token, form.text
    resp = await h.http.post(
        "/app/login", data={"api_key": API_KEYS[role], "csrf_token": token[1], "next": "/app"}
    )
    assert resp.status_code == 303, resp.text
    page = await h.http.get("/app/worklist")
    found = CSRF_IN_PAGE.search(page.text)
    assert found, page.text
    return {"X-CSRF-Token": found[1], "HX-Request": "true"}


def _kinds(h: Harness, invoice_id: int) -> list[str]:
    return [e.kind for e in h.events(invoice_id)]


async def test_each_form_sends_its_update_and_the_timeline_says_so(h: Harness) -> None:
    # Send-now keeps to the customer's contact hours: start at 10:00 UTC, whatever time of day
    # the shared time-skipping clock reached in the tests before.
    now = await h.env.get_current_time()
    ten = datetime.combine(now.date(), time(10), UTC)
    await h.env.sleep(ten - now if ten > now else ten + timedelta(days=1) - now)
    customer = await h.customer()
    invoice = await h.invoice(customer["id"])
    path = f"/app/invoices/{invoice['id']}"
    headers = await _login(h, "specialist")
    today = (await h.env.get_current_time()).date()

    steps = [
        ("send-now", {}, "Reminder sent.", "reminder_sent", None),
        ("pause", {"reason": "customer on holiday"}, "Reminders paused.", "paused", "paused"),
        ("resume", {"reason": "back"}, "Reminders resumed.", "resumed", None),
        (
            "promise",
            {"promised_date": (today + timedelta(days=5)).isoformat(), "amount": "1200.00"},
            "Promise recorded.",
            "promise_to_pay",
            "promise",
        ),
        (
            "plan",
            {
                "installments": "\n".join(
                    f"{(today + timedelta(days=d)).isoformat()} 600.00" for d in (10, 40)
                ),
                "note": "two halves",
            },
            "Payment plan agreed.",
            "plan_agreed",
            "plan",
        ),
    ]
    for action, form, done, kind, hold in steps:
        resp = await h.http.post(f"{path}/{action}", data=form, headers=headers)
        assert resp.status_code == 200, (action, resp.text)
        assert done in resp.text
        assert kind in _kinds(h, invoice["id"]), (action, _kinds(h, invoice["id"]))
        state = (await h.get(f"/v1/invoices/{invoice['id']}")).json()
        assert state["hold"] == hold, (action, state)

    note = await h.http.post(f"{path}/note", data={"text": "called, agreed"}, headers=headers)
    assert note.status_code == 200, note.text
    notes = [e.data for e in h.events(invoice["id"]) if e.kind == "note"]
    assert notes == [{"text": "called, agreed"}]
    # Every action carries who did it, as the API's routes record it.
    actors = {e.actor for e in h.events(invoice["id"]) if e.kind != "created"}
    assert all(a.startswith("specialist:") for a in actors), actors


async def test_credit_note_and_due_date_forms_amend_the_invoice(h: Harness) -> None:
    customer = await h.customer()
    invoice = await h.invoice(customer["id"], amount_minor=100_000)
    path = f"/app/invoices/{invoice['id']}"
    headers = await _login(h, "specialist")
    page = await h.http.get(path)
    assert 'id="action-credit-note"' in page.text and 'id="action-due-date"' in page.text

    form = {"amount": "250.00", "reason": "returned goods", "external_id": "CN-77"}
    resp = await h.http.post(f"{path}/credit-note", data=form, headers=headers)
    assert resp.status_code == 200, resp.text
    assert "Credit note applied." in resp.text
    assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["balance_minor"] == 75_000
    # Bad input: the error next to the form, nothing stored.
    bad = await h.http.post(
        f"{path}/credit-note",
        data=form | {"amount": "abc", "external_id": "CN-78"},
        headers=headers,
    )
    assert bad.status_code == 422
    assert 'class="error"' in bad.text and "amount" in bad.text
    too_much = await h.http.post(
        f"{path}/credit-note",
        data=form | {"amount": "900", "external_id": "CN-79"},
        headers=headers,
    )
    assert too_much.status_code == 422 and "open balance 75000" in too_much.text
    assert _kinds(h, invoice["id"]).count("credit_note") == 1

    due = (await h.env.get_current_time()).date() + timedelta(days=45)
    resp = await h.http.post(
        f"{path}/due-date", data={"due_date": due.isoformat(), "reason": "new PO"}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    assert "Due date changed." in resp.text
    assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["due_date"] == due.isoformat()
    empty = await h.http.post(f"{path}/due-date", data={"due_date": ""}, headers=headers)
    assert empty.status_code == 422 and 'class="error"' in empty.text


async def test_state_forms_resolve_cancel_assign_call_and_write_off(h: Harness) -> None:
    """The invoice page offers the actions its state calls for (resolve a dispute, cancel a
    plan, record a call, write off for admins) and each form does what the API's route does."""
    customer = await h.customer()
    pol = await h.policy(
        escalate_after="P30D", steps=[{"key": "call1", "offset": "PT0S", "channel": "call"}]
    )
    now = await h.env.get_current_time()
    invoice = await h.invoice(
        customer["id"], policy_id=pol["id"], due_date=(now.date() + timedelta(days=1)).isoformat()
    )
    path = f"/app/invoices/{invoice['id']}"
    headers = await _login(h, "specialist")
    page = (await h.http.get(path)).text
    for shown in ("assign",):
        assert f'id="action-{shown}"' in page
    for hidden in ("resolve-dispute", "cancel-plan", "call-outcome", "write-off", "recall"):
        assert f'id="action-{hidden}"' not in page, hidden

    # A dispute: the resolve form appears and resolves it.
    opened = await h.http.post(f"{path}/dispute", data={"reason": "wrong qty"}, headers=headers)
    assert opened.status_code == 200, opened.text
    page = (await h.http.get(path)).text
    assert 'id="action-resolve-dispute"' in page
    bad = await h.http.post(
        f"{path}/resolve-dispute",
        data={"dispute_id": "", "outcome": "rejected", "note": "x"},
        headers=headers,
    )
    assert bad.status_code == 422 and "dispute_id: choose one" in bad.text
    dispute_id = re.search(r'name="dispute_id" value="(\d+)"', page)
    assert dispute_id, page
    resolved = await h.http.post(
        f"{path}/resolve-dispute",
        data={"dispute_id": dispute_id[1], "outcome": "rejected", "note": "checked the POD"},
        headers=headers,
    )
    assert resolved.status_code == 200, resolved.text
    assert "Dispute resolved." in resolved.text
    assert "dispute_rejected" in _kinds(h, invoice["id"])

    # Assign, then a plan and its cancellation.
    assigned = await h.http.post(f"{path}/assign", data={"collector": "anna"}, headers=headers)
    assert assigned.status_code == 200 and "Collector assigned." in assigned.text
    assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["collector"] == "anna"
    today = (await h.env.get_current_time()).date()
    plan = {"installments": f"{(today + timedelta(days=10)).isoformat()} 1200.00"}
    assert (await h.http.post(f"{path}/plan", data=plan, headers=headers)).status_code == 200
    assert 'id="action-cancel-plan"' in (await h.http.get(path)).text
    cancelled = await h.http.post(
        f"{path}/cancel-plan", data={"reason": "customer asked"}, headers=headers
    )
    assert cancelled.status_code == 200 and "Payment plan cancelled." in cancelled.text
    assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["hold"] is None

    # The call step falls due: the call form appears with the customer's time; record it.
    await h.env.sleep(timedelta(days=2))
    page = (await h.http.get(path)).text
    assert 'id="action-call-outcome"' in page and "customer's time" in page
    task_id = re.search(r'name="task_id" required>\s*<option value="(\d+)"', page)
    assert task_id, page
    called = await h.http.post(
        f"{path}/call-outcome",
        data={"task_id": task_id[1], "outcome": "no_answer", "note": "rang twice"},
        headers=headers,
    )
    assert called.status_code == 200, called.text
    assert "Call recorded." in called.text and "call_outcome" in _kinds(h, invoice["id"])

    # Write-off: not offered to a specialist, refused if posted anyway; an admin's works.
    assert 'id="action-write-off"' not in (await h.http.get(path)).text
    refused = await h.http.post(f"{path}/write-off", data={"reason": "x"}, headers=headers)
    assert refused.status_code == 403
    assert (await h.http.post("/app/logout", headers=headers)).status_code in (200, 303)
    admin = await _login(h, "admin")
    assert 'id="action-write-off"' in (await h.http.get(path)).text
    empty = await h.http.post(f"{path}/write-off", data={"reason": ""}, headers=admin)
    assert empty.status_code == 422 and 'class="error"' in empty.text
    off = await h.http.post(f"{path}/write-off", data={"reason": "uncollectable"}, headers=admin)
    assert off.status_code == 200 and "Written off." in off.text
    assert (await h.get(f"/v1/invoices/{invoice['id']}")).json()["status"] == "written_off"
