"""The workflow trusts our database, not a message's payload (issue 15): a ``payment_received``
signal or an update sent straight to Temporal (its frontend or Web UI, past the API) changes
nothing it is not backed by a stored row; the refusal is on the timeline. Time-skipping
server, real worker and activities, SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import Session, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from models import Invoice, InvoiceCommand, Payment
from tests.conftest import Harness
from tests.test_actions import Case, new_case
from tests.test_api import eventually
from tests.webhook import signed_payment
from workflows.trust import fingerprint
from workflows.types import (
    CancelRequest,
    ChargeSpec,
    InstallmentRequest,
    LadderStage,
    PaymentSignal,
    PlanRequest,
    PolicyChangeRequest,
    PolicySpec,
    PromiseRequest,
    ResolveDisputeRequest,
    StepSpec,
)


def handle_of(c: Case) -> WorkflowHandle[Any, Any]:
    return c.h.client.get_workflow_handle(c.inv["workflow_id"])


def stored_invoice(h: Harness, invoice_id: int) -> Invoice:
    with Session(h.engine) as s:
        row = s.get(Invoice, invoice_id)
        assert row is not None
        return row


def store_payment(h: Harness, invoice_id: int, amount: int) -> int:
    """A payment row as the webhook stores it, not delivered yet."""
    with Session(h.engine) as s:
        row = Payment(
            event_id=f"evt-{invoice_id}-{amount}",
            invoice_id=invoice_id,
            amount_minor=amount,
            currency="EUR",
            paid_at=datetime(2026, 11, 23, 10, tzinfo=UTC),
            method="card",
        )
        s.add(row)
        s.commit()
        assert row.id is not None
        return row.id


async def settled(c: Case, *kinds: str) -> list[Any]:
    """The invoice's events once one of ``kinds`` is on its timeline."""
    found = await eventually(lambda: [e for e in c.h.events(c.id) if e.kind in kinds])
    assert found, (kinds, c.kinds())
    return [e for e in c.h.events(c.id) if e.kind in kinds]


# -- payment signals -------------------------------------------------------------------------


async def test_a_made_up_payment_signal_changes_nothing_and_is_recorded_once(h: Harness) -> None:
    c = await new_case(h)
    forged = PaymentSignal(payment_id=987_654, amount_minor=120_000, currency="EUR")
    await handle_of(c).signal("payment_received", forged)
    rejected = await settled(c, "payment_signal_rejected", "payment_applied")
    assert [(e.kind, e.data) for e in rejected] == [
        ("payment_signal_rejected", {"payment_id": 987_654, "reason": "unknown payment"})
    ]
    state = await c.state()
    assert (state.status, state.balance_minor) == ("open", 120_000)
    stored = stored_invoice(h, c.id)
    assert (stored.status, stored.balance_minor) == ("open", 120_000)

    # The same made-up id again: still nothing, and still one event.
    await handle_of(c).signal("payment_received", forged)
    await h.env.sleep(60)
    assert c.kinds().count("payment_signal_rejected") == 1
    assert (await c.state()).balance_minor == 120_000

    # Another invoice's payment is refused too; a genuine payment still goes through.
    other = await new_case(h)
    theirs = store_payment(h, other.id, 5_000)
    await handle_of(c).signal(
        "payment_received", PaymentSignal(payment_id=theirs, amount_minor=5_000, currency="EUR")
    )
    await eventually(lambda: c.kinds().count("payment_signal_rejected") == 2)
    assert c.h.events(c.id)[-1].data == {
        "payment_id": theirs,
        "reason": "the payment belongs to another invoice",
    }
    resp = await signed_payment(h, invoice_id=c.id, amount_minor=20_000)
    assert resp.status_code == 200, resp.text
    applied = await settled(c, "payment_applied")
    assert applied[0].data["amount_minor"] == 20_000
    assert (await c.state()).balance_minor == 100_000


async def test_a_real_payment_id_with_a_forged_amount_applies_the_stored_amount(
    h: Harness,
) -> None:
    c = await new_case(h)
    payment_id = store_payment(h, c.id, 20_000)
    forged = PaymentSignal(
        payment_id=payment_id, amount_minor=120_000, currency="USD", kind="payment"
    )
    await handle_of(c).signal("payment_received", forged)
    (applied,) = await settled(c, "payment_applied")
    assert applied.data["amount_minor"] == 20_000
    state = await c.state()
    assert (state.status, state.balance_minor) == ("open", 100_000)
    assert stored_invoice(h, c.id).balance_minor == 100_000
    with Session(h.engine) as s:
        row = s.get(Payment, payment_id)
        assert row is not None and row.status == "applied"


# -- updates ---------------------------------------------------------------------------------


def refusal(exc: pytest.ExceptionInfo[WorkflowUpdateFailedError]) -> ApplicationError:
    cause = exc.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == "InvalidState", cause
    return cause


async def test_an_update_past_the_api_with_a_forged_credit_is_refused_and_recorded(
    h: Harness,
) -> None:
    c = await new_case(h)
    opened = await c.act("/disputes", {"reason": "goods damaged"})
    assert opened.status_code == 200, opened.text
    dispute_id = (await c.get("/disputes"))[0]["id"]
    forged = ResolveDisputeRequest(
        dispute_id=dispute_id, outcome="upheld", note="x", actor="mallory", credit_minor=120_000
    )
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle_of(c).execute_update("resolve_dispute", forged)
    assert "no recorded command" in refusal(exc).message

    # A recorded command's id with another amount than the one recorded: refused as well.
    recorded = ResolveDisputeRequest(
        dispute_id=dispute_id, outcome="upheld", note="x", actor="mallory", credit_minor=1_000
    )
    with Session(h.engine) as s:
        row = InvoiceCommand(
            invoice_id=c.id,
            name="resolve_dispute",
            fingerprint=fingerprint(recorded),
            actor="mallory",
        )
        s.add(row)
        s.commit()
        forged.command_id = row.id
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle_of(c).execute_update("resolve_dispute", forged)
    assert "differs" in refusal(exc).message

    rejected = [e.data for e in h.events(c.id) if e.kind == "command_rejected"]
    assert [(d["command"], d["command_id"]) for d in rejected] == [
        ("resolve_dispute", None),
        ("resolve_dispute", forged.command_id),
    ]
    state = await c.state()
    assert (state.status, state.balance_minor) == ("disputed", 120_000)
    assert stored_invoice(h, c.id).balance_minor == 120_000

    # Through the API the same action is recorded first and applied.
    resp = await c.act(
        f"/disputes/{dispute_id}/resolve",
        {"outcome": "upheld", "credit_minor": 20_000, "note": "two items damaged"},
        role="admin",  # (on main since: a specialist's credit needs a second person)
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["balance_minor"]) == ("open", 100_000)
    with Session(h.engine) as s:
        names = s.exec(select(InvoiceCommand.name).where(InvoiceCommand.invoice_id == c.id)).all()
    assert sorted(names) == ["open_dispute", "resolve_dispute", "resolve_dispute"]


async def test_a_cancel_or_promise_past_the_api_is_refused(h: Harness) -> None:
    c = await new_case(h)
    promised = {"promised_date": c.due.isoformat(), "amount_minor": 50_000}
    resp = await c.act("/promise", promised)
    assert resp.status_code == 200, resp.text
    # The recorded promise sent again past the API, its command id and all: applied once.
    with Session(h.engine) as s:
        (row,) = s.exec(select(InvoiceCommand).where(InvoiceCommand.name == "promise")).all()
    again = PromiseRequest(
        promised_date=c.due.isoformat(),
        amount_minor=50_000,
        actor=row.actor,
        note="",
        command_id=row.id,
    )
    assert fingerprint(again) == row.fingerprint
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle_of(c).execute_update("promise", again)
    assert "applied already" in refusal(exc).message
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle_of(c).execute_update("cancel", CancelRequest(reason="x", actor="mallory"))
    refusal(exc)
    promise = PromiseRequest(promised_date=c.due.isoformat(), amount_minor=1, actor="mallory")
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle_of(c).execute_update("promise", promise)
    refusal(exc)
    assert [e.data["command"] for e in h.events(c.id) if e.kind == "command_rejected"] == [
        "promise",
        "cancel",
        "promise",
    ]
    state = await c.state()
    assert (state.status, state.hold) == ("open", "promise")
    # The API's cancellation still works.
    resp = await c.act("/cancel", {"reason": "issued in error"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled"


# -- the fingerprint -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        PlanRequest(installments=[InstallmentRequest("2026-12-01", 60_000)], note="n", actor="a"),
        PolicyChangeRequest(
            policy=PolicySpec(
                policy_id=3,
                name="strict",
                steps=[StepSpec(key="late_7", offset="P7D", template="reminder_overdue")],
                escalate_after="P20D",
                ladder=[LadderStage(key="final", kind="notice", channels=["letter"])],
                charges=ChargeSpec(stage_fees_minor={"final": 1500}, interest_rate_pct="9.5"),
            ),
            actor="a",
            segment="risky",
        ),
    ],
    ids=["plan", "policy"],
)
def test_the_fingerprint_survives_temporals_data_converter(request_: Any) -> None:
    """The workflow hashes the request it decoded; the domain hashed the one it sent."""
    converter = DataConverter.default.payload_converter
    (payload,) = converter.to_payloads([request_])
    (decoded,) = converter.from_payloads([payload], [type(request_)])
    assert decoded == request_
    assert fingerprint(decoded) == fingerprint(request_)
    decoded.command_id = 7
    assert fingerprint(decoded) == fingerprint(request_)  # the id is not part of it
    decoded.actor = "someone else"
    assert fingerprint(decoded) != fingerprint(request_)
