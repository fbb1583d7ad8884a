"""One payment plan across several invoices of one customer: the oldest-first allocation on its
own (``arflow/invoices/account_plan.py``), then ``POST /v1/customers/{id}/payment-plan`` on the
time-skipping server (real worker; SQLite and PostgreSQL for the main paths)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from arflow.errors import Invalid
from arflow.invoices import account_actions
from arflow.invoices.account_plan import Instalment, Owing, allocate
from models import CustomerEvent, Invoice, PaymentPlan
from tests.conftest import Harness, harness
from tests.test_api import error_of, eventually
from tests.webhook import signed_payment

D0 = date(2027, 3, 1)


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def parts(shares: Any) -> dict[int, list[tuple[int, int]]]:
    """Each invoice's instalments as (day number, amount)."""
    return {
        s.invoice_id: [((i.due_date - D0).days, i.amount_minor) for i in s.installments]
        for s in shares
    }


# -- the allocation (pure) ----------------------------------------------------------------


def test_an_instalment_larger_than_the_oldest_invoice_is_split_on_the_same_date() -> None:
    older = Owing(7, day(-30), 100_00, 12)
    newer = Owing(3, day(-5), 150_00, 12)
    plan = [Instalment(day(10), 60_00), Instalment(day(40), 80_00), Instalment(day(70), 110_00)]
    shares = allocate([newer, older], plan)  # given newest first: ordered by due date
    assert [s.invoice_id for s in shares] == [7, 3]
    assert parts(shares) == {7: [(10, 60_00), (40, 40_00)], 3: [(40, 40_00), (70, 110_00)]}


def test_instalments_that_fit_exactly_stay_whole() -> None:
    a, b = Owing(1, day(0), 100_00, 12), Owing(2, day(1), 150_00, 12)
    shares = allocate([a, b], [Instalment(day(5), 100_00), Instalment(day(9), 150_00)])
    assert parts(shares) == {1: [(5, 100_00)], 2: [(9, 150_00)]}


def test_one_invoice_takes_every_instalment() -> None:
    shares = allocate([Owing(4, day(0), 300, 12)], [Instalment(day(d), 100) for d in (1, 2, 3)])
    assert parts(shares) == {4: [(1, 100), (2, 100), (3, 100)]}


def test_same_due_date_goes_by_id_and_one_instalment_can_pay_three_invoices() -> None:
    invoices = [Owing(9, day(0), 10, 12), Owing(5, day(0), 20, 12), Owing(6, day(2), 30, 12)]
    shares = allocate(invoices, [Instalment(day(1), 45), Instalment(day(3), 15)])
    assert parts(shares) == {5: [(1, 20)], 9: [(1, 10)], 6: [(1, 15), (3, 15)]}


@settings(max_examples=200, deadline=None)
@given(
    balances=st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=10**10), min_size=0, max_size=15),
)
def test_no_cent_is_lost_and_each_invoice_gets_its_balance(
    balances: list[int], cuts: list[int]
) -> None:
    total = sum(balances)
    points = sorted({c % total for c in cuts} - {0})
    amounts = [b - a for a, b in zip([0, *points], [*points, total], strict=True)]
    plan = [Instalment(day(n), a) for n, a in enumerate(amounts)]
    invoices = [Owing(i + 1, day(-i), b, 120) for i, b in enumerate(balances)]
    shares = allocate(invoices, plan)
    by_id = {s.invoice_id: s for s in shares}
    for inv in invoices:
        got = by_id[inv.invoice_id].installments
        assert sum(i.amount_minor for i in got) == inv.balance_minor
        assert all(i.amount_minor > 0 for i in got)
        assert all(a.due_date < b.due_date for a, b in zip(got, got[1:], strict=False))
    for item in plan:  # every instalment is exactly its parts
        assert item.amount_minor == sum(
            i.amount_minor for s in shares for i in s.installments if i.due_date == item.due_date
        )
    # oldest first: an invoice is paid off before any part goes to a newer one
    firsts = [s.installments[0].due_date for s in shares]
    lasts = [s.installments[-1].due_date for s in shares]
    assert all(last <= first for last, first in zip(lasts, firsts[1:], strict=False))


def test_more_instalments_than_an_invoices_policy_allows_names_it() -> None:
    a, b = Owing(1, day(0), 100, 2), Owing(2, day(1), 100, 12)
    plan = [Instalment(day(d), 40) for d in (1, 2, 3, 4, 5)]
    with pytest.raises(Invalid) as err:
        allocate([a, b], plan)
    assert "invoice 1 would get 3 instalments" in err.value.message
    assert "at most 2" in err.value.message
    ok = allocate([Owing(1, day(0), 80, 2), Owing(2, day(1), 120, 12)], plan)
    assert parts(ok) == {1: [(1, 40), (2, 40)], 2: [(3, 40), (4, 40), (5, 40)]}


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ([(1, 100), (2, 50)], "sum to 150, the invoices' open balance is 200"),
        ([(2, 100), (1, 100)], "strictly increasing"),
        ([(1, 100), (1, 100)], "strictly increasing"),
        ([(1, 200), (2, 0)], "greater than 0"),
    ],
)
def test_bad_plans_are_refused(plan: list[tuple[int, int]], words: str) -> None:
    invoices = [Owing(1, day(0), 120, 12), Owing(2, day(1), 80, 12)]
    with pytest.raises(Invalid) as err:
        allocate(invoices, [Instalment(day(d), a) for d, a in plan])
    assert words in err.value.message


# -- the API --------------------------------------------------------------------------------


@pytest.fixture
async def hdb(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The usual harness on SQLite and PostgreSQL in turn."""
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


async def account(
    h: Harness, amounts: list[int], currency: str = "EUR"
) -> tuple[int, list[dict[str, Any]], date]:
    """A customer with one invoice per amount, the first due soonest (5, 20, 35... days)."""
    today = (await h.env.get_current_time()).date()
    cust = await h.customer()
    invoices = []
    for n, amount in enumerate(amounts):
        invoices.append(
            await h.invoice(
                cust["id"],
                amount_minor=amount,
                currency=currency,
                issued_on=today.isoformat(),
                due_date=(today + timedelta(days=5 + 15 * n)).isoformat(),
            )
        )
    return cust["id"], invoices, today


def items(today: date, plan: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {"due_date": (today + timedelta(days=d)).isoformat(), "amount_minor": a} for d, a in plan
    ]


def events(h: Harness, customer_id: int, kind: str) -> list[CustomerEvent]:
    with Session(h.engine) as s:
        stmt = select(CustomerEvent).where(
            CustomerEvent.customer_id == customer_id, CustomerEvent.kind == kind
        )
        return list(s.exec(stmt.order_by(col(CustomerEvent.id))).all())


def plans(h: Harness, invoice_ids: list[int]) -> list[PaymentPlan]:
    with Session(h.engine) as s:
        stmt = select(PaymentPlan).where(col(PaymentPlan.invoice_id).in_(invoice_ids))
        return list(s.exec(stmt).all())


async def test_three_instalments_across_two_invoices_oldest_first(hdb: Harness) -> None:
    h = hdb
    customer_id, (old, new), today = await account(h, [100_000, 80_000])
    plan = items(today, [(10, 60_000), (40, 60_000), (70, 60_000)])
    resp = await h.post(
        f"/v1/customers/{customer_id}/payment-plan", {"installments": plan, "note": "call 12/3"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["currency"], body["total_minor"], body["note"]) == ("EUR", 180_000, "call 12/3")
    got = {
        p["invoice_id"]: [(i["due_date"], i["amount_minor"]) for i in p["installments"]]
        for p in body["invoices"]
    }
    d = [(today + timedelta(days=n)).isoformat() for n in (10, 40, 70)]
    assert [p["invoice_id"] for p in body["invoices"]] == [old["id"], new["id"]]
    assert got == {
        old["id"]: [(d[0], 60_000), (d[1], 40_000)],
        new["id"]: [(d[1], 20_000), (d[2], 60_000)],
    }
    assert [p["invoice"]["hold"] for p in body["invoices"]] == ["plan", "plan"]
    # each invoice's own plan shows its part
    for inv in (old, new):
        shown = (await h.get(f"/v1/invoices/{inv['id']}/payment-plan")).json()
        assert shown["status"] == "active" and shown["note"] == "call 12/3"
        assert [(i["due_date"], i["amount_minor"]) for i in shown["installments"]] == got[inv["id"]]
    (agreed,) = events(h, customer_id, "account_plan_agreed")
    assert agreed.data["invoice_ids"] == [old["id"], new["id"]]
    assert agreed.data["installments"][str(new["id"])][0] == {
        "due_date": d[1],
        "amount_minor": 20_000,
    }
    assert agreed.data["note"] == "call 12/3" and agreed.actor.startswith("specialist")
    # the first instalment paid on the oldest invoice: it stays on its plan
    await signed_payment(h, invoice_id=old["id"], amount_minor=60_000)

    async def first_paid() -> bool:
        shown = (await h.get(f"/v1/invoices/{old['id']}/payment-plan")).json()
        return [(i["state"], i["paid_minor"]) for i in shown["installments"]] == [
            ("paid", 60_000),
            ("pending", 0),
        ]

    for _ in range(200):
        if await first_paid():
            break
        await asyncio.sleep(0.05)
    assert await first_paid()
    now = (await h.get(f"/v1/invoices/{old['id']}")).json()
    assert (now["status"], now["hold"], now["balance_minor"]) == ("open", "plan", 40_000)
    assert (await h.get(f"/v1/invoices/{old['id']}/payment-plan")).json()["status"] == "active"


async def test_bad_requests_agree_nothing(hdb: Harness) -> None:
    h = hdb
    customer_id, (a, b, disputed), today = await account(h, [50_000, 30_000, 20_000])
    other_id, (foreign,), _ = await account(h, [10_000])
    url = f"/v1/customers/{customer_id}/payment-plan"
    dispute = await h.post(f"/v1/invoices/{disputed['id']}/disputes", {"reason": "wrong price"})
    assert dispute.status_code == 200, dispute.text
    ab = [a["id"], b["id"]]

    # every open invoice not disputed (a and b: 80,000) is the default
    mismatch = await h.post(url, {"installments": items(today, [(10, 50_000), (20, 50_000)])})
    assert mismatch.status_code == 422, mismatch.text
    assert "sum to 100000, the invoices' open balance is 80000" in error_of(mismatch)
    past = await h.post(url, {"installments": items(today, [(-1, 40_000), (20, 40_000)])})
    assert past.status_code == 422, past.text
    assert "in the past" in error_of(past)
    ok_items = items(today, [(10, 40_000), (20, 40_000)])
    theirs = await h.post(url, {"invoice_ids": [a["id"], foreign["id"]], "installments": ok_items})
    assert theirs.status_code == 422, theirs.text
    assert f"invoice {foreign['id']} is not an invoice of customer {customer_id}" in error_of(
        theirs
    )
    named = await h.post(
        url, {"invoice_ids": [*ab, disputed["id"]], "installments": items(today, [(9, 100_000)])}
    )
    assert named.status_code == 409, named.text
    assert f"invoice {disputed['id']} is disputed" in error_of(named)
    unknown = await h.post(url, {"invoice_ids": [*ab, 2**31 - 1], "installments": ok_items})
    assert unknown.status_code == 422, unknown.text
    too_many = items(today, [(d, 1_000) for d in range(1, 80)] + [(90, 1_000)])
    too_many[-1]["amount_minor"] = 80_000 - 79 * 1_000
    many = await h.post(url, {"invoice_ids": ab, "installments": too_many})
    assert many.status_code == 422, many.text
    assert f"invoice {a['id']} would get" in error_of(many)

    # a second currency: without invoice_ids the specialist must pick
    usd = await h.invoice(
        customer_id, currency="USD", amount_minor=5_000, due_date=today.isoformat()
    )
    pick = await h.post(url, {"installments": ok_items})
    assert pick.status_code == 422, pick.text
    assert "several currencies (EUR, USD)" in error_of(pick)
    assert "invoice_ids" in error_of(pick)
    mixed = await h.post(
        url, {"invoice_ids": [a["id"], usd["id"]], "installments": items(today, [(9, 55_000)])}
    )
    assert mixed.status_code == 422, mixed.text
    assert "several currencies" in error_of(mixed)

    # nothing agreed anywhere, nothing on the customer's timeline
    assert plans(h, [*ab, disputed["id"], foreign["id"], usd["id"]]) == []
    for inv in (a, b):
        assert (await h.get(f"/v1/invoices/{inv['id']}")).json()["hold"] is None
    assert events(h, customer_id, "account_plan_agreed") == []
    assert events(h, other_id, "account_plan_agreed") == []
    # and with the right invoices named it is agreed
    good = await h.post(url, {"invoice_ids": ab, "installments": ok_items})
    assert good.status_code == 200, good.text
    assert len(plans(h, ab)) == 2


async def test_roles_and_huge_ids(h: Harness) -> None:
    customer_id, (inv,), today = await account(h, [10_000])
    body = {"installments": items(today, [(5, 10_000)])}
    viewer = await h.post(f"/v1/customers/{customer_id}/payment-plan", body, role="viewer")
    assert viewer.status_code == 403
    huge = await h.post(f"/v1/customers/{2**63}/payment-plan", body)
    assert huge.status_code == 422, huge.text
    assert "customer_id" in huge.text
    huge_ids = await h.post(
        f"/v1/customers/{customer_id}/payment-plan", body | {"invoice_ids": [2**63]}
    )
    assert huge_ids.status_code == 422, huge_ids.text
    assert "invoice_ids" in huge_ids.text
    nobody = await h.post("/v1/customers/2147483647/payment-plan", body)
    assert nobody.status_code == 404, nobody.text
    assert plans(h, [inv["id"]]) == []


async def test_an_invoice_paid_meanwhile_undoes_the_plans_agreed_before_it(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer_id, (old, new), today = await account(h, [60_000, 40_000])
    real = account_actions.actions.agree_plan

    async def racing(session: Any, client: Any, settings: Any, invoice_id: int, *a: Any) -> Any:
        if invoice_id == new["id"]:  # paid in full between the checks and its update
            await signed_payment(h, invoice_id=new["id"], amount_minor=40_000)

            def paid() -> bool:
                with Session(h.engine) as s:
                    row = s.get(Invoice, new["id"])
                    return row is not None and row.status == "paid"

            assert await eventually(paid)
        return await real(session, client, settings, invoice_id, *a)

    monkeypatch.setattr(account_actions.actions, "agree_plan", racing)
    resp = await h.post(
        f"/v1/customers/{customer_id}/payment-plan",
        {"installments": items(today, [(10, 50_000), (30, 50_000)]), "note": "x"},
    )
    assert resp.status_code == 409, resp.text
    message = error_of(resp)
    assert f"invoice {new['id']} refused" in message and "paid" in message
    assert resp.json()["error"]["details"]["cancelled"] == [old["id"]]
    # the oldest invoice's plan, agreed first, is cancelled again: it is off the plan
    shown = (await h.get(f"/v1/invoices/{old['id']}/payment-plan")).json()
    assert shown["status"] == "cancelled"
    cancelled = [e for e in h.events(old["id"]) if e.kind == "plan_cancelled"]
    assert len(cancelled) == 1 and cancelled[0].data["reason"].startswith("account plan failed:")
    (failed,) = events(h, customer_id, "account_plan_failed")
    assert failed.data["invoice_id"] == new["id"] and failed.data["cancelled"] == [old["id"]]
    assert events(h, customer_id, "account_plan_agreed") == []
