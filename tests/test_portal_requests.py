"""What a customer asks for in the portal (arflow.portal.requests): a dispute with
attachments, a payment plan inside or outside the policy's bounds (accepted or declined by the
owner), a promise; the confirmation emails; on SQLite and PostgreSQL, with the real worker on
the time-skipping server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from arflow import gateway
from arflow.errors import Conflict, Invalid, NotFound
from arflow.portal import requests
from models import (
    ContactBlock,
    DisputeAttachment,
    Invoice,
    OutboxMessage,
    PaymentPlan,
    PlanProposal,
    Promise,
    Task,
)
from tests.conftest import API_KEYS, Harness, harness
from tests.test_api import eventually
from workflows.confirmations import ConfirmationInput
from workflows.invoice import InvoiceWorkflow

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 20
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 20
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 40
CSRF_IN_FORM = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def ph(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    """The usual harness on both databases."""
    async with harness(ts_env, engine, tmp_path, session_secret="test-session-secret") as h:
        yield h


async def new_invoice(h: Harness, amount: int = 120_000, **customer: Any) -> tuple[int, int]:
    cust = await h.customer(**customer)
    inv = await h.invoice(cust["id"], amount_minor=amount)
    return int(cust["id"]), int(inv["id"])


def today() -> date:
    from models.types import utcnow

    return utcnow().date()


def outbox_row(h: Harness, invoice_id: int, step_key: str) -> OutboxMessage | None:
    return next((m for m in h.outbox(invoice_id) if m.step_key == step_key), None)


async def sent(h: Harness, invoice_id: int, step_key: str) -> OutboxMessage:
    def done() -> OutboxMessage | None:
        row = outbox_row(h, invoice_id, step_key)
        return row if row is not None and row.status in ("sent", "blocked") else None

    row = await eventually(done)
    assert row is not None, [(m.step_key, m.status) for m in h.outbox(invoice_id)]
    return row


async def state(h: Harness, invoice_id: int) -> Any:
    handle = h.client.get_workflow_handle(h.settings.workflow_id(invoice_id))
    return await handle.query(InvoiceWorkflow.state)


# -- disputes ---------------------------------------------------------------------------------


async def test_dispute_with_a_pdf_and_a_png_is_opened_stored_and_readable(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    with Session(h.engine) as s:
        invoice = await requests.customer_dispute(
            s,
            h.client,
            h.settings,
            cust,
            inv,
            "damaged",
            "the crate arrived broken",
            None,
            [("../../etc/photo of crate.png", PNG), ("delivery note.pdf", PDF)],
        )
        assert invoice.status == "disputed"
        rows = requests.list_attachments(s, inv)
        assert [(r.filename, r.content_type) for r in rows] == [
            ("photo of crate.png", "image/png"),
            ("delivery note.pdf", "application/pdf"),
        ]
        assert all(r.dispute_id is not None and r.status == "stored" for r in rows)
        _, content = requests.customer_attachment(s, h.settings, cust, inv, rows[1].id or 0)
        assert content == PDF
        dispute_id = rows[0].dispute_id
    # the files are outside the database, under data_dir/attachments/<invoice id>/
    folder = Path(h.settings.data_dir) / "attachments" / str(inv)
    assert sorted(p.read_bytes() for p in folder.iterdir()) == sorted([PNG, PDF])
    st = await state(h, inv)
    assert st.dispute_id == dispute_id and st.status == "disputed"
    opened = [e for e in h.events(inv) if e.kind == "dispute_opened"]
    assert opened and opened[0].actor == "customer"
    assert "Damaged: the crate arrived broken" in str(opened[0].data)
    # the workspace reads it back through the API
    resp = await h.get(f"/v1/invoices/{inv}/attachments/{rows[0].id}")
    assert resp.status_code == 200 and resp.content == PNG
    assert resp.headers["content-type"] == "image/png"
    assert "attachment" in resp.headers["content-disposition"]
    listed = (await h.get(f"/v1/invoices/{inv}/attachments")).json()
    assert [a["id"] for a in listed] == [r.id for r in rows]
    # and the customer is told
    row = await sent(h, inv, f"confirm-dispute-{dispute_id}")
    assert row.status == "sent" and "the crate arrived broken" in row.body


async def test_an_exe_renamed_pdf_and_a_fourth_file_are_refused(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    with Session(h.engine) as s:
        with pytest.raises(Invalid, match="invoice.pdf: not a PDF, PNG or JPEG"):
            await requests.customer_dispute(
                s, h.client, h.settings, cust, inv, "other", "", None, [("invoice.pdf", EXE)]
            )
        with pytest.raises(Invalid, match="at most 3 attachments"):
            await requests.customer_dispute(
                s,
                h.client,
                h.settings,
                cust,
                inv,
                "other",
                "",
                None,
                [("a.pdf", PDF), ("b.png", PNG), ("c.jpg", JPEG), ("d.pdf", PDF)],
            )
        big = PDF + b"\x00" * h.settings.portal_attachment_max_bytes
        with pytest.raises(Invalid, match="big.pdf: larger than 5 MiB"):
            await requests.customer_dispute(
                s, h.client, h.settings, cust, inv, "other", "", None, [("big.pdf", big)]
            )
        assert s.exec(select(DisputeAttachment)).all() == []
        assert s.get(Invoice, inv).status == "open"  # type: ignore[union-attr]
    assert not (Path(h.settings.data_dir) / "attachments").exists()


async def test_another_customers_invoice_is_not_found_like_a_missing_one(ph: Harness) -> None:
    h = ph
    _, inv = await new_invoice(h)
    other, _ = await new_invoice(h)
    with Session(h.engine) as s:
        with pytest.raises(NotFound) as theirs:
            await requests.customer_dispute(
                s, h.client, h.settings, other, inv, "other", "x", None, []
            )
        with pytest.raises(NotFound) as missing:
            await requests.customer_dispute(
                s, h.client, h.settings, other, 999_999, "other", "x", None, []
            )
        assert str(theirs.value).replace(str(inv), "N") == str(missing.value).replace("999999", "N")
        with pytest.raises(NotFound):
            await requests.customer_promise(s, h.client, h.settings, other, inv, today(), 1000, "")
        with pytest.raises(NotFound):
            await requests.propose_plan(
                s, h.client, h.settings, other, inv, [(today(), 120_000)], ""
            )


async def test_a_failed_dispute_leaves_no_file_and_says_so(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    with Session(h.engine) as s:
        await requests.customer_dispute(s, h.client, h.settings, cust, inv, "other", "1", None, [])
        with pytest.raises(Conflict):  # a second dispute while one is open: refused
            await requests.customer_dispute(
                s, h.client, h.settings, cust, inv, "other", "2", None, [("x.pdf", PDF)]
            )
        (row,) = s.exec(select(DisputeAttachment)).all()
        assert row.status == "orphaned" and row.dispute_id is None and row.detail
        assert requests.list_attachments(s, inv) == []
    folder = Path(h.settings.data_dir) / "attachments" / str(inv)
    assert list(folder.iterdir()) == []


# -- plans ------------------------------------------------------------------------------------


async def test_a_plan_inside_the_bounds_is_agreed_at_once(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    t = today()
    with Session(h.engine) as s:
        outcome = await requests.propose_plan(
            s,
            h.client,
            h.settings,
            cust,
            inv,
            [(t + timedelta(days=10), 60_000), (t + timedelta(days=40), 60_000)],
            "two halves",
        )
        assert outcome.status == "accepted" and outcome.invoice.hold == "plan"
        plan = s.get(PaymentPlan, outcome.plan_id)
        assert plan is not None and plan.status == "active" and plan.created_by == "customer"
        assert s.exec(select(PlanProposal)).all() == []
    st = await state(h, inv)
    assert st.plan_id == outcome.plan_id and st.hold == "plan"
    row = await sent(h, inv, f"confirm-plan-{outcome.plan_id}")
    assert "payment plan" in row.subject.lower()


async def test_instalments_must_add_up_to_the_balance(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    t = today()
    with Session(h.engine) as s:
        with pytest.raises(Invalid, match="add up to 100000"):
            await requests.propose_plan(
                s, h.client, h.settings, cust, inv, [(t + timedelta(days=5), 100_000)], ""
            )
        with pytest.raises(Invalid, match="past"):
            await requests.propose_plan(
                s, h.client, h.settings, cust, inv, [(t - timedelta(days=1), 120_000)], ""
            )


def out_of_bounds_plan() -> list[tuple[date, int]]:
    t = today()
    return [(t + timedelta(days=20 * n), 15_000) for n in range(1, 9)]  # 8 > 6, span 160


async def test_outside_the_bounds_a_proposal_waits_and_the_owner_accepts(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    with Session(h.engine) as s:
        outcome = await requests.propose_plan(
            s, h.client, h.settings, cust, inv, out_of_bounds_plan(), "eight months please"
        )
        assert outcome.status == "pending" and outcome.proposal is not None
        assert outcome.out_of_bounds == ["more than 6 instalments"]
        pid = outcome.proposal.id
        task = s.get(Task, outcome.proposal.task_id)
        assert task is not None and (task.kind, task.status) == ("plan_proposal", "open")
        assert s.get(Invoice, inv).hold is None  # type: ignore[union-attr]
    assert "plan_proposed" in [e.kind for e in h.events(inv)]
    listed = (await h.get(f"/v1/invoices/{inv}/plan-proposals")).json()
    assert [(p["id"], p["status"]) for p in listed] == [(pid, "pending")]
    resp = await h.post(f"/v1/invoices/{inv}/plan-proposals/{pid}/accept", None)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "accepted"
    again = await h.post(f"/v1/invoices/{inv}/plan-proposals/{pid}/accept", None)
    assert again.status_code == 409
    with Session(h.engine) as s:
        task = s.get(Task, outcome.proposal.task_id)
        assert task is not None and task.status == "done" and task.closed_by
        plan = s.exec(select(PaymentPlan).where(PaymentPlan.invoice_id == inv)).one()
        assert plan.status == "active" and len(plan.installments) == 8
    st = await state(h, inv)
    assert st.plan_id == plan.id and st.hold == "plan"
    row = await sent(h, inv, f"confirm-plan-{plan.id}")
    assert row.status == "sent"


async def test_the_owner_declines_and_the_customer_is_told(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    with Session(h.engine) as s:
        outcome = await requests.propose_plan(
            s, h.client, h.settings, cust, inv, out_of_bounds_plan(), ""
        )
    assert outcome.proposal is not None
    pid = outcome.proposal.id
    resp = await h.post(
        f"/v1/invoices/{inv}/plan-proposals/{pid}/decline", {"reason": "too long for us"}
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["decision_note"]) == ("declined", "too long for us")
    with Session(h.engine) as s:
        task = s.get(Task, outcome.proposal.task_id)
        assert task is not None and task.status == "done"
    row = await sent(h, inv, f"confirm-plan-declined-{pid}")
    assert "too long for us" in row.body


# -- promises ---------------------------------------------------------------------------------


async def test_a_promise_within_the_maximum_and_one_after_it(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    t = today()
    with Session(h.engine) as s:
        with pytest.raises(Invalid, match="between"):
            await requests.customer_promise(
                s, h.client, h.settings, cust, inv, t + timedelta(days=31), 50_000, ""
            )
        with pytest.raises(Invalid, match="at most the balance"):
            await requests.customer_promise(
                s, h.client, h.settings, cust, inv, t + timedelta(days=5), 130_000, ""
            )
        invoice = await requests.customer_promise(
            s, h.client, h.settings, cust, inv, t + timedelta(days=30), 50_000, "salary day"
        )
        assert invoice.hold == "promise"
        promise = s.exec(select(Promise).where(Promise.invoice_id == inv)).one()
        assert promise.created_by == "customer" and promise.amount_minor == 50_000
    row = await sent(h, inv, f"confirm-promise-{promise.id}")
    assert "promise" in row.subject.lower()


# -- confirmations ----------------------------------------------------------------------------


async def test_a_confirmation_is_sent_once_however_often_it_is_started(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    t = today()
    with Session(h.engine) as s:
        await requests.customer_promise(
            s, h.client, h.settings, cust, inv, t + timedelta(days=3), 1_000, ""
        )
        pid = s.exec(select(Promise.id).where(Promise.invoice_id == inv)).one()
    inp = ConfirmationInput(inv, "promise", pid or 0)
    await sent(h, inv, inp.step_key)
    assert await gateway.start_confirmation(h.client, h.settings, inp) is False
    handle = h.client.get_workflow_handle(gateway.confirmation_id(h.settings, inp))
    assert await handle.result() == "sent"
    rows = [m for m in h.outbox(inv) if m.step_key == inp.step_key]
    assert len(rows) == 1
    events = [e for e in h.events(inv) if e.kind == "confirmation_sent"]
    assert len(events) == 1


async def test_an_opted_out_customer_gets_no_email(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    with Session(h.engine) as s:
        s.add(ContactBlock(customer_id=cust, channel="email", reason="opt_out", source="test"))
        s.commit()
        await requests.customer_promise(
            s, h.client, h.settings, cust, inv, today() + timedelta(days=3), 1_000, ""
        )
        pid = s.exec(select(Promise.id).where(Promise.invoice_id == inv)).one()
    row = await sent(h, inv, f"confirm-promise-{pid}")
    assert row.status == "blocked" and "opt_out" in (row.detail or "")
    assert "confirmation_blocked" in [e.kind for e in h.events(inv)]


async def test_a_german_customer_gets_german_text(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h, locale="de")
    with Session(h.engine) as s:
        await requests.customer_promise(
            s, h.client, h.settings, cust, inv, today() + timedelta(days=3), 12_345, ""
        )
        pid = s.exec(select(Promise.id).where(Promise.invoice_id == inv)).one()
    row = await sent(h, inv, f"confirm-promise-{pid}")
    assert row.body.startswith("Guten Tag Acme GmbH,")
    assert "123,45" in row.body and "Zahlungszusage" in row.subject


async def test_a_resolved_dispute_tells_the_customer_its_outcome(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    with Session(h.engine) as s:
        await requests.customer_dispute(s, h.client, h.settings, cust, inv, "other", "no", None, [])
        from models import Dispute

        dispute_id = s.exec(select(Dispute.id).where(Dispute.invoice_id == inv)).one()
    resp = await h.post(
        f"/v1/invoices/{inv}/disputes/{dispute_id}/resolve",
        {"outcome": "rejected", "note": "the delivery was signed for"},
    )
    assert resp.status_code == 200, resp.text
    row = await sent(h, inv, f"confirm-dispute-outcome-{dispute_id}")
    assert "the delivery was signed for" in row.body and "not upheld" in row.body


# -- the workspace's invoice page ---------------------------------------------------------------


async def test_the_invoice_page_lists_attachments_and_pending_proposals(ph: Harness) -> None:
    h = ph
    cust, inv = await new_invoice(h)
    with Session(h.engine) as s:
        await requests.customer_dispute(
            s, h.client, h.settings, cust, inv, "other", "x", None, [("scan.jpg", JPEG)]
        )
        att = requests.list_attachments(s, inv)[0]
    cust2, inv2 = await new_invoice(h)
    with Session(h.engine) as s:
        outcome = await requests.propose_plan(
            s, h.client, h.settings, cust2, inv2, out_of_bounds_plan(), ""
        )
    assert outcome.proposal is not None
    form = await h.http.get("/app/login")
    token = CSRF_IN_FORM.search(form.text)
    assert token
    resp = await h.http.post(
        "/app/login",
        data={"api_key": API_KEYS["specialist"], "csrf_token": token[1], "next": "/app"},
    )
    assert resp.status_code == 303, resp.text
    page = await h.http.get(f"/app/invoices/{inv}")
    assert page.status_code == 200
    link = f"/app/invoices/{inv}/attachments/{att.id}"
    assert link in page.text and "scan.jpg" in page.text
    download = await h.http.get(link)
    assert download.status_code == 200 and download.content == JPEG
    page2 = await h.http.get(f"/app/invoices/{inv2}")
    pid = outcome.proposal.id
    accept = f"/app/invoices/{inv2}/plan-proposals/{pid}/accept"
    assert accept in page2.text and "Decline plan" in page2.text
    csrf = CSRF_IN_FORM.search(page2.text)
    assert csrf
    done = await h.http.post(accept, data={"csrf_token": csrf[1]})
    assert done.status_code == 303, done.text
    with Session(h.engine) as s:
        proposal = s.get(PlanProposal, pid)
        assert proposal is not None and proposal.status == "accepted"
        assert proposal.decided_by and proposal.decided_by != "customer"


async def test_a_payment_is_confirmed_once(ph: Harness) -> None:
    from tests.webhook import signed_payment

    h = ph
    _, inv = await new_invoice(h, locale="fr")
    await signed_payment(h, invoice_id=inv, amount_minor=20_000)
    with Session(h.engine) as s:
        from models import Payment

        payment = s.exec(select(Payment).where(Payment.invoice_id == inv)).one()
    row = await sent(h, inv, f"confirm-payment-{payment.id}")
    assert row.body.startswith("Bonjour Acme GmbH,") and "200,00" in row.body
    assert len([m for m in h.outbox(inv) if m.step_key.startswith("confirm-")]) == 1


async def test_the_policy_sets_the_portal_bounds(ph: Harness) -> None:
    h = ph
    bad = await h.http.post(
        "/v1/policies",
        json={
            "name": "bad-portal",
            "escalate_after": "P45D",
            "steps": [{"key": "s1", "offset": "P1D"}],
            "portal_promise_max": "soon",
        },
        headers=h.as_role("admin"),
    )
    assert bad.status_code == 422, bad.text
    policy = await h.policy(
        escalate_after="P45D",
        steps=[{"key": "s1", "offset": "P1D"}],
        portal_plan_max_installments=2,
        portal_plan_min_installment_minor=50_000,
        portal_promise_max="P7D",
    )
    assert (policy["portal_plan_max_installments"], policy["portal_plan_first_within"]) == (
        2,
        "P30D",
    )
    cust = await h.customer()
    inv = (await h.invoice(cust["id"], policy_id=policy["id"]))["id"]
    t = today()
    with Session(h.engine) as s:
        outcome = await requests.propose_plan(
            s,
            h.client,
            h.settings,
            cust["id"],
            inv,
            [(t + timedelta(days=40), 30_000), (t + timedelta(days=50), 90_000)],
            "",
        )
        assert outcome.status == "pending"
        assert outcome.out_of_bounds == [
            f"first instalment after {(t + timedelta(days=30)).isoformat()}",
            "an instalment below 50000",
        ]
        with pytest.raises(Invalid, match="between"):
            await requests.customer_promise(
                s, h.client, h.settings, cust["id"], inv, t + timedelta(days=8), 1_000, ""
            )
