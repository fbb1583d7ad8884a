"""Card payments through Stripe Checkout, on SQLite and PostgreSQL: the real ``stripe`` SDK
against a local fake Stripe (``tests/fake_stripe.py``), signed webhook events through the API
to the invoices' workflows on the time-skipping server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from arflow.config import Settings
from arflow.errors import Invalid, NotFound
from arflow.portal.stripe_pay import create_checkout, stripe_client
from models import Payment, StripeCheckout
from tests import fake_stripe
from tests.conftest import Harness, harness
from tests.fake_stripe import FakeStripe, signed
from tests.faults.fakes import FakeProvider
from tests.test_api import error_of, eventually

SUCCESS = "https://portal.example.com/paid?session={CHECKOUT_SESSION_ID}"
CANCEL = "https://portal.example.com/cancelled"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe()
    yield server
    server.close()


@pytest.fixture
async def h(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path, fake: FakeStripe
) -> AsyncIterator[Harness]:
    async with harness(
        ts_env,
        engine,
        tmp_path,
        stripe_api_key=fake_stripe.API_KEY,
        stripe_webhook_secret=fake_stripe.SECRET,
        stripe_api_base=fake.url,
    ) as h:
        yield h


async def checkout(h: Harness, customer_id: int, invoice_ids: list[int]) -> str:
    def run() -> str:
        with Session(h.engine) as s:
            return create_checkout(s, h.settings, customer_id, invoice_ids, SUCCESS, CANCEL)

    return await asyncio.to_thread(run)


async def deliver(h: Harness, event: Any, **kw: Any) -> httpx.Response:
    raw, headers = signed(event, **kw)
    return await h.http.post("/v1/webhooks/stripe", content=raw, headers=headers)


def payments_of(h: Harness) -> list[tuple[int, str, int, str]]:
    with Session(h.engine) as s:
        rows = s.exec(select(Payment).order_by(col(Payment.id))).all()
        return [(p.invoice_id, p.kind, p.amount_minor, p.method) for p in rows]


def checkouts(h: Harness) -> list[StripeCheckout]:
    with Session(h.engine) as s:
        return list(s.exec(select(StripeCheckout).order_by(col(StripeCheckout.id))).all())


async def status_becomes(h: Harness, invoice_id: int, status: str) -> dict[str, Any]:
    for _ in range(300):
        inv = dict((await h.get(f"/v1/invoices/{invoice_id}")).json())
        if inv["status"] == status:
            return inv
        await asyncio.sleep(0.05)
    raise AssertionError(f"invoice {invoice_id} never became {status}: {inv['status']}")


async def workflow_completed(h: Harness, invoice_id: int) -> bool:
    """The invoice's workflow ran to its end (it records ``paid`` just before it returns)."""
    handle = h.client.get_workflow_handle(h.settings.workflow_id(invoice_id))
    for _ in range(300):
        if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
            return True
        await asyncio.sleep(0.05)
    return False


async def two_invoices(h: Harness) -> tuple[int, int, int]:
    customer = await h.customer()
    first = await h.invoice(customer["id"], amount_minor=120_000)
    second = await h.invoice(customer["id"], amount_minor=30_000)
    return customer["id"], first["id"], second["id"]


async def paid_checkout(h: Harness, fake: FakeStripe) -> tuple[int, int, str]:
    """Two invoices paid in one checkout (120,000 and 30,000 EUR cents)."""
    customer_id, first, second = await two_invoices(h)
    await checkout(h, customer_id, [first, second])
    session_id = checkouts(h)[-1].session_id
    resp = await deliver(h, fake.complete(session_id))
    assert resp.status_code == 200, resp.text
    await status_becomes(h, first, "paid")
    await status_becomes(h, second, "paid")
    return first, second, session_id


# -- checkout -------------------------------------------------------------------------------


async def test_checkout_for_one_and_for_two_invoices(h: Harness, fake: FakeStripe) -> None:
    customer_id, first, second = await two_invoices(h)
    url = await checkout(h, customer_id, [first])
    sent = fake.creates()[-1]
    assert [
        (i["price_data"]["unit_amount"], i["price_data"]["currency"], i["quantity"])
        for i in sent.line_items()
    ] == [("120000", "eur", "1")]
    assert sent.headers["Authorization"] == f"Bearer {fake_stripe.API_KEY}"
    assert sent.form["mode"] == "payment"
    assert sent.form["success_url"] == SUCCESS and sent.form["cancel_url"] == CANCEL
    assert sent.form["metadata"] == {
        "arflow_customer_id": str(customer_id),
        "arflow_invoice_ids": str(first),
    }
    assert sent.form["payment_intent_data"]["metadata"] == sent.form["metadata"]
    assert sent.idempotency_key
    one = checkouts(h)[0]
    assert url == f"{fake.url}/pay/{one.session_id}"
    assert (one.customer_id, one.amount_minor, one.currency, one.status) == (
        customer_id,
        120_000,
        "EUR",
        "open",
    )
    assert one.allocations == [{"invoice_id": first, "amount_minor": 120_000}]

    url2 = await checkout(h, customer_id, [second, first])
    sent2 = fake.creates()[-1]
    assert [int(i["price_data"]["unit_amount"]) for i in sent2.line_items()] == [120_000, 30_000]
    assert sent2.form["metadata"]["arflow_invoice_ids"] == f"{first},{second}"
    assert sent2.idempotency_key != sent.idempotency_key
    two = checkouts(h)[1]
    assert two.amount_minor == 150_000
    assert url2.endswith(two.session_id)
    started = [e for e in h.events(second) if e.kind == "checkout_started"]
    assert [(e.actor, e.data["checkout"], e.data["amount_minor"]) for e in started] == [
        ("customer", two.session_id, 30_000)
    ]
    # The same click twice: Stripe's idempotency gives the same session, stored once.
    again = await checkout(h, customer_id, [first, second])
    assert again == url2
    assert fake.creates()[-1].idempotency_key == sent2.idempotency_key
    assert len(checkouts(h)) == 2
    assert len([e for e in h.events(second) if e.kind == "checkout_started"]) == 1
    # The hosted page redirects to the success URL once paid.
    async with httpx.AsyncClient() as web:
        page = await web.get(url2)
    assert page.status_code == 303
    assert page.headers["location"] == SUCCESS.replace("{CHECKOUT_SESSION_ID}", two.session_id)


async def test_checkout_refuses_other_customers_closed_and_mixed_invoices(
    h: Harness, fake: FakeStripe
) -> None:
    customer_id, first, _ = await two_invoices(h)
    stranger = await h.customer()
    theirs = await h.invoice(stranger["id"], amount_minor=5_000)
    dollars = await h.invoice(customer_id, amount_minor=5_000, currency="USD")
    with pytest.raises(NotFound) as nf:
        await checkout(h, customer_id, [first, theirs["id"]])
    assert str(nf.value) == f"invoice {theirs['id']} not found"
    with pytest.raises(NotFound) as missing:
        await checkout(h, customer_id, [999_999])
    assert str(missing.value) == "invoice 999999 not found"  # the same answer: no oracle
    with pytest.raises(NotFound):
        await checkout(h, customer_id, [2**70])
    with pytest.raises(Invalid) as mixed:
        await checkout(h, customer_id, [first, dollars["id"]])
    assert "different currencies" in str(mixed.value)
    with pytest.raises(Invalid):
        await checkout(h, customer_id, [])
    assert fake.creates() == []
    assert checkouts(h) == []


async def test_without_stripe_settings_the_webhook_is_404(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path, fake: FakeStripe
) -> None:
    async with harness(ts_env, engine, tmp_path, with_worker=False) as h:
        assert not h.settings.stripe_enabled
        raw, headers = signed(fake_stripe.event("checkout.session.completed", {"id": "cs_x"}))
        resp = await h.http.post("/v1/webhooks/stripe", content=raw, headers=headers)
        assert resp.status_code == 404
        assert "not configured" in error_of(resp)
        customer = await h.customer()
        with pytest.raises(NotFound):
            await checkout(h, customer["id"], [1])
    assert fake.creates() == []


# -- webhook ---------------------------------------------------------------------------------


async def test_completed_checkout_pays_each_invoice_exactly_once(
    h: Harness, fake: FakeStripe
) -> None:
    customer_id, first, second = await two_invoices(h)
    await checkout(h, customer_id, [first, second])
    session_id = checkouts(h)[0].session_id
    completed = fake.complete(session_id)
    resp = await deliver(h, completed)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["status"], body["event_type"], body["checkout"]) == (
        "applied",
        "checkout.session.completed",
        session_id,
    )
    assert [(p["invoice_id"], p["status"]) for p in body["payments"]] == [
        (first, "accepted"),
        (second, "accepted"),
    ]
    for invoice_id in (first, second):
        inv = await status_becomes(h, invoice_id, "paid")
        assert inv["balance_minor"] == 0
        assert await workflow_completed(h, invoice_id)
    # Stripe retries the same event, and sends the same fact again in a new event.
    again = await deliver(h, completed)
    assert again.status_code == 200
    assert [p["status"] for p in again.json()["payments"]] == ["duplicate", "duplicate"]
    other = await deliver(h, fake.complete(session_id))
    assert other.status_code == 200
    assert payments_of(h) == [
        (first, "payment", 120_000, "card"),
        (second, "payment", 30_000, "card"),
    ]
    row = checkouts(h)[0]
    assert row.status == "completed"
    assert row.payment_intent_id == fake.sessions[session_id]["payment_intent"]
    with Session(h.engine) as s:
        ids = s.exec(select(Payment.event_id).order_by(col(Payment.id))).all()
    assert ids == [f"stripe:{session_id}:{first}", f"stripe:{session_id}:{second}"]
    for invoice_id in (first, second):
        kinds = [e.kind for e in h.events(invoice_id)]
        assert kinds.count("payment_applied") == 1


async def test_bad_signature_is_400_and_changes_nothing(h: Harness, fake: FakeStripe) -> None:
    customer_id, first, _ = await two_invoices(h)
    await checkout(h, customer_id, [first])
    session_id = checkouts(h)[0].session_id
    completed = fake.complete(session_id)
    wrong = await deliver(h, completed, secret="whsec_someone_else")
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "bad_signature"
    raw, headers = signed(completed)
    tampered = raw.replace(b'"paid"', b'"paid" ')
    resp = await h.http.post("/v1/webhooks/stripe", content=tampered, headers=headers)
    assert resp.status_code == 400
    missing = await h.http.post("/v1/webhooks/stripe", content=raw)
    assert missing.status_code == 400
    stale = await deliver(h, completed, timestamp=1_000_000_000)
    assert stale.status_code == 400
    not_an_event = await deliver(h, [completed])  # signed, but not an event object
    assert not_an_event.status_code == 400
    assert payments_of(h) == []
    assert checkouts(h)[0].status == "open"
    assert (await h.get(f"/v1/invoices/{first}")).json()["status"] == "open"


async def test_refund_reverses_once_last_invoice_first(h: Harness, fake: FakeStripe) -> None:
    first, second, session_id = await paid_checkout(h, fake)
    refund = fake.refunded(session_id, 30_000)
    for _ in range(2):  # Stripe's retry: the same event again
        resp = await deliver(h, refund)
        assert resp.status_code == 200, resp.text
    inv = await status_becomes(h, second, "open")
    assert inv["balance_minor"] == 30_000
    assert (await h.get(f"/v1/invoices/{first}")).json()["status"] == "paid"
    # A second refund: the charge's total refunded is now 50,000, so 20,000 is new; the
    # second invoice has no more to give back, the first one reopens.
    more = fake.refunded(session_id, 50_000)
    assert (await deliver(h, more)).status_code == 200
    assert (await deliver(h, fake.refunded(session_id, 50_000))).status_code == 200
    inv = await status_becomes(h, first, "open")
    assert inv["balance_minor"] == 20_000
    assert payments_of(h)[2:] == [
        (second, "refund", -30_000, "card"),
        (first, "refund", -20_000, "card"),
    ]
    row = checkouts(h)[0]
    assert (row.refunded_minor, row.reversed_minor) == (50_000, 50_000)


async def test_dispute_becomes_one_chargeback(h: Harness, fake: FakeStripe) -> None:
    first, second, session_id = await paid_checkout(h, fake)
    dispute = fake.disputed(session_id, 150_000, dispute_id="dp_test_one")
    assert (await deliver(h, dispute)).status_code == 200
    # The same dispute in another event (a redelivery with a new event id).
    assert (await deliver(h, fake.disputed(session_id, 150_000, "dp_test_one"))).status_code == 200
    await status_becomes(h, first, "open")
    await status_becomes(h, second, "open")
    assert payments_of(h)[2:] == [
        (second, "chargeback", -30_000, "card"),
        (first, "chargeback", -120_000, "card"),
    ]
    assert await eventually(
        lambda: all("payment_reversed" in [e.kind for e in h.events(i)] for i in (first, second))
    )


async def test_unknown_checkouts_and_other_events_are_acknowledged(
    h: Harness, fake: FakeStripe
) -> None:
    session = {"id": "cs_test_not_ours", "payment_status": "paid", "amount_total": 1}
    resp = await deliver(h, fake_stripe.event("checkout.session.completed", session))
    assert (resp.status_code, resp.json()["status"]) == (200, "unknown")
    charge = {"id": "ch_x", "payment_intent": "pi_unknown", "amount_refunded": 100}
    resp = await deliver(h, fake_stripe.event("charge.refunded", charge))
    assert (resp.status_code, resp.json()["status"]) == (200, "unknown")
    resp = await deliver(h, fake_stripe.event("customer.created", {"id": "cus_1"}))
    assert (resp.status_code, resp.json()["status"]) == (200, "ignored")
    assert payments_of(h) == []


async def test_an_unpaid_or_different_amount_is_not_applied(h: Harness, fake: FakeStripe) -> None:
    customer_id, first, second = await two_invoices(h)
    await checkout(h, customer_id, [first, second])
    session_id = checkouts(h)[0].session_id
    completed = fake.complete(session_id)
    unpaid = dict(completed["data"]["object"], payment_status="unpaid")
    resp = await deliver(h, fake_stripe.event("checkout.session.completed", unpaid))
    assert (resp.status_code, resp.json()["status"]) == (200, "ignored")
    less = dict(completed["data"]["object"], amount_total=100)
    resp = await deliver(h, fake_stripe.event("checkout.session.completed", less))
    assert (resp.status_code, resp.json()["status"]) == (200, "mismatch")
    assert payments_of(h) == []
    noted = [e for e in h.events(first) if e.kind == "card_payment_mismatch"]
    assert [(e.actor, e.data["paid_minor"]) for e in noted] == [("stripe", 100)]
    assert checkouts(h)[0].status == "open"


def test_the_fake_hosted_page_sends_the_signed_completion_when_told() -> None:
    """For the browser tests (an app on a real port): paying on the fake's page posts the
    signed ``checkout.session.completed`` to ``webhook_url``, which the SDK verifies."""
    receiver = FakeProvider()
    fake = FakeStripe(webhook_url=f"{receiver.url}/v1/webhooks/stripe")
    try:
        client = stripe_client(
            Settings(
                environment="test",
                stripe_api_key=fake_stripe.API_KEY,
                stripe_webhook_secret=fake_stripe.SECRET,
                stripe_api_base=fake.url,
            )
        )
        made = client.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "success_url": SUCCESS,
                "line_items": [
                    {"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 500}}
                ],
            }
        )
        assert client.v1.checkout.sessions.retrieve(made.id).amount_total == 500
        page = httpx.get(str(made.url))
        assert page.status_code == 303
        assert fake.deliveries == [200]
        got = receiver.requests[-1]
        event = stripe.Webhook.construct_event(
            got.body, got.headers["Stripe-Signature"], fake_stripe.SECRET
        )
        assert event.type == "checkout.session.completed"
        assert event.data.object["id"] == made.id
        assert event.data.object["payment_status"] == "paid"
    finally:
        fake.close()
        receiver.close()
