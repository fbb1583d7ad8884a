"""The worklist's priority (arflow/invoices/priority.py): expected recovery = open balance x the
probability of payment from the customer's record, the invoice's age and a dispute; call tasks
say whether a call may be placed now. The API runs in-process without Temporal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.engine import Engine
from sqlmodel import Session

from arflow.invoices import priority, tasks, worklist
from arflow.policies import service as policies
from models import Customer, Invoice
from tests.test_tasks_api import Api, api  # noqa: F401 - the fixture

NOW = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)


def test_probability_follows_the_documented_formula() -> None:
    assert priority.probability(0, 0, 0, 0, False)[0] == Decimal("0.80")  # a new customer
    assert priority.probability(1, 0, 0, 0, False)[0] == Decimal("0.87")
    assert priority.probability(0, 1, 0, 0, False)[0] == Decimal("0.53")
    assert priority.probability(8, 0, 0, 180, False)[0] == Decimal("0.48")  # 0.96 halved
    assert priority.probability(0, 0, 2, 0, False)[0] == Decimal("0.65")  # 0.8 x 0.81
    assert priority.probability(0, 0, 9, 0, False)[0] == Decimal("0.52")  # at most 4 count
    assert priority.probability(0, 0, 0, 0, True)[0] == Decimal("0.40")
    p, words = priority.probability(3, 1, 1, 30, True)
    assert words == [
        "paid 3 of 4 settled invoices (77 %)",
        "1 broken promise(s) or plan(s)",
        "30 days overdue",
        "disputed",
    ]


def _invoice(
    engine: Engine,
    customer_id: int,
    balance: int,
    overdue_days: int,
    status: str = "open",
) -> int:
    with Session(engine) as s:
        policy = policies.ensure_default_policy(s)
        assert policy.id is not None
        due = NOW - timedelta(days=overdue_days)
        row = Invoice(
            external_id=f"INV-{uuid.uuid4().hex[:8]}",
            number=f"N-{uuid.uuid4().hex[:6]}",
            currency="EUR",
            issued_on=due.date() - timedelta(days=30),
            due_date=due.date(),
            due_at=due,
            customer_id=customer_id,
            policy_id=policy.id,
            amount_minor=balance,
            balance_minor=balance,
            status=status,
            request_hash="x" * 64,
        )
        s.add(row)
        s.commit()
        assert row.id is not None
        return row.id


def _customer(engine: Engine, name: str, timezone: str = "UTC", broken: int = 0) -> int:
    with Session(engine) as s:
        row = Customer(
            external_id=f"C-{uuid.uuid4().hex[:8]}",
            name=name,
            timezone=timezone,
            broken_promises=broken,
        )
        s.add(row)
        s.commit()
        assert row.id is not None
        return row.id


def _task(engine: Engine, invoice_id: int, kind: str = "contact_failed", **data: object) -> int:
    with Session(engine) as s:
        task = tasks.new_task(s, invoice_id, kind, dict(data), due_at=NOW)
        s.commit()
        assert task.id is not None
        return task.id


def test_the_worklist_orders_by_expected_recovery_and_says_why(api: Api) -> None:  # noqa: F811
    engine = api.engine
    reliable = _customer(engine, "Reliable AG")
    for _ in range(4):
        _invoice(engine, reliable, 1_000, 60, status="paid")
    shaky = _customer(engine, "Shaky Ltd", broken=3)
    _invoice(engine, shaky, 1_000, 60, status="written_off")
    small = _task(engine, _invoice(engine, reliable, 50_000, 5))  # 0.933 / 1.028 = 0.91
    big_shaky = _task(engine, _invoice(engine, shaky, 200_000, 300))  # low p, big balance
    big_reliable = _task(engine, _invoice(engine, reliable, 200_000, 10))
    disputed = _task(engine, _invoice(engine, reliable, 200_000, 10, status="disputed"))

    with Session(engine) as s:
        items, total = worklist.list_tasks(s, status="open", sort="priority", now=NOW)
    assert total == 4
    order = [i.id for i in items]
    assert order == [big_reliable, disputed, small, big_shaky]
    first = items[0].priority
    assert first is not None
    assert (first.balance_minor, first.currency, first.probability) == (
        200_000,
        "EUR",
        Decimal("0.88"),  # (4 + 1.6) / 6 = 0.933, / (1 + 10/180)
    )
    assert first.expected_minor == 176_000
    assert first.why == (
        "88 % likely to be paid: paid 4 of 4 settled invoices (93 %), 10 days overdue"
    )
    shaky_row = items[-1].priority
    assert shaky_row is not None and "3 broken promise(s)" in shaky_row.why
    # The default order is by due date, and every row still carries its priority.
    with Session(engine) as s:
        by_due, _ = worklist.list_tasks(s, status="open", now=NOW)
    assert all(i.priority is not None for i in by_due)
    assert sorted(i.id for i in by_due) == sorted(order)


async def test_priority_over_http_pages_and_refuses_a_bad_sort(api: Api) -> None:  # noqa: F811
    engine = api.engine
    cust = _customer(engine, "Paging GmbH")
    ids = [_task(engine, _invoice(engine, cust, amount, 1)) for amount in (1_000, 9_000, 5_000)]
    resp = await api.get(status="open", sort="priority", limit=2)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["total"] == 3
    assert [i["id"] for i in body["items"]] == [ids[1], ids[2]]
    second = await api.get(status="open", sort="priority", limit=2, offset=2)
    assert [i["id"] for i in second.json()["items"]] == [ids[0]]
    bad = await api.get(sort="loudest")
    assert bad.status_code == 422
    assert "sort" in bad.text


def test_a_call_task_says_whether_a_call_may_be_placed_now(api: Api) -> None:  # noqa: F811
    engine = api.engine
    # 14:00 UTC is 23:00 in Tokyo: outside the default policy's 08:00-21:00.
    night = _customer(engine, "Tokyo KK", timezone="Asia/Tokyo")
    day = _customer(engine, "Berlin GmbH", timezone="Europe/Berlin")
    late = _task(engine, _invoice(engine, night, 10_000, 3), kind="call")
    fine = _invoice(engine, day, 10_000, 3)
    talked = (NOW - timedelta(days=2)).isoformat()
    _task(engine, fine, kind="call", reached_at=talked)  # a conversation two days ago
    cooled = _task(engine, fine, kind="call")
    other = _task(engine, _invoice(engine, day, 10_000, 3), kind="call")

    with Session(engine) as s:
        items = {i.id: i for i in worklist.list_tasks(s, kind="call", now=NOW)[0]}
    night_call = items[late].call
    assert night_call is not None and night_call.allowed_now is False
    assert night_call.customer_local_time == "Fri 23:00 (Asia/Tokyo)"
    assert night_call.why == "outside the customer's contact hours"
    assert night_call.allowed_from == datetime(2026, 12, 4, 23, 0, tzinfo=UTC)  # 08:00 Tokyo
    cooling = items[cooled].call
    assert cooling is not None and cooling.allowed_now is False
    assert cooling.why == "a conversation took place recently"  # the default cooldown: P7D
    assert cooling.allowed_from == NOW + timedelta(days=5)
    allowed = items[other].call
    assert allowed is not None and allowed.allowed_now is True and allowed.why is None
    assert allowed.customer_local_time == "Fri 15:00 (Europe/Berlin)"
    assert items[late].priority is not None
