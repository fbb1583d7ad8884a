"""Reports on a fixed data set written straight into the database (no Temporal): aging,
KPIs, the cash forecast, CSV and the 422s, on SQLite and PostgreSQL. Every figure is checked
against a literal worked out by hand (the arithmetic is in the comment next to it).

"Today" is fixed at Tuesday 2026-03-31 (ISO week 2026-W14, which starts Monday 2026-03-30);
the KPI period is March 2026 (31 days), its opening day 2026-02-28.

The data set (amounts in minor units; C1 Alpha segment key, C2 "=Beta Ltd" smb, C3 Gamma smb):

Invoices (issued, due, amount; dates in 2026 unless written in full):

- I1  C1 EUR ann  01-10 02-09 100000: paid, 40000 on 02-28 23:59:59 and 60000 on 03-10
- I2  C1 EUR ann  03-05 04-04  50000: open 50000
- I3  C2 EUR bob  2025-12-01 2025-12-31 80000: escalated 50000 (30000 paid 03-15, placed
  with an agency 03-20)
- I4  C2 EUR -    02-01 03-03  30000: disputed 30000 (dispute open since 03-05)
- I5  C1 EUR ann  03-02 03-16  20000: cancelled 03-04 (void)
- I6  C1 EUR ann  2025-10-01 2025-10-31 40000: credited 03-12 (upheld dispute, credit 40000)
- I7  C1 EUR ann  01-15 02-14  60000: open 50000, on a plan since 03-01 (10000 paid 03-20)
- I8  C3 USD bob  02-15 03-17  70000: open 70000, a promise of 30001 for 04-08
- I9  C3 USD bob  01-05 02-04  25000: paid 02-10
- I10 C2 USD bob  03-10 04-09  45000: paid 03-25 (+5000 on 03-28 kept as credit: unapplied)
- I11 C3 USD -    2025-11-01 2025-12-01 15000: written off 03-20 (placed 01-15)
- I12 C2 EUR bob  02-10 02-20  10000: open 10000 (paid 02-18, refunded 03-08)
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Date, literal
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.app import create_app
from api.deps import today_utc
from arflow.config import Settings
from arflow.policies import service as policies
from arflow.reports import aging as aging_module
from arflow.reports.aging import bucket_of, bucket_sql
from models import (
    AgencyPlacement,
    Customer,
    Dispute,
    Invoice,
    OutboxMessage,
    Payment,
    PaymentPlan,
    Promise,
)
from tests.conftest import API_KEYS, WEBHOOK_SECRET

TODAY = date(2026, 3, 31)
VIEWER = {"Authorization": f"Bearer {API_KEYS['viewer']}"}


def at(y: int, m: int, d: int, hh: int = 12, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=UTC)


class Reports:
    def __init__(self, http: httpx.AsyncClient, app: Any, ids: dict[str, int]) -> None:
        self.http = http
        self.app = app
        self.ids = ids

    def today(self, day: date) -> None:
        self.app.dependency_overrides[today_utc] = lambda: day

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(f"/v1/reports/{path}", params=params, headers=VIEWER)

    async def json(self, path: str, **params: Any) -> dict[str, Any]:
        resp = await self.get(path, **params)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


@asynccontextmanager
async def reports_api(
    engine: Engine, tmp_path: Path, today: date
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The API without Temporal (reports need none) on ``engine``, its day fixed at ``today``."""
    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{role}" for role, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
    )
    app = create_app(settings, engine=engine, temporal=None)
    app.dependency_overrides[today_utc] = lambda: today
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        yield http, app


@pytest.fixture
async def r(engine: Engine, tmp_path: Path) -> AsyncIterator[Reports]:
    ids = build_data_set(engine)
    async with reports_api(engine, tmp_path, TODAY) as (http, app):
        yield Reports(http, app, ids)


def build_data_set(engine: Engine) -> dict[str, int]:
    ids: dict[str, int] = {}
    with Session(engine) as s:
        policy_id = policies.ensure_default_policy(s).id
        assert policy_id is not None
        for key, name, segment in (
            ("C1", "Alpha AG", "key"),
            ("C2", "=Beta Ltd", "smb"),
            ("C3", "Gamma Inc", "smb"),
        ):
            c = Customer(external_id=key, name=name, segment=segment, timezone="UTC")
            s.add(c)
            s.flush()
            assert c.id is not None
            ids[key] = c.id

        def invoice(
            key: str,
            customer: str,
            currency: str,
            collector: str | None,
            issued: date,
            due: date,
            amount: int,
            balance: int,
            status: str,
            closed: datetime | None = None,
        ) -> None:
            inv = Invoice(
                external_id=key,
                number=key,
                currency=currency,
                issued_on=issued,
                due_date=due,
                customer_id=ids[customer],
                policy_id=policy_id,
                amount_minor=amount,
                balance_minor=balance,
                due_at=datetime.combine(due, datetime.max.time(), tzinfo=UTC),
                status=status,
                collector=collector,
                request_hash="x" * 64,
                closed_at=closed,
            )
            s.add(inv)
            s.flush()
            assert inv.id is not None
            ids[key] = inv.id

        d = date
        invoice("I1", "C1", "EUR", "ann", d(2026, 1, 10), d(2026, 2, 9), 100000, 0, "paid",
                at(2026, 3, 10))  # fmt: skip
        invoice("I2", "C1", "EUR", "ann", d(2026, 3, 5), d(2026, 4, 4), 50000, 50000, "open")
        invoice("I3", "C2", "EUR", "bob", d(2025, 12, 1), d(2025, 12, 31), 80000, 50000,
                "escalated")  # fmt: skip
        invoice("I4", "C2", "EUR", None, d(2026, 2, 1), d(2026, 3, 3), 30000, 30000, "disputed")
        invoice("I5", "C1", "EUR", "ann", d(2026, 3, 2), d(2026, 3, 16), 20000, 20000,
                "cancelled", at(2026, 3, 4))  # fmt: skip
        invoice("I6", "C1", "EUR", "ann", d(2025, 10, 1), d(2025, 10, 31), 40000, 0, "credited",
                at(2026, 3, 12, 10))  # fmt: skip
        invoice("I7", "C1", "EUR", "ann", d(2026, 1, 15), d(2026, 2, 14), 60000, 50000, "open")
        invoice("I8", "C3", "USD", "bob", d(2026, 2, 15), d(2026, 3, 17), 70000, 70000, "open")
        invoice("I9", "C3", "USD", "bob", d(2026, 1, 5), d(2026, 2, 4), 25000, 0, "paid",
                at(2026, 2, 10))  # fmt: skip
        invoice("I10", "C2", "USD", "bob", d(2026, 3, 10), d(2026, 4, 9), 45000, 0, "paid",
                at(2026, 3, 25))  # fmt: skip
        invoice("I11", "C3", "USD", None, d(2025, 11, 1), d(2025, 12, 1), 15000, 15000,
                "written_off", at(2026, 3, 20))  # fmt: skip
        invoice("I12", "C2", "EUR", "bob", d(2026, 2, 10), d(2026, 2, 20), 10000, 10000, "open")

        payments = [
            ("p1", "I1", 40000, at(2026, 2, 28, 23, 59, 59), "payment", "applied"),
            ("p2", "I1", 60000, at(2026, 3, 10), "payment", "applied"),
            ("p3", "I3", 30000, at(2026, 3, 15), "payment", "applied"),
            ("p4", "I7", 10000, at(2026, 3, 20), "payment", "applied"),
            ("p5", "I9", 25000, at(2026, 2, 10), "payment", "applied"),
            ("p6", "I10", 45000, at(2026, 3, 25), "payment", "applied"),
            ("p7", "I12", 10000, at(2026, 2, 18), "payment", "applied"),
            ("p8", "I12", -10000, at(2026, 3, 8), "refund", "applied"),
            ("p9", "I10", 5000, at(2026, 3, 28), "payment", "unapplied"),  # customer credit
        ]
        for event, inv_key, amount, paid_at, kind, status in payments:
            currency = "USD" if inv_key in ("I8", "I9", "I10", "I11") else "EUR"
            s.add(
                Payment(
                    event_id=event,
                    invoice_id=ids[inv_key],
                    amount_minor=amount,
                    currency=currency,
                    paid_at=paid_at,
                    method="sepa",
                    kind=kind,
                    status=status,
                )
            )
        disputes = [
            ("I6", "upheld", at(2026, 3, 2, 10), at(2026, 3, 12, 10), 40000),
            ("I4", "open", at(2026, 3, 5, 8), None, 0),
            ("I3", "rejected", at(2026, 2, 20, 0), at(2026, 3, 4, 12), 0),
            ("I8", "rejected", at(2026, 1, 1), at(2026, 2, 1), 0),
        ]
        for inv_key, status, opened, resolved, credit in disputes:
            s.add(
                Dispute(
                    invoice_id=ids[inv_key],
                    status=status,
                    reason="r",
                    opened_by="specialist:x",
                    opened_at=opened,
                    resolved_at=resolved,
                    resolved_by="specialist:x" if resolved else None,
                    credit_minor=credit,
                )
            )
        promises = [
            ("I8", "open", d(2026, 4, 8), 30001, at(2026, 3, 25)),
            ("I1", "kept", d(2026, 3, 10), 60000, at(2026, 3, 10)),
            ("I7", "broken", d(2026, 2, 20), 60000, at(2026, 2, 25)),
            ("I3", "broken", d(2026, 3, 9), 80000, at(2026, 3, 12)),
            ("I7", "superseded", d(2026, 3, 5), 60000, at(2026, 3, 1)),
        ]
        for inv_key, status, promised, amount, updated in promises:
            s.add(
                Promise(
                    invoice_id=ids[inv_key],
                    status=status,
                    promised_date=promised,
                    amount_minor=amount,
                    created_by="specialist:x",
                    created_at=at(2026, 2, 1),
                    updated_at=updated,
                )
            )

        def inst(n: int, due: str, amount: int, paid: int, state: str) -> dict[str, Any]:
            return {
                "n": n,
                "due_date": due,
                "due_at": f"{due}T23:59:59+00:00",
                "amount_minor": amount,
                "paid_minor": paid,
                "state": state,
            }

        s.add(
            PaymentPlan(
                invoice_id=ids["I7"],
                status="active",
                installments=[
                    inst(1, "2026-04-10", 30000, 10000, "pending"),
                    inst(2, "2026-05-10", 30000, 0, "pending"),
                ],
                created_by="specialist:x",
                created_at=at(2026, 3, 1, 9),
                updated_at=at(2026, 3, 20),
            )
        )
        s.add(
            PaymentPlan(
                invoice_id=ids["I3"],
                status="broken",
                installments=[inst(1, "2026-02-15", 80000, 0, "missed")],
                created_by="specialist:x",
                created_at=at(2026, 2, 1),
                updated_at=at(2026, 2, 25),
            )
        )
        for inv_key, amount, currency, placed in (
            ("I3", 50000, "EUR", at(2026, 3, 20)),
            ("I11", 15000, "USD", at(2026, 1, 15)),
        ):
            s.add(
                AgencyPlacement(
                    invoice_id=ids[inv_key],
                    agency="Collect & Co",
                    amount_minor=amount,
                    currency=currency,
                    reference=f"ref-{inv_key}",
                    placed_at=placed,
                )
            )
        outbox = [
            ("I1", "before_due", "email", "sent", at(2026, 2, 6)),  # before the period
            ("I1", "late_7", "email", "sent", at(2026, 3, 3)),
            ("I3", "final_notice", "letter", "sent", at(2026, 3, 1, 0)),  # first instant
            ("I4", "first_late_day", "email", "delivered", at(2026, 3, 4)),
            ("I7", "late_14", "email", "failed", at(2026, 3, 5)),
            ("I7", "late_30", "sms", "bounced", at(2026, 3, 16)),
            ("I8", "first_late_day", "sms", "delivered", at(2026, 3, 18)),
            ("I8", "late_7", "email", "queued", at(2026, 3, 24)),
            ("I12", "first_late_day", "email", "sent", at(2026, 3, 30)),
            ("I2", "before_due", "email", "sent", at(2026, 4, 1, 0)),  # after the period
        ]
        for inv_key, step, channel, status, created in outbox:
            s.add(
                OutboxMessage(
                    invoice_id=ids[inv_key],
                    step_key=step,
                    channel=channel,
                    subject="s",
                    body="b",
                    status=status,
                    created_at=created,
                )
            )
        s.commit()
    return ids


def row(
    dimension: str,
    key: str | None,
    currency: str,
    invoices: int,
    buckets: tuple[int, int, int, int, int],
    name: str | None = None,
) -> dict[str, Any]:
    current, d30, d60, d90, over = buckets
    return {
        "dimension": dimension,
        "key": key,
        "name": name,
        "currency": currency,
        "invoices": invoices,
        "current_minor": current,
        "days_1_30_minor": d30,
        "days_31_60_minor": d60,
        "days_61_90_minor": d90,
        "days_over_90_minor": over,
        "total_minor": sum(buckets),
    }


# -- aging ------------------------------------------------------------------------------


async def test_aging_today_uses_current_balances_by_bucket_and_dimension(r: Reports) -> None:
    body = await r.json("aging")
    c1, c2, c3 = str(r.ids["C1"]), str(r.ids["C2"]), str(r.ids["C3"])
    assert body["as_of"] == "2026-03-31"
    assert body["balances"] == "current"
    # Open on 03-31: I2 (due 04-04: current), I3 (03-31 - 2025-12-31 = 90 days: 61-90),
    # I4 (03-31 - 03-03 = 28: 1-30), I7 (03-31 - 02-14 = 45: 31-60), I12 (03-31 - 02-20 = 39:
    # 31-60), I8 USD (03-31 - 03-17 = 14: 1-30). I1, I6, I9, I10 closed, I5 cancelled, I11
    # written off.
    assert body["totals"] == [
        # EUR: current 50000 (I2), 1-30 30000 (I4), 31-60 50000 + 10000 (I7, I12), 61-90 50000
        # (I3) = 190000
        row("total", None, "EUR", 5, (50000, 30000, 60000, 50000, 0)),
        row("total", None, "USD", 1, (0, 70000, 0, 0, 0)),
    ]
    # Per currency, the most overdue first: C2 90000 overdue before C1 50000 (+ 50000 current).
    assert body["by_customer"] == [
        row("customer", c2, "EUR", 3, (0, 30000, 10000, 50000, 0), "=Beta Ltd"),  # I4, I12, I3
        row("customer", c1, "EUR", 2, (50000, 0, 50000, 0, 0), "Alpha AG"),  # I2, I7
        row("customer", c3, "USD", 1, (0, 70000, 0, 0, 0), "Gamma Inc"),  # I8
    ]
    assert body["by_customer_page"] == {"total": 3, "limit": 100, "offset": 0, "order": "overdue"}
    assert body["by_segment"] == [
        row("segment", "key", "EUR", 2, (50000, 0, 50000, 0, 0)),  # C1
        row("segment", "smb", "EUR", 3, (0, 30000, 10000, 50000, 0)),  # C2
        row("segment", "smb", "USD", 1, (0, 70000, 0, 0, 0)),  # C3
    ]
    assert body["by_collector"] == [
        row("collector", "ann", "EUR", 2, (50000, 0, 50000, 0, 0)),  # I2, I7
        row("collector", "bob", "EUR", 2, (0, 0, 10000, 50000, 0)),  # I12, I3
        row("collector", "bob", "USD", 1, (0, 70000, 0, 0, 0)),  # I8
        row("collector", None, "EUR", 1, (0, 30000, 0, 0, 0)),  # I4, unassigned, last
    ]


async def test_aging_in_the_past_reconstructs_balances(r: Reports) -> None:
    body = await r.json("aging", as_of="2026-02-28")
    assert body["balances"] == "reconstructed"
    assert body["totals"] == [
        # Issued by 02-28 and not closed by then: I1 100000 - 40000 (paid 02-28 23:59:59) =
        # 60000, 02-28 - 02-09 = 19 days: 1-30; I3 80000 (30000 paid later), 59 days: 31-60;
        # I4 30000 due 03-03: current; I6 40000 (credit resolved 03-12), 120 days: over 90;
        # I7 60000 (10000 paid later), 14 days: 1-30; I12 10000 - 10000 = 0 (refund on 03-08
        # comes later): left out. I2 not issued yet, I5 void.
        row("total", None, "EUR", 5, (30000, 60000 + 60000, 80000, 0, 40000)),  # = 270000
        # I8 70000 due 03-17: current; I11 15000 (written off 03-20), 02-28 - 12-01 = 89 days:
        # 61-90; I9 closed 02-10: left out.
        row("total", None, "USD", 2, (70000, 0, 0, 15000, 0)),  # = 85000
    ]


async def test_reconstruction_agrees_with_current_balances(r: Reports) -> None:
    current = await r.json("aging")
    r.today(date(2026, 4, 1))  # 03-31 is now in the past: reconstructed from payments
    rebuilt = await r.json("aging", as_of="2026-03-31")
    assert rebuilt["balances"] == "reconstructed"
    for part in ("totals", "by_customer", "by_segment", "by_collector"):
        assert rebuilt[part] == current[part]


async def test_aging_later_as_of_moves_the_buckets_only(r: Reports) -> None:
    body = await r.json("aging", as_of="2026-05-01")
    assert body["balances"] == "current"
    # 05-01 - due: I2 04-04 = 27 (1-30), I4 03-03 = 59 (31-60), I7 02-14 = 76 and I12 02-20 =
    # 70 (61-90), I3 2025-12-31 = 121 (over 90); I8 03-17 = 45 (31-60).
    assert body["totals"] == [
        row("total", None, "EUR", 5, (0, 50000, 30000, 50000 + 10000, 50000)),
        row("total", None, "USD", 1, (0, 0, 70000, 0, 0)),
    ]


@pytest.mark.parametrize(
    ("params", "totals"),
    [
        # segment smb: C2 (I3, I4, I12) and C3 (I8)
        (
            {"segment": "smb"},
            [("EUR", 3, (0, 30000, 10000, 50000, 0)), ("USD", 1, (0, 70000, 0, 0, 0))],
        ),
        # collector ann: I2 (current) and I7 (31-60)
        ({"collector": "ann"}, [("EUR", 2, (50000, 0, 50000, 0, 0))]),
        ({"currency": "usd"}, [("USD", 1, (0, 70000, 0, 0, 0))]),  # upper-cased
        # bob's smb euros: I12 (31-60) and I3 (61-90)
        (
            {"segment": "smb", "collector": "bob", "currency": "EUR"},
            [("EUR", 2, (0, 0, 10000, 50000, 0))],
        ),
        ({"segment": "nobody"}, []),
    ],
)
async def test_aging_filters(
    r: Reports, params: dict[str, str], totals: list[tuple[str, int, Any]]
) -> None:
    body = await r.json("aging", **params)
    assert body["totals"] == [row("total", None, cur, n, b) for cur, n, b in totals]


async def test_aging_customer_filter(r: Reports) -> None:
    body = await r.json("aging", customer_id=r.ids["C3"])
    assert body["filters"]["customer_id"] == r.ids["C3"]
    assert body["totals"] == [row("total", None, "USD", 1, (0, 70000, 0, 0, 0))]  # I8


# The per-customer rows on 03-31 (see the first aging test): EUR C2 overdue 90000 (total
# 90000), C1 overdue 50000 (total 100000); USD C3 overdue 70000.
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["C2", "C1", "C3"]),  # per currency, the most overdue first
        ({"order": "total"}, ["C1", "C2", "C3"]),  # per currency, the largest total first
        ({"order": "customer"}, ["C1", "C2", "C3"]),  # by customer id
        ({"limit": 1}, ["C2"]),
        ({"limit": 1, "offset": 1}, ["C1"]),
        ({"limit": 2, "offset": 1}, ["C1", "C3"]),
        ({"offset": 3}, []),  # past the end: an empty page, still the count
        ({"order": "total", "limit": 1, "offset": 1}, ["C2"]),
        ({"currency": "USD"}, ["C3"]),
    ],
)
async def test_aging_pages_the_customers_and_counts_them_all(
    r: Reports, params: dict[str, Any], expected: list[str]
) -> None:
    body = await r.json("aging", **params)
    assert [row["key"] for row in body["by_customer"]] == [str(r.ids[k]) for k in expected]
    in_all = 1 if params.get("currency") == "USD" else 3
    assert body["by_customer_page"] == {
        "total": in_all,
        "limit": params.get("limit", 100),
        "offset": params.get("offset", 0),
        "order": params.get("order", "overdue"),
    }
    if "currency" not in params:  # the other parts stay complete whatever the page
        assert len(body["totals"]) == 2
        assert len(body["by_segment"]) == 3
        assert len(body["by_collector"]) == 4


async def test_aging_page_in_the_past_is_paged_on_reconstructed_balances(r: Reports) -> None:
    # 02-28 (reconstructed): C1 EUR I1 60000 (1-30), I6 40000 (over 90), I7 60000 (1-30):
    # overdue 160000; C2 EUR I3 80000 (31-60), I4 30000 (current): overdue 80000; C3 USD I8
    # 70000 (current), I11 15000 (61-90): overdue 15000.
    body = await r.json("aging", as_of="2026-02-28", limit=2)
    assert body["by_customer"] == [
        row("customer", str(r.ids["C1"]), "EUR", 3, (0, 120000, 0, 0, 40000), "Alpha AG"),
        row("customer", str(r.ids["C2"]), "EUR", 2, (30000, 0, 80000, 0, 0), "=Beta Ltd"),
    ]
    assert body["by_customer_page"]["total"] == 3


async def test_aging_csv_in_chunks_is_the_same_text(
    r: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = (await r.get("aging", format="csv", limit=1)).text  # limit pages the JSON only
    assert whole.count("\r\ncustomer,") == 3
    monkeypatch.setattr(aging_module, "CSV_CHUNK", 1)
    assert (await r.get("aging", format="csv")).text == whole
    by_id = parse_csv(await r.get("aging", format="csv", order="customer"))
    assert [c[1] for c in by_id if c[0] == "customer"] == [
        str(r.ids[k]) for k in ("C1", "C2", "C3")
    ]


# -- KPIs -------------------------------------------------------------------------------


async def test_kpis_for_march(r: Reports) -> None:
    body = await r.json("kpis", **{"from": "2026-03-01", "to": "2026-03-31"})
    assert (body["from_date"], body["to_date"], body["days"]) == ("2026-03-01", "2026-03-31", 31)
    assert body["closing_balances"] == "current"  # to = today
    eur, usd = body["currencies"]
    assert eur == {
        "currency": "EUR",
        "opening_receivables_minor": 270000,  # the aging of 02-28 (test above)
        "credit_sales_minor": 50000,  # I2; I5 is cancelled (void)
        "closing_receivables_minor": 190000,  # the aging of 03-31
        "closing_current_receivables_minor": 50000,  # I2, due 04-04
        "dso_days": "117.8",  # 190000 / 50000 * 31 = 117.8
        # (270000 + 50000 - 190000) / (270000 + 50000 - 50000) * 100 = 130000 / 270000 * 100
        # = 48.148...
        "cei_pct": "48.1",
        "active_plans": 1,  # I7's plan, created 03-01
        "active_plans_minor": 50000,  # I7's balance on 03-31: 60000 - 10000
        "agency_placed": 1,  # I3 on 03-20
        "agency_placed_minor": 50000,
        "with_agencies": 1,  # I3, still open
        "with_agencies_minor": 50000,
    }
    assert usd == {
        "currency": "USD",
        "opening_receivables_minor": 85000,  # I8 70000 + I11 15000
        "credit_sales_minor": 45000,  # I10
        "closing_receivables_minor": 70000,  # I8
        "closing_current_receivables_minor": 0,  # I8 was due 03-17
        "dso_days": "48.2",  # 70000 / 45000 * 31 = 48.22...
        "cei_pct": "46.2",  # (85000 + 45000 - 70000) / (85000 + 45000 - 0) * 100 = 46.15...
        "active_plans": 0,
        "active_plans_minor": 0,
        "agency_placed": 0,  # I11 was placed in January
        "agency_placed_minor": 0,
        "with_agencies": 0,  # I11 written off 03-20
        "with_agencies_minor": 0,
    }
    # Paid invoices whose last payment is in March: I1 (03-10; the unapplied 03-28 payment of
    # I10 does not count, its last is 03-25): I1 03-10 - 01-10 = 59 days, late 03-10 - 02-09 =
    # 29; I10 03-25 - 03-10 = 15, late 03-25 - 04-09 = -15. I9 paid in February.
    assert body["payment_timing"] == {
        "invoices_paid": 2,
        "avg_days_to_pay": "37.0",  # (59 + 15) / 2
        "avg_days_late": "7.0",  # (29 - 15) / 2
    }
    # kept: I1's (03-10); broken: I3's (03-12); I7's broken in February, superseded not counted
    assert body["promises"] == {"kept": 1, "broken": 1, "kept_rate_pct": "50.0"}  # 1 / 2
    # opened in March: I6's (03-02), I4's (03-05); resolved in March: I6's after 10 days,
    # I3's from 02-20 00:00 to 03-04 12:00 = 12.5 days; median (10 + 12.5) / 2 = 11.25
    assert body["disputes"] == {"opened": 2, "resolved": 2, "median_days_to_resolve": "11.3"}
    assert body["reminders"] == [
        {
            # I1 sent, I4 delivered, I7 failed, I8 queued, I12 sent (I1's February one and I2's
            # of 04-01 00:00 are outside the period)
            "channel": "email",
            "total": 5,
            "pending": 1,
            "sent": 4,  # 5 - 1 queued
            "delivered": 1,
            "failed": 1,
            "delivery_rate_pct": "25.0",  # 1 / 4
            "failure_rate_pct": "25.0",  # 1 / 4
            "by_status": {"delivered": 1, "failed": 1, "queued": 1, "sent": 2},
        },
        {
            "channel": "letter",  # I3's, at 03-01 00:00:00
            "total": 1,
            "pending": 0,
            "sent": 1,
            "delivered": 0,
            "failed": 0,
            "delivery_rate_pct": "0.0",
            "failure_rate_pct": "0.0",
            "by_status": {"sent": 1},
        },
        {
            "channel": "sms",  # I7 bounced, I8 delivered
            "total": 2,
            "pending": 0,
            "sent": 2,
            "delivered": 1,
            "failed": 1,
            "delivery_rate_pct": "50.0",
            "failure_rate_pct": "50.0",
            "by_status": {"bounced": 1, "delivered": 1},
        },
    ]


async def test_kpis_filtered_by_currency(r: Reports) -> None:
    body = await r.json("kpis", **{"from": "2026-03-01", "to": "2026-03-31", "currency": "EUR"})
    assert [c["currency"] for c in body["currencies"]] == ["EUR"]
    assert body["currencies"][0]["dso_days"] == "117.8"
    # only I1: 59 days to pay, 29 late
    assert body["payment_timing"] == {
        "invoices_paid": 1,
        "avg_days_to_pay": "59.0",
        "avg_days_late": "29.0",
    }
    # email without I8's queued row: 4 sent, 1 delivered, 1 failed; sms: only I7's bounce
    email, letter, sms = body["reminders"]
    assert (email["total"], email["sent"], email["delivery_rate_pct"]) == (4, 4, "25.0")
    assert letter["sent"] == 1
    assert (sms["sent"], sms["delivery_rate_pct"], sms["failure_rate_pct"]) == (1, "0.0", "100.0")


async def test_kpis_past_period_and_empty_currency(r: Reports) -> None:
    # February 2026 (28 days), both ends reconstructed. Opening on 01-31: EUR I1 100000, I3
    # 80000, I6 40000, I7 60000 = 280000; USD I9 25000 (paid 02-10) + I11 15000 = 40000 (I8
    # not issued yet). Sales: EUR I4 30000 + I12 10000 = 40000; USD I8 70000.
    body = await r.json("kpis", **{"from": "2026-02-01", "to": "2026-02-28"})
    assert body["closing_balances"] == "reconstructed"
    eur, usd = body["currencies"]
    assert (eur["opening_receivables_minor"], eur["credit_sales_minor"]) == (280000, 40000)
    assert eur["closing_receivables_minor"] == 270000
    assert eur["dso_days"] == "189.0"  # 270000 / 40000 * 28 = 189
    # (280000 + 40000 - 270000) / (280000 + 40000 - 30000 (I4, due 03-03)) * 100 = 17.24...
    assert eur["cei_pct"] == "17.2"
    assert (eur["active_plans"], eur["with_agencies"]) == (0, 0)  # the plan came 03-01
    assert (usd["opening_receivables_minor"], usd["credit_sales_minor"]) == (40000, 70000)
    # (40000 + 70000 - 85000) / (40000 + 70000 - 70000 (I8, due 03-17)) * 100 = 62.5
    assert usd["cei_pct"] == "62.5"
    assert (usd["with_agencies"], usd["with_agencies_minor"]) == (1, 15000)  # I11
    # a currency nobody uses is listed with zeros and null ratios
    body = await r.json("kpis", **{"from": "2026-03-01", "to": "2026-03-31", "currency": "JPY"})
    (jpy,) = body["currencies"]
    assert (jpy["currency"], jpy["credit_sales_minor"], jpy["dso_days"]) == ("JPY", 0, None)
    assert body["payment_timing"]["avg_days_to_pay"] is None


# -- forecast ---------------------------------------------------------------------------


async def test_forecast_discounts_by_customer_history(r: Reports) -> None:
    body = await r.json("forecast", weeks=8)
    c1, c2, c3 = r.ids["C1"], r.ids["C2"], r.ids["C3"]
    assert body["customers"] == [
        # C1: paid I1, 29 days late; I6 credited and I5 cancelled do not count
        {"customer_id": c1, "paid_invoices": 1, "written_off_invoices": 0,
         "collection_rate_pct": "100.0", "shift_days": 29},
        # C2: paid I10 15 days early: max(0, -15) = 0
        {"customer_id": c2, "paid_invoices": 1, "written_off_invoices": 0,
         "collection_rate_pct": "100.0", "shift_days": 0},
        # C3: paid I9 02-10 - 02-04 = 6 days late, wrote off I11: 1 / 2
        {"customer_id": c3, "paid_invoices": 1, "written_off_invoices": 1,
         "collection_rate_pct": "50.0", "shift_days": 6},
    ]  # fmt: skip

    def week(n: int, start: str, cur: str, inv: int, plans: int, prom: int, sched: int) -> Any:
        return {
            "week": f"2026-W{n}",
            "week_start": start,
            "currency": cur,
            "invoices_minor": inv,
            "plans_minor": plans,
            "promises_minor": prom,
            "expected_minor": inv + plans + prom,
            "scheduled_minor": sched,
        }

    # EUR, all at a 100% rate:
    # I2 50000 due 04-04 (W14) + 29 days = 05-03 (Sunday of W18);
    # I3 50000, I4 30000, I12 10000 are overdue, C2 shifts 0: this week (W14);
    # I7's plan: instalment 1 30000 - 10000 paid = 20000 due 04-10 (W15) + 29 = 05-09 (W19),
    # instalment 2 30000 due 05-10 (W19) + 29 = 06-08: after W21, beyond the horizon.
    # USD, C3 at 50% and 6 days: I8's promise 30001 on 04-08 (W15) + 6 = 04-14 (W16), 30001 *
    # 0.5 = 15000.5 -> 15001; the rest 70000 - 30001 = 39999 due 03-17 + 6 = 03-23, before
    # today: W14, 39999 * 0.5 = 19999.5 -> 20000.
    assert body["rows"] == [
        week(14, "2026-03-30", "EUR", 50000 + 30000 + 10000, 0, 0, 50000 + 50000 + 30000 + 10000),
        week(14, "2026-03-30", "USD", 20000, 0, 0, 39999),
        week(15, "2026-04-06", "EUR", 0, 0, 0, 20000),
        week(15, "2026-04-06", "USD", 0, 0, 0, 30001),
        week(16, "2026-04-13", "EUR", 0, 0, 0, 0),
        week(16, "2026-04-13", "USD", 0, 0, 15001, 0),
        week(17, "2026-04-20", "EUR", 0, 0, 0, 0),
        week(17, "2026-04-20", "USD", 0, 0, 0, 0),
        week(18, "2026-04-27", "EUR", 50000, 0, 0, 0),
        week(18, "2026-04-27", "USD", 0, 0, 0, 0),
        week(19, "2026-05-04", "EUR", 0, 20000, 0, 30000),
        week(19, "2026-05-04", "USD", 0, 0, 0, 0),
        week(20, "2026-05-11", "EUR", 0, 0, 0, 0),
        week(20, "2026-05-11", "USD", 0, 0, 0, 0),
        week(21, "2026-05-18", "EUR", 0, 0, 0, 0),
        week(21, "2026-05-18", "USD", 0, 0, 0, 0),
    ]
    assert body["beyond_horizon"] == [
        {"currency": "EUR", "expected_minor": 30000, "scheduled_minor": 0},  # instalment 2
        {"currency": "USD", "expected_minor": 0, "scheduled_minor": 0},
    ]
    # EUR: every open euro is expected once: 90000 + 50000 + 20000 + 30000 = 190000 (aging)
    eur = sum(w["expected_minor"] for w in body["rows"] if w["currency"] == "EUR")
    assert eur + 30000 == 190000


async def test_forecast_filters_and_default_weeks(r: Reports) -> None:
    body = await r.json("forecast", collector="ann")  # I2 and I7 only, C1
    assert body["weeks"] == 12
    assert len(body["rows"]) == 12  # 12 weeks x EUR
    assert [c["customer_id"] for c in body["customers"]] == [r.ids["C1"]]
    # W14 .. W25 ends 06-21: instalment 2 (06-08, W24) is inside now
    by_week = {w["week"]: w["expected_minor"] for w in body["rows"] if w["expected_minor"]}
    assert by_week == {"2026-W18": 50000, "2026-W19": 20000, "2026-W24": 30000}


# -- CSV --------------------------------------------------------------------------------


def parse_csv(resp: httpx.Response) -> list[list[str]]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    return list(csv.reader(io.StringIO(resp.text)))


async def test_aging_csv(r: Reports) -> None:
    rows = parse_csv(await r.get("aging", format="csv"))
    assert rows[0] == [
        "dimension", "key", "name", "currency", "invoices", "current_minor", "days_1_30_minor",
        "days_31_60_minor", "days_61_90_minor", "days_over_90_minor", "total_minor",
    ]  # fmt: skip
    c2 = str(r.ids["C2"])
    assert rows[1:] == [
        ["total", "", "", "EUR", "5", "50000", "30000", "60000", "50000", "0", "190000"],
        ["total", "", "", "USD", "1", "0", "70000", "0", "0", "0", "70000"],
        # every customer, the most overdue first (as the JSON's default order);
        # a name a spreadsheet would run as a formula is quoted
        ["customer", c2, "'=Beta Ltd", "EUR", "3", "0", "30000", "10000", "50000", "0", "90000"],
        [*["customer", str(r.ids["C1"]), "Alpha AG", "EUR", "2"], "50000", "0", "50000", "0",
         "0", "100000"],
        ["customer", str(r.ids["C3"]), "Gamma Inc", "USD", "1", "0", "70000", "0", "0", "0",
         "70000"],
        ["segment", "key", "", "EUR", "2", "50000", "0", "50000", "0", "0", "100000"],
        ["segment", "smb", "", "EUR", "3", "0", "30000", "10000", "50000", "0", "90000"],
        ["segment", "smb", "", "USD", "1", "0", "70000", "0", "0", "0", "70000"],
        ["collector", "ann", "", "EUR", "2", "50000", "0", "50000", "0", "0", "100000"],
        ["collector", "bob", "", "EUR", "2", "0", "0", "10000", "50000", "0", "60000"],
        ["collector", "bob", "", "USD", "1", "0", "70000", "0", "0", "0", "70000"],
        ["collector", "", "", "EUR", "1", "0", "30000", "0", "0", "0", "30000"],
    ]  # fmt: skip


async def test_kpis_csv(r: Reports) -> None:
    rows = parse_csv(
        await r.get("kpis", **{"from": "2026-03-01", "to": "2026-03-31"}, format="csv")
    )
    assert rows[0] == ["metric", "currency", "channel", "value"]
    assert rows[1:4] == [["from_date", "", "", "2026-03-01"], ["to_date", "", "", "2026-03-31"],
                         ["days", "", "", "31"]]  # fmt: skip
    found = {(m, cur, ch): v for m, cur, ch, v in rows[1:]}
    assert len(found) == len(rows) - 1  # one row per metric and currency or channel
    assert found[("dso_days", "EUR", "")] == "117.8"
    assert found[("cei_pct", "USD", "")] == "46.2"
    assert found[("closing_receivables_minor", "EUR", "")] == "190000"
    assert found[("with_agencies_minor", "EUR", "")] == "50000"
    assert found[("avg_days_to_pay", "", "")] == "37.0"
    assert found[("kept_rate_pct", "", "")] == "50.0"
    assert found[("median_days_to_resolve", "", "")] == "11.3"
    assert found[("reminders_delivery_rate_pct", "", "sms")] == "50.0"
    assert found[("reminders_status_queued", "", "email")] == "1"
    # 3 header-ish rows + 2 currencies x 13 + 3 + 3 + 3 + channels (7 each + their statuses)
    assert len(rows) - 1 == 3 + 2 * 12 + 3 + 3 + 3 + (7 + 4) + (7 + 1) + (7 + 2)


async def test_forecast_csv(r: Reports) -> None:
    rows = parse_csv(await r.get("forecast", weeks=2, format="csv"))
    assert rows == [
        ["week", "week_start", "currency", "invoices_minor", "plans_minor", "promises_minor",
         "expected_minor", "scheduled_minor"],
        ["2026-W14", "2026-03-30", "EUR", "90000", "0", "0", "90000", "140000"],
        ["2026-W14", "2026-03-30", "USD", "20000", "0", "0", "20000", "39999"],
        ["2026-W15", "2026-04-06", "EUR", "0", "0", "0", "0", "20000"],
        ["2026-W15", "2026-04-06", "USD", "0", "0", "0", "0", "30001"],
        # after 04-12: EUR 50000 + 20000 + 30000 expected, 30000 scheduled (instalment 2);
        # USD 15001 expected (the promise, W16)
        ["beyond", "", "EUR", "", "", "", "100000", "30000"],
        ["beyond", "", "USD", "", "", "", "15001", "0"],
    ]  # fmt: skip


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field", "words"),
    [
        ("kpis", {"from": "2026-03-31", "to": "2026-03-01"}, "query.from", "must not be after"),
        ("forecast", {"weeks": 0}, "query.weeks", "greater than or equal to 1"),
        ("forecast", {"weeks": 53}, "query.weeks", "less than or equal to 52"),
        ("forecast", {"weeks": "x"}, "query.weeks", "integer"),
        ("aging", {"currency": "XYZ"}, "query.currency", "unknown currency"),
        ("kpis", {"currency": "EURO"}, "query.currency", "unknown currency"),
        ("aging", {"as_of": "2026-02-30"}, "query.as_of", "date"),
        ("aging", {"as_of": "0001-01-01"}, "query.as_of", "between"),
        ("kpis", {"from": "0001-01-01"}, "query.from", "between"),
        ("kpis", {"to": "9999-12-31"}, "query.to", "between"),
        ("aging", {"format": "xml"}, "query.format", "json"),
        ("aging", {"customer_id": 0}, "query.customer_id", "greater than 0"),
        ("aging", {"limit": 0}, "query.limit", "greater than or equal to 1"),
        ("aging", {"limit": 1001}, "query.limit", "less than or equal to 1000"),
        ("aging", {"offset": -1}, "query.offset", "greater than or equal to 0"),
        ("aging", {"order": "name"}, "query.order", "overdue"),
        ("forecast", {"collector": ""}, "query.collector", "at least 1"),
    ],
)
async def test_bad_parameters_are_422_with_the_error_body(
    r: Reports, path: str, params: dict[str, Any], field: str, words: str
) -> None:
    resp = await r.get(path, **params)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid"
    assert words in error["message"], error
    assert [d["field"] for d in error["details"]] == [field]


async def test_reports_need_a_viewer_key(r: Reports) -> None:
    resp = await r.http.get("/v1/reports/aging")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"


def test_aging_buckets_in_sql_and_python_agree(engine: Engine) -> None:
    """The aging report groups by ``bucket_sql`` in the database; statements bucket with
    ``bucket_of``: one rule, on each side of every boundary."""
    as_of = date(2026, 3, 31)
    with engine.connect() as conn:
        for late in (-1, 0, 1, 30, 31, 60, 61, 90, 91, 400):
            due = as_of - timedelta(days=late)
            in_sql = conn.execute(sa_select(bucket_sql(literal(due, Date()), as_of))).scalar()
            assert in_sql == bucket_of(as_of, due), late
