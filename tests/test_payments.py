"""Payment rules on the time-skipping server (real worker and activities, SQLite): overpayment
credit and its use, refunds and chargebacks (reopening a paid invoice), early-payment
discounts, the pay link, and a payment in another currency going to the unmatched queue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from models import CreditEntry, Payment
from models.reference import payment_reference
from tests.conftest import STALL, Harness, longest_loop_stall
from tests.test_actions import Case, new_case
from tests.test_api import error_of, eventually
from tests.webhook import signed_payment

DAY = timedelta(days=1)


async def paid(c: Case, amount: int, **fields: Any) -> dict[str, Any]:
    resp = await signed_payment(c.h, invoice_id=c.id, amount_minor=amount, **fields)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def status_becomes(c: Case, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        inv = await c.get()
        return inv if inv["status"] == status else None

    for _ in range(200):
        found = await check()
        if found:
            return found
        await c.h.env.sleep(timedelta(seconds=1))
    raise AssertionError(f"invoice {c.id} never became {status}: {(await c.get())['status']}")


# -- overpayment and credit -------------------------------------------------------------------


async def test_overpayment_becomes_credit_usable_on_another_invoice(h: Harness) -> None:
    c = await new_case(h, amount=100_000)
    await paid(c, 130_000)
    inv = await status_becomes(c, "paid")
    assert inv["balance_minor"] == 0
    applied = next(e for e in h.events(c.id) if e.kind == "payment_applied")
    assert applied.data["overpaid_minor"] == 30_000
    customer_id = c.inv["customer_id"]
    assert (await h.get(f"/v1/customers/{customer_id}")).json()["credit"] == {"EUR": 30_000}

    other = await h.invoice(customer_id, amount_minor=50_000)
    use = await h.http.post(
        f"/v1/customers/{customer_id}/credit/apply",
        json={"invoice_id": other["id"], "amount_minor": 30_000},
        headers=h.as_role("specialist") | {"Idempotency-Key": "use-1"},
    )
    assert use.status_code == 200, use.text
    assert use.json()["outcome"] == "delivered"
    again = await h.http.post(
        f"/v1/customers/{customer_id}/credit/apply",
        json={"invoice_id": other["id"], "amount_minor": 30_000},
        headers=h.as_role("specialist") | {"Idempotency-Key": "use-1"},
    )
    assert again.status_code == 200  # the same click twice uses the credit once
    assert await eventually(lambda: "payment_applied" in [e.kind for e in h.events(other["id"])])
    stored = (await h.get(f"/v1/invoices/{other['id']}")).json()
    assert (stored["status"], stored["balance_minor"]) == ("open", 20_000)
    credit = (await h.get(f"/v1/customers/{customer_id}/credit")).json()
    assert credit["balances"] == {}
    assert [(e["kind"], e["amount_minor"]) for e in credit["entries"]] == [
        ("overpayment", 30_000),
        ("applied", -30_000),
    ]
    more = await h.http.post(
        f"/v1/customers/{customer_id}/credit/apply",
        json={"invoice_id": other["id"], "amount_minor": 1},
        headers=h.as_role("specialist"),
    )
    assert more.status_code == 409
    assert "has 0 EUR of credit" in error_of(more)


async def test_credit_cannot_pay_another_customers_invoice_or_more_than_the_balance(
    h: Harness,
) -> None:
    c = await new_case(h, amount=10_000)
    await paid(c, 60_000)
    await status_becomes(c, "paid")
    customer_id = c.inv["customer_id"]
    stranger = await h.customer()
    theirs = await h.invoice(stranger["id"], amount_minor=5_000)
    ours = await h.invoice(customer_id, amount_minor=5_000)
    cases = [
        ({"invoice_id": theirs["id"], "amount_minor": 1_000}, 422, "belongs to another customer"),
        ({"invoice_id": ours["id"], "amount_minor": 6_000}, 422, "exceeds the invoice's open"),
        ({"invoice_id": ours["id"], "amount_minor": -1}, 422, "amount_minor"),
    ]
    for body, code, message in cases:
        resp = await h.post(f"/v1/customers/{customer_id}/credit/apply", body)
        assert resp.status_code == code, resp.text
        assert message in resp.text
    assert (await h.get(f"/v1/customers/{customer_id}")).json()["credit"] == {"EUR": 50_000}


# -- refunds and chargebacks ------------------------------------------------------------------


async def test_refund_of_a_paid_invoice_reopens_it_and_dunning_goes_on(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    await c.sleep_until(c.at(2))  # before_due and first_late_day sent
    assert c.steps() == ["before_due", "first_late_day"]
    await paid(c, 120_000)
    await status_becomes(c, "paid")
    back = await paid(c, 120_000, type="chargeback")
    assert back["status"] == "reopened"
    inv = await status_becomes(c, "open")
    assert inv["balance_minor"] == 120_000
    assert inv["closed_at"] is None
    kinds = c.kinds()
    assert kinds[-2:] == ["payment_reversed", "reopened"] or kinds[-3:-1] == [
        "payment_reversed",
        "reopened",
    ]
    # Dunning goes on where it stood: late_7 is next, not a resend of earlier steps.
    await c.sleep_until(c.at(7, hour=10))
    assert c.steps() == ["before_due", "first_late_day", "late_7"]
    late_7 = c.h.outbox(c.id)[-1]
    assert "refunded or charged back" in late_7.body
    # Paid again after the chargeback: closed again, the reversal counted once.
    await paid(c, 120_000)
    inv = await status_becomes(c, "paid")
    assert inv["balance_minor"] == 0
    with Session(h.engine) as s:
        kinds_of = [(p.kind, p.amount_minor) for p in s.exec(select(Payment)).all()]
    assert kinds_of == [("payment", 120_000), ("chargeback", -120_000), ("payment", 120_000)]


async def test_partial_refund_of_an_open_invoice_raises_the_balance(h: Harness) -> None:
    c = await new_case(h)
    await paid(c, 70_000)
    assert await eventually(lambda: "payment_applied" in c.kinds())
    ack = await paid(c, 20_000, type="refund")
    assert ack["status"] == "accepted"
    assert await eventually(lambda: "payment_reversed" in c.kinds())
    inv = await c.get()
    assert (inv["status"], inv["balance_minor"]) == ("open", 70_000)
    reversed_ = next(e for e in h.events(c.id) if e.kind == "payment_reversed")
    assert reversed_.data == {
        "payment_id": reversed_.data["payment_id"],
        "amount_minor": 20_000,
        "balance_before": 50_000,
        "balance_after": 70_000,
        "kind": "refund",
    }


async def test_reversal_never_raises_the_balance_above_the_invoice_amount(h: Harness) -> None:
    c = await new_case(h)
    await paid(c, 10_000)
    assert await eventually(lambda: "payment_applied" in c.kinds())
    await paid(c, 50_000, type="refund")
    assert await eventually(lambda: "payment_reversed" in c.kinds())
    assert (await c.get())["balance_minor"] == 120_000


# -- early-payment discount -------------------------------------------------------------------


async def discount_case(h: Harness) -> Case:
    now = await h.env.get_current_time()
    cust = await h.customer()
    due = now.date() + timedelta(days=30)
    inv = await h.invoice(
        cust["id"],
        amount_minor=100_000,
        issued_on=now.date().isoformat(),
        due_date=due.isoformat(),
        discount_percent="2.00",
        discount_days=10,
    )
    return Case(h, inv, now, due)


async def test_payment_inside_the_discount_window_settles_the_invoice(h: Harness) -> None:
    c = await discount_case(h)
    discount = c.inv["discount"]
    assert (discount["amount_minor"], discount["pay_minor"], discount["days"]) == (
        2_000,
        98_000,
        10,
    )
    until = datetime.fromisoformat(discount["until"])
    assert until == datetime.combine(
        c.now.date() + timedelta(days=10), datetime.max.time().replace(microsecond=0), UTC
    )
    await paid(c, 98_000, paid_at=(until - timedelta(hours=1)).isoformat())
    inv = await status_becomes(c, "paid")
    assert inv["balance_minor"] == 0
    applied = next(e for e in h.events(c.id) if e.kind == "payment_applied")
    assert applied.data["discount_minor"] == 2_000


async def test_payment_after_the_discount_window_leaves_the_discount_open(h: Harness) -> None:
    c = await discount_case(h)
    until = datetime.fromisoformat(c.inv["discount"]["until"])
    await paid(c, 98_000, paid_at=(until + timedelta(seconds=1)).isoformat())
    assert await eventually(lambda: "payment_applied" in c.kinds())
    inv = await c.get()
    assert (inv["status"], inv["balance_minor"]) == ("open", 2_000)


async def test_pre_due_reminder_mentions_the_discount_and_pay_link(h: Harness) -> None:
    now = await h.env.get_current_time()
    cust = await h.customer()
    inv = await h.invoice(
        cust["id"],
        amount_minor=100_000,
        issued_on=now.date().isoformat(),
        due_date=(now.date() + timedelta(days=5)).isoformat(),
        discount_percent="2.5",
        discount_days=4,
    )
    assert inv["payment_reference"] == payment_reference(inv["id"])
    token = h.settings.pay_token(inv["payment_reference"])
    assert inv["pay_url"] == f"http://127.0.0.1:8000/pay/{inv['payment_reference']}?t={token}"
    c = Case(h, inv, now, now.date() + timedelta(days=5))
    await c.sleep_until(c.at(-3, hour=10))
    [message] = h.outbox(c.id)
    last_day = (now.date() + timedelta(days=4)).strftime("%B %-d, %Y")
    assert f"Pay €975.00 by {last_day} and keep the early-payment discount of 2.5% (€25.00)" in (
        message.body
    )
    assert f"Pay online: {inv['pay_url']}" in message.body
    assert f"Bank transfer reference: {inv['payment_reference']}" in message.body


async def test_discount_terms_are_validated(h: Harness) -> None:
    cust = await h.customer()
    today = (await h.env.get_current_time()).date().isoformat()
    base: dict[str, Any] = {
        "external_id": "D-1",
        "number": "D-1",
        "customer_id": cust["id"],
        "amount_minor": 1000,
        "currency": "EUR",
        "issued_on": today,
        "due_date": today,
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"discount_percent": "2"}, "give both discount_percent and discount_days"),
        ({"discount_percent": "100", "discount_days": 5}, "less than 100"),
        ({"discount_percent": "2.555", "discount_days": 5}, "decimal places"),
        ({"discount_percent": "2", "discount_days": -1}, "greater than or equal to 0"),
    ]
    for extra, message in cases:
        resp = await h.post("/v1/invoices", base | extra)
        assert resp.status_code == 422, (extra, resp.text)
        assert message in resp.text


# -- another currency -------------------------------------------------------------------------


async def test_payment_in_another_currency_waits_in_the_queue(h: Harness) -> None:
    c = await new_case(h)
    ack = await paid(c, 100, currency="USD")
    assert ack["status"] == "unmatched"
    again = await paid(c, 100, currency="USD", event_id="evt-usd")
    same = await paid(c, 100, currency="USD", event_id="evt-usd")
    assert again["line_id"] == same["line_id"]  # the same event twice is queued once
    queue = (await h.get("/v1/unmatched-payments")).json()
    assert queue["total"] == 2
    line_id = ack["line_id"]
    refused = await h.post(
        f"/v1/unmatched-payments/{line_id}/apply",
        {"allocations": [{"invoice_id": c.id, "amount_minor": 100}]},
    )
    assert refused.status_code == 422
    assert "is in EUR, the receipt in USD" in error_of(refused)
    gone = await h.post(f"/v1/unmatched-payments/{line_id}/dismiss", {"note": "sent back"})
    assert gone.status_code == 200
    assert (gone.json()["status"], gone.json()["note"]) == ("dismissed", "sent back")
    twice = await h.post(f"/v1/unmatched-payments/{line_id}/dismiss", {"note": "again"})
    assert twice.status_code == 409
    assert (await c.get())["balance_minor"] == 120_000
    with Session(h.engine) as s:
        assert s.exec(select(CreditEntry)).all() == []


async def test_the_pay_link_opens_our_payment_page_and_nothing_without_its_signature(
    h: Harness,
) -> None:
    cust = await h.customer(locale="de")
    inv = await h.invoice(cust["id"], amount_minor=123_456)
    page = await h.http.get(inv["pay_url"].removeprefix("http://127.0.0.1:8000"))
    assert page.status_code == 200
    assert "1.234,56" in page.text and inv["number"] in page.text
    assert " ".join(inv["payment_reference"][i : i + 4] for i in range(0, 8, 4)) in page.text
    reference = inv["payment_reference"]
    assert (await h.http.get(f"/pay/{reference}")).status_code == 404
    assert (await h.http.get(f"/pay/{reference}?t=0000")).status_code == 404
    guessed = payment_reference(inv["id"] + 1)
    assert (await h.http.get(f"/pay/{guessed}?t=0000")).status_code == 404


async def test_a_webhook_leaves_the_event_loop_free_while_it_writes(h: Harness) -> None:
    """The webhook's database work runs in a thread (issue 16, bench/storm.py): on the API's
    event loop, a burst of webhooks kept every other request of the process waiting. The
    payment's insert is made slow here; a ticker on the loop must not notice."""
    cust = await h.customer()
    inv = await h.invoice(cust["id"], amount_minor=50_000)

    sent = asyncio.ensure_future(signed_payment(h, invoice_id=inv["id"], amount_minor=20_000))
    stall = await longest_loop_stall(h.engine, ("INSERT INTO PAYMENTS ",), sent)
    resp = sent.result()
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "accepted"
    assert stall < STALL / 2, f"the event loop stood still for {stall:.2f} s"
