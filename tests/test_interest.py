"""Late charges posted by the workflow over a year: EU B2B statutory interest (ECB 4.5% + 8
points = 12.5% a year, simple, ACT/365) and the EUR 40 compensation, with a partial payment in
between; the figures are checked against the hand computation (time-skipping server)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction

from sqlmodel import Session, col, select

from models import InvoiceCharge
from tests.conftest import Harness
from tests.webhook import signed_payment


def add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return date(d.year + y, m + 1, min(d.day, 28))  # due days below 29 in this test


def cents_half_up(x: Fraction) -> int:
    return int((x * 2 + 1) // 2)


def charges(h: Harness, invoice_id: int) -> list[InvoiceCharge]:
    with Session(h.engine) as s:
        return list(
            s.exec(
                select(InvoiceCharge)
                .where(InvoiceCharge.invoice_id == invoice_id)
                .order_by(col(InvoiceCharge.id))
            ).all()
        )


async def test_statutory_interest_over_a_year_with_a_partial_payment(h: Harness) -> None:
    pol = await h.policy(
        send_at="09:00",
        escalate_after="P30D",
        steps=[{"key": "late_7", "offset": "P7D", "template": "reminder_overdue"}],
        charges={"preset": "eu_b2b", "ecb_reference_rate_pct": "4.5"},
    )
    cust = await h.customer()
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=10)
    if due.day > 28:
        due += timedelta(days=5)  # keep month-ends out of the hand computation
    inv = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        issued_on=now.date().isoformat(),
        due_date=due.isoformat(),
        amount_minor=100_000,
    )

    async def sleep_until(day: date, hour: int = 12) -> None:
        instant = datetime.combine(day, time(hour), UTC)
        await h.env.sleep(max(instant - await h.env.get_current_time(), timedelta(0)))

    # 400.00 paid on day 100 after the due date: days 1-99 earn on 1,000.00, from day 100
    # on 600.00.
    pay_day = due + timedelta(days=100)
    await sleep_until(pay_day, 10)
    resp = await signed_payment(
        h, invoice_id=inv["id"], amount_minor=40_000, paid_at=f"{pay_day.isoformat()}T10:00:00Z"
    )
    assert resp.status_code == 200, resp.text

    year_end = add_months(due, 12)
    await sleep_until(year_end + timedelta(days=1))
    rows = charges(h, inv["id"])
    assert [(r.kind, r.amount_minor) for r in rows if r.kind == "compensation"] == [
        ("compensation", 4000)
    ]
    interest = [r for r in rows if r.kind == "interest"]
    assert interest[-1].period_to == year_end
    days_full = 99
    days_rest = (year_end - pay_day).days + 1
    rate = Fraction(125, 1000)
    expected = cents_half_up(
        Fraction(100_000) * rate * days_full / 365 + Fraction(60_000) * rate * days_rest / 365
    )
    assert sum(r.amount_minor for r in interest) == expected
    assert all(r.amount_minor > 0 for r in interest)
    assert all(r.basis["rate_pct"] == "12.5" for r in interest)
    # Postings: the reminder on day 7, the agency hand-off on day 30, then every month.
    ends = [r.period_to for r in interest if r.period_to is not None]
    assert len(ends) == len(interest)
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    assert due + timedelta(days=7) in ends
    assert [add_months(due, n) for n in range(1, 13)] == [e for e in ends if e.day == due.day][-12:]
    # Each posting is the rounded running total less what was charged before (no drift).
    running = 0
    for r in interest:
        assert r.basis["charged_before_minor"] == running
        running += r.amount_minor
        assert r.basis["accrued_total_minor"] == running

    # The rest is paid 10 days later: interest up to that day, then nothing more.
    last_day = year_end + timedelta(days=10)
    await sleep_until(last_day, 10)
    resp = await signed_payment(
        h, invoice_id=inv["id"], amount_minor=60_000, paid_at=f"{last_day.isoformat()}T10:00:00Z"
    )
    assert resp.status_code == 200, resp.text
    await sleep_until(last_day + timedelta(days=40))
    assert (await h.get(f"/v1/invoices/{inv['id']}")).json()["status"] == "paid"
    interest = [r for r in charges(h, inv["id"]) if r.kind == "interest"]
    final = cents_half_up(
        Fraction(100_000) * rate * days_full / 365
        + Fraction(60_000) * rate * ((last_day - pay_day).days) / 365
    )
    assert sum(r.amount_minor for r in interest) == final
    assert interest[-1].period_to == last_day
    # The invoice's own amount never changed; the charges are listed beside it.
    listed = (await h.get(f"/v1/invoices/{inv['id']}/charges")).json()
    assert listed["invoice_amount_minor"] == 100_000
    assert listed["charged_minor"] == final + 4000


async def fee_case(h: Harness) -> dict[str, object]:
    """An invoice of 1,000.00 whose first reminder (due + 1 min) charged a 15.00 fee."""
    pol = await h.policy(
        escalate_after="P30D",
        steps=[{"key": "nudge", "offset": "PT1M", "template": "reminder_overdue"}],
        charges={"stage_fees_minor": {"nudge": 1500}},
    )
    cust = await h.customer()
    due_at = (await h.env.get_current_time()) + timedelta(minutes=1)
    inv = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        amount_minor=100_000,
        due_at=due_at.isoformat(),
        due_date=due_at.date().isoformat(),
    )
    await h.env.sleep(timedelta(minutes=3))
    assert [(r.kind, r.amount_minor) for r in charges(h, inv["id"])] == [("fee", 1500)]
    return inv


async def credit(h: Harness, customer_id: object) -> object:
    return (await h.get(f"/v1/customers/{customer_id}")).json()["credit"]


async def test_paying_the_total_due_settles_the_charges_too(h: Harness) -> None:
    """The reminder asks for the balance plus the fee: paying that leaves nothing owed and no
    credit; what goes beyond is credit."""
    inv = await fee_case(h)
    paid = await signed_payment(
        h, invoice_id=inv["id"], amount_minor=102_000, paid_at=datetime.now(UTC).isoformat()
    )
    assert paid.status_code == 200, paid.text
    handle = h.client.get_workflow_handle(str(inv["workflow_id"]))
    assert (await handle.result())["status"] == "paid"
    listed = (await h.get(f"/v1/invoices/{inv['id']}/charges")).json()
    assert (listed["settled_minor"], listed["outstanding_minor"]) == (1500, 0)
    assert await credit(h, inv["customer_id"]) == {"EUR": 500}  # 1,020.00 - 1,000.00 - 15.00
    settled = next(e for e in h.events(int(str(inv["id"]))) if e.kind == "charges_settled")
    assert settled.data["settled_minor"] == 1500
    waive = await h.post(
        f"/v1/invoices/{inv['id']}/charges/{listed['charges'][0]['id']}/waive",
        {"reason": "goodwill"},
    )
    assert waive.status_code == 409 and "has been paid" in waive.text


async def test_a_fee_paid_after_the_invoice_settles_the_fee(h: Harness) -> None:
    inv = await fee_case(h)
    now = datetime.now(UTC).isoformat()
    paid = await signed_payment(h, invoice_id=inv["id"], amount_minor=100_000, paid_at=now)
    assert paid.status_code == 200, paid.text
    handle = h.client.get_workflow_handle(str(inv["workflow_id"]))
    assert (await handle.result())["status"] == "paid"
    listed = (await h.get(f"/v1/invoices/{inv['id']}/charges")).json()
    assert listed["outstanding_minor"] == 1500  # the invoice is paid, the fee is still owed
    fee = await signed_payment(h, invoice_id=inv["id"], amount_minor=1500, paid_at=now)
    assert fee.status_code == 200, fee.text
    listed = (await h.get(f"/v1/invoices/{inv['id']}/charges")).json()
    assert (listed["settled_minor"], listed["outstanding_minor"]) == (1500, 0)
    assert await credit(h, inv["customer_id"]) == {}
    after = next(e for e in h.events(int(str(inv["id"]))) if e.kind == "payment_after_close")
    assert after.data["credited_minor"] == 0
