"""Customer profiles on a fixed data set written straight into the database (no Temporal):
behaviour figures, the risk score, segments (order, pinning, defaults), the customer timeline,
unbilled orders, credit checks and the credit hold on and off; SQLite and PostgreSQL.
Every figure is a literal worked out by hand (the arithmetic is in the comment next to it).

"Now" is fixed at 2026-03-31 12:00 UTC (today 2026-03-31 in UTC and in Tokyo).

Customer A "Alpha" (UTC), amounts in minor units:

- A1 EUR 100000 issued 01-01 due 01-31: paid, 40000 on 02-05 and 60000 on 02-10
  -> last payment 02-10: 10 days late, 40 days to pay
- A2 EUR 300000 issued 01-10 due 02-09: paid 02-09 23:00 -> 0 days late, 30 days to pay
  (a later receipt of 500 on 03-01 is unapplied: ignored)
- A3 EUR  50000 issued 02-01 due 03-03: paid 03-23 -> 20 days late, 50 days to pay
- A4 EUR 200000 issued 02-15 due 03-17: open 200000 (14 days overdue); a promise broken,
  another open
- A5 EUR  80000 issued 03-10 due 04-09: open 80000 (not due)
- A6 EUR  30000 issued 01-05 due 02-04: disputed 30000 (open dispute: not "overdue")
- A7 EUR  20000 cancelled
- A8 USD  10000 issued 2025-12-01 due 2025-12-31: escalated 10000 (90 days overdue); its plan
  broken
- disputes: A6 open, A2 rejected, A3 upheld; counters: broken_promises 1, broken_plans 1
- an unbilled order of 25000 EUR

Customer B "Beta" (Asia/Tokyo): B1 EUR 10000 due 02-10, paid 02-10 16:00 UTC, which is
02-11 01:00 in Tokyo: 1 day late there (0 in UTC).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from api.routes.profiles import now_utc
from arflow.config import Settings
from arflow.customers.behaviour import behaviour
from arflow.customers.credit import reassess_credit_hold
from arflow.customers.profiles import refresh_customer
from arflow.customers.risk import band_of, risk
from arflow.customers.segments import ensure_default_segments, segment_for
from arflow.policies import service as policies
from models import (
    Customer,
    CustomerEvent,
    Dispute,
    DunningPolicy,
    Invoice,
    Payment,
    PaymentPlan,
    Promise,
    Segment,
    UnbilledOrder,
)
from tests.conftest import API_KEYS, WEBHOOK_SECRET

NOW = datetime(2026, 3, 31, 12, tzinfo=UTC)


def at(y: int, m: int, d: int, hh: int = 12) -> datetime:
    return datetime(y, m, d, hh, tzinfo=UTC)


def role(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[name]}"}


@dataclass
class Api:
    http: httpx.AsyncClient
    engine: Engine
    ids: dict[str, int]

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        resp = await self.http.get(path, params=params, headers=role("viewer"))
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def send(
        self, method: str, path: str, body: Any = None, who: str = "specialist"
    ) -> httpx.Response:
        return await self.http.request(method, path, json=body, headers=role(who))


@pytest.fixture
async def api(engine: Engine, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
    )
    ids = build_data_set(engine)
    app = create_app(settings, engine=engine, temporal=None)  # nothing here needs Temporal
    app.dependency_overrides[now_utc] = lambda: NOW
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        yield Api(http, engine, ids)


def build_data_set(engine: Engine) -> dict[str, int]:
    ids: dict[str, int] = {}
    with Session(engine) as s:
        policy_id = policies.ensure_default_policy(s).id
        assert policy_id is not None
        for key, name, tz, promises, plans in (
            ("A", "Alpha AG", "UTC", 1, 1),
            ("B", "Beta KK", "Asia/Tokyo", 0, 0),
            ("C", "Gamma SA", "UTC", 0, 0),
        ):
            c = Customer(
                external_id=key,
                name=name,
                timezone=tz,
                broken_promises=promises,
                broken_plans=plans,
            )
            s.add(c)
            s.flush()
            assert c.id is not None
            ids[key] = c.id

        def invoice(
            key: str, cust: str, cur: str, issued: date, due: date, amount: int, bal: int, st: str
        ) -> None:
            inv = Invoice(
                external_id=key,
                number=key,
                currency=cur,
                issued_on=issued,
                due_date=due,
                customer_id=ids[cust],
                policy_id=policy_id,
                amount_minor=amount,
                balance_minor=bal,
                due_at=datetime.combine(due, datetime.max.time(), tzinfo=UTC),
                status=st,
                request_hash="x" * 64,
            )
            s.add(inv)
            s.flush()
            assert inv.id is not None
            ids[key] = inv.id

        d = date
        invoice("A1", "A", "EUR", d(2026, 1, 1), d(2026, 1, 31), 100000, 0, "paid")
        invoice("A2", "A", "EUR", d(2026, 1, 10), d(2026, 2, 9), 300000, 0, "paid")
        invoice("A3", "A", "EUR", d(2026, 2, 1), d(2026, 3, 3), 50000, 0, "paid")
        invoice("A4", "A", "EUR", d(2026, 2, 15), d(2026, 3, 17), 200000, 200000, "open")
        invoice("A5", "A", "EUR", d(2026, 3, 10), d(2026, 4, 9), 80000, 80000, "open")
        invoice("A6", "A", "EUR", d(2026, 1, 5), d(2026, 2, 4), 30000, 30000, "disputed")
        invoice("A7", "A", "EUR", d(2026, 3, 1), d(2026, 3, 31), 20000, 20000, "cancelled")
        invoice("A8", "A", "USD", d(2025, 12, 1), d(2025, 12, 31), 10000, 10000, "escalated")
        invoice("B1", "B", "EUR", d(2026, 1, 11), d(2026, 2, 10), 10000, 0, "paid")
        for n, (inv_key, amount, paid_at, status) in enumerate(
            [
                ("A1", 40000, at(2026, 2, 5), "applied"),
                ("A1", 60000, at(2026, 2, 10), "applied"),
                ("A2", 300000, at(2026, 2, 9, 23), "applied"),
                ("A2", 500, at(2026, 3, 1), "unapplied"),
                ("A3", 50000, at(2026, 3, 23), "applied"),
                ("B1", 10000, at(2026, 2, 10, 16), "applied"),
            ]
        ):
            s.add(
                Payment(
                    event_id=f"p{n}",
                    invoice_id=ids[inv_key],
                    amount_minor=amount,
                    currency="EUR",
                    paid_at=paid_at,
                    method="sepa",
                    status=status,
                )
            )
        for inv_key, status in (("A6", "open"), ("A2", "rejected"), ("A3", "upheld")):
            s.add(Dispute(invoice_id=ids[inv_key], status=status, reason="r", opened_by="s:x"))
        for status in ("broken", "open"):
            s.add(
                Promise(
                    invoice_id=ids["A4"],
                    status=status,
                    promised_date=d(2026, 3, 20),
                    amount_minor=200000,
                    created_by="s:x",
                )
            )
        s.add(PaymentPlan(invoice_id=ids["A8"], status="broken", installments=[], created_by="x"))
        s.add(
            UnbilledOrder(
                customer_id=ids["A"], external_id="O-1", amount_minor=25000, currency="EUR",
                created_by="x",
            )
        )  # fmt: skip
        s.commit()
    return ids


# -- behaviour and risk ------------------------------------------------------------------


EXPECTED_A = {
    "as_of": "2026-03-31",
    "computed": "on read",
    "invoice_count": 7,  # A1-A6 and A8 (A7 is cancelled)
    "open_invoices": 4,  # A4, A5, A6 (disputed), A8 (escalated)
    "paid_invoices": 3,  # A1, A2, A3
    "written_off_invoices": 0,
    "avg_days_late": "10.0",  # (10 + 0 + 20) / 3
    "weighted_days_late": "4.4",  # (10 x 100000 + 0 x 300000 + 20 x 50000) / 450000 = 4.44
    "max_days_late": 20,
    "avg_days_to_pay": "40.0",  # (40 + 30 + 50) / 3
    "paid_on_time": 1,  # A2
    "paid_on_time_pct": "33.3",  # 1 / 3
    "broken_promises": 1,
    "broken_plans": 1,
    "promises": {"total": 2, "open": 1, "kept_or_completed": 0, "broken": 1},
    "plans": {"total": 1, "open": 0, "kept_or_completed": 0, "broken": 1},
    "disputes": {"opened": 3, "open": 1, "upheld": 1, "rejected": 1},
    "balances": [
        {
            "currency": "EUR",
            "open_minor": 310000,  # 200000 + 80000 + 30000
            "overdue_minor": 200000,  # A4 (A6 is disputed, A5 not due)
            "disputed_minor": 30000,
            "unbilled_minor": 25000,
            "exposure_minor": 335000,  # 310000 + 25000
            "overdue_pct": "64.5",  # 200000 / 310000 = 64.516
        },
        {
            "currency": "USD",
            "open_minor": 10000,
            "overdue_minor": 10000,
            "disputed_minor": 0,
            "unbilled_minor": 0,
            "exposure_minor": 10000,
            "overdue_pct": "100.0",
        },
    ],
    "max_days_overdue": 90,  # A8: 2025-12-31 -> 2026-03-31
}


async def test_behaviour_figures_and_risk_of_a_customer(api: Api) -> None:
    resp = await api.send("PUT", f"/v1/customers/{api.ids['A']}/profile",
                          {"credit_limit_minor": 400000, "credit_currency": "EUR"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    body = await api.get(f"/v1/customers/{api.ids['A']}/behaviour")
    assert {k: body[k] for k in EXPECTED_A} == EXPECTED_A
    assert body["customer_id"] == api.ids["A"]
    assert body["credit"] == {
        "limit_minor": 400000,
        "currency": "EUR",
        "exposure_minor": 335000,
        "available_minor": 65000,  # 400000 - 335000
        "utilisation_pct": "83.8",  # 335000 / 400000 = 83.75
        "hold": True,  # A8 is 90 days overdue, more than high_risk's 30
        "hold_reason": "an invoice is overdue more than 30 days",
    }
    assert body["risk"] == {
        "score": 62,  # 4 + 13 + 20 + 5 + 10 + 5 + 5
        "band": "high",
        "reasons": [
            reason("weighted_days_late", "4.4", 4, 25,
                   "paid invoices were 4.4 days late on average, weighted by amount "
                   "(1 point per day)"),  # floor(4.4)
            reason("share_paid_late", "66.7", 13, 20,
                   "66.7 % of paid invoices were paid late (1 point per 5 %)"),  # 66.7 / 5 = 13.3
            reason("overdue_share", "100.0", 20, 20,
                   "100.0 % of the open USD balance is overdue (1 point per 5 %)"),  # worst: USD
            reason("broken_promises", "1", 5, 10,
                   "1 broken promise(s) to pay (5 points each)"),
            reason("broken_plans", "1", 10, 10, "1 broken payment plan(s) (10 points each)"),
            reason("rejected_disputes", "1", 5, 5, "1 dispute(s) rejected (5 points each)"),
            reason("credit_utilisation", "83.8", 5, 10,
                   "exposure is 83.8 % of the credit limit (5 points from 80 %, 10 from 100 %)"),
        ],
    }  # fmt: skip


def reason(factor: str, value: str, points: int, cap: int, text: str) -> dict[str, Any]:
    return {"factor": factor, "value": value, "points": points, "max_points": cap, "text": text}


async def test_days_late_are_counted_in_the_customers_time_zone(api: Api) -> None:
    body = await api.get(f"/v1/customers/{api.ids['B']}/behaviour")
    assert body["avg_days_late"] == "1.0"  # paid 02-11 01:00 in Tokyo, due 02-10
    assert body["weighted_days_late"] == "1.0"
    assert body["avg_days_to_pay"] == "31.0"  # 01-11 -> 02-11
    assert body["paid_on_time_pct"] == "0.0"
    assert body["balances"] == []
    assert body["max_days_overdue"] == 0
    assert body["risk"]["score"] == 21  # weighted 1 -> 1; 100 % late -> 20
    assert body["risk"]["band"] == "low"
    assert [r["factor"] for r in body["risk"]["reasons"]] == [
        "weighted_days_late",
        "share_paid_late",
    ]


async def test_a_customer_without_history_scores_zero(api: Api) -> None:
    body = await api.get(f"/v1/customers/{api.ids['C']}/behaviour")
    assert body["invoice_count"] == 0
    assert body["avg_days_late"] is None
    assert body["weighted_days_late"] is None
    assert body["paid_on_time_pct"] is None
    assert body["risk"] == {"score": 0, "band": "low", "reasons": []}
    assert body["credit"]["limit_minor"] is None


async def test_behaviour_is_computed_on_read_after_each_change(api: Api) -> None:
    with Session(api.engine) as s:  # A4 is paid on 03-30 (13 days late), as the workflow would
        inv = s.get(Invoice, api.ids["A4"])
        assert inv is not None
        inv.status, inv.balance_minor = "paid", 0
        s.add(inv)
        paid = at(2026, 3, 30)
        s.add(Payment(event_id="late", invoice_id=api.ids["A4"], amount_minor=200000,
                      currency="EUR", paid_at=paid, method="sepa", status="applied"))  # fmt: skip
        s.commit()
    body = await api.get(f"/v1/customers/{api.ids['A']}/behaviour")
    assert body["paid_invoices"] == 4
    assert body["avg_days_late"] == "10.8"  # (10 + 0 + 20 + 13) / 4 = 10.75
    # (1000000 + 0 + 1000000 + 13 x 200000) / 650000 = 4600000 / 650000 = 7.08
    assert body["weighted_days_late"] == "7.1"
    assert body["balances"][0]["overdue_minor"] == 0


def test_risk_bands() -> None:
    assert [band_of(s) for s in (0, 29, 30, 59, 60, 100)] == [
        "low", "low", "medium", "medium", "high", "high",
    ]  # fmt: skip


def test_risk_caps_each_factor(engine: Engine) -> None:
    with Session(engine) as s:
        c = Customer(external_id="X", name="X", timezone="UTC", broken_promises=7,
                     broken_plans=3, credit_limit_minor=0, credit_currency="EUR")  # fmt: skip
        s.add(c)
        s.commit()
        b = behaviour(s, c, NOW)
    r = risk(b)
    assert [(x.factor, x.points) for x in r.reasons] == [
        ("broken_promises", 10),  # 7 x 5 = 35, capped at 10
        ("broken_plans", 10),  # 3 x 10 = 30, capped at 10
    ]  # a limit of 0 with no exposure is not over it
    assert r.score == 20
    assert r.band == "low"


# -- segments ----------------------------------------------------------------------------


def seg(name: str, position: int, rules: list[dict[str, Any]], match: str = "all") -> Segment:
    return Segment(name=name, position=position, rules=rules, match=match,
                   policy_name="default", channels=["email"])  # fmt: skip


def test_segments_are_evaluated_in_order_first_match_wins(engine: Engine) -> None:
    with Session(engine) as s:
        c = Customer(external_id="Y", name="Y", timezone="UTC", annual_revenue_minor=5_000_000)
        s.add(c)
        s.commit()
        b = behaviour(s, c, NOW)
    big = seg("big", 20, [{"field": "annual_revenue_minor", "op": "gte", "value": 1_000_000}])
    rules = [
        {"field": "key_account", "op": "eq", "value": True},
        {"field": "risk_score", "op": "lt", "value": 50},
    ]
    vip = seg("vip", 10, rules, match="any")
    rest = seg("rest", 30, [])
    picked, why = segment_for(c, b, [rest, big, vip])  # given out of order
    assert picked.name == "vip"  # position 10: risk_score 0 < 50 holds (match any)
    assert why == ["vip: yes (key_account is false: fails = true or risk_score is 0: meets < 50)"]

    vip.match = "all"
    picked, why = segment_for(c, b, [rest, big, vip])
    assert picked.name == "big"
    assert why == [
        "vip: no (key_account is false: fails = true; risk_score is 0: meets < 50)",
        "big: yes (annual_revenue_minor is 5000000: meets >= 1000000)",
    ]
    c.annual_revenue_minor = None  # unknown never satisfies a rule
    picked, why = segment_for(c, b, [rest, big, vip])
    assert picked.name == "rest"
    assert why[1] == "big: no (annual_revenue_minor is unknown: fails >= 1000000)"
    assert why[2] == "rest: yes (no rules: every customer)"

    c.pinned_segment = "big"
    assert segment_for(c, b, [rest, big, vip]) == (big, ["big: pinned by the customer's profile"])
    c.pinned_segment = "gone"
    picked, why = segment_for(c, b, [rest, big, vip])
    assert picked.name == "rest"
    assert why[0] == "pinned segment 'gone' does not exist: rules apply"

    picked, why = segment_for(c, b, [big])  # nothing matches: the last one
    assert picked.name == "big"
    assert why[-1] == "no segment matched: the last one, big"


async def test_default_segments_and_their_policies(api: Api) -> None:
    resp = await api.http.get("/v1/segments", headers=role("viewer"))
    assert resp.status_code == 200
    got = [(x["name"], x["position"], x["policy_name"], x["rules"], x["channels"], x["sender"],
            x["statement_day"], x["hold_overdue_days"]) for x in resp.json()]  # fmt: skip
    assert got == [
        ("key_account", 10, "key_account", [{"field": "key_account", "op": "eq", "value": True}],
         ["email", "letter", "call"], "collector", 1, 90),
        ("high_risk", 20, "high_risk", [{"field": "risk_score", "op": "gte", "value": 60}],
         ["email", "sms", "call", "letter"], "team", None, 30),
        ("standard", 100, "default", [], ["email", "sms", "call", "letter"], "team", None, None),
    ]  # fmt: skip
    with Session(api.engine) as s:
        policies = {p.name: p for p in s.exec(select(DunningPolicy)).all()}
    high = policies["high_risk"]
    assert high.escalate_after == "P21D"
    assert [(x["key"], x["offset"], x["channel"]) for x in high.steps][:2] == [
        ("before_due", "-P3D", "email"),
        ("due_date_call", "P0D", "call"),  # a call task on the due date
    ]
    key = policies["key_account"]
    assert all(x["channel"] != "sms" and "sms" not in x["fallback"] for x in key.steps)
    assert key.escalate_after == "P90D"


async def test_segment_order_pinning_and_events(api: Api) -> None:
    a = api.ids["A"]
    # A's risk without a credit limit: 4 + 13 + 20 + 5 + 10 + 5 = 57: standard stays.
    first = await api.send("PUT", f"/v1/customers/{a}/profile", {"assigned_collector": " ann "})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["segment_changed"], body["segment"]) == (False, "standard")
    assert body["segment_reasons"] == [
        "key_account: no (key_account is false: fails = true)",
        "high_risk: no (risk_score is 57: fails >= 60)",
        "standard: yes (no rules: every customer)",
    ]
    assert body["profile"]["assigned_collector"] == "ann"
    assert body["credit_hold_changed"] is True  # A8: 90 days overdue > standard's 60
    assert body["profile"]["credit_hold_reason"] == "an invoice is overdue more than 60 days"

    # A credit limit of 400000 EUR adds 5 (83.8 % used): 62, high risk.
    second = await api.send("PUT", f"/v1/customers/{a}/profile",
                            {"credit_limit_minor": 400000, "credit_currency": "EUR"})  # fmt: skip
    body = second.json()
    assert (body["segment_changed"], body["previous_segment"], body["segment"]) == (
        True, "standard", "high_risk",
    )  # fmt: skip
    assert body["changed_fields"] == ["credit_currency", "credit_limit_minor"]
    assert body["segment_reasons"][1] == "high_risk: yes (risk_score is 62: meets >= 60)"
    # A's open invoices on another policy than high_risk's: A4, A5, A6, A8 (all on default)
    assert body["policy_change_invoice_ids"] == sorted(api.ids[k] for k in ("A4", "A5", "A6", "A8"))
    assert body["credit_hold_changed"] is True  # now high_risk's 30 days
    assert body["profile"]["credit_hold_reason"] == "an invoice is overdue more than 30 days"

    # Key accounts come before high risk, whatever the score.
    third = (await api.send("PUT", f"/v1/customers/{a}/profile", {"key_account": True})).json()
    assert (third["segment"], third["segment_reasons"]) == (
        "key_account", ["key_account: yes (key_account is true: meets = true)"],
    )  # fmt: skip
    assert third["profile"]["statement_day"] == 1  # the key account segment's statement
    assert third["credit_hold_changed"] is True  # key accounts: hold after 90 days; A8 is 90
    assert third["profile"]["credit_hold"] is False

    pinned = (await api.send("PUT", f"/v1/customers/{a}/profile", {"segment": "standard"})).json()
    assert (pinned["segment"], pinned["segment_reasons"]) == (
        "standard", ["standard: pinned by the customer's profile"],
    )  # fmt: skip
    assert pinned["profile"]["pinned_segment"] == "standard"
    assert pinned["profile"]["statement_day"] is None  # it came from key_account
    assert pinned["profile"]["credit_hold"] is True  # standard: 60 days

    unpinned = (await api.send("PUT", f"/v1/customers/{a}/profile", {"segment": None})).json()
    assert unpinned["segment"] == "key_account"
    assert unpinned["profile"]["pinned_segment"] is None

    events = (await api.http.get(f"/v1/customers/{a}/events", headers=role("viewer"))).json()
    kinds = [(e["kind"], e["data"].get("from"), e["data"].get("to")) for e in events]
    assert kinds == [
        ("profile_updated", None, None),
        ("credit_hold_on", None, None),
        ("profile_updated", None, None),
        ("segment_changed", "standard", "high_risk"),
        ("credit_hold_changed", None, None),
        ("profile_updated", None, None),
        ("segment_changed", "high_risk", "key_account"),
        ("credit_hold_off", None, None),
        ("profile_updated", None, None),
        ("segment_changed", "key_account", "standard"),
        ("credit_hold_on", None, None),
        ("profile_updated", None, None),
        ("segment_changed", "standard", "key_account"),
        ("credit_hold_off", None, None),
    ]
    data = [e["data"] for e in events]
    assert data[0] == {"changes": {"assigned_collector": {"from": None, "to": "ann"}}}
    assert data[2] == {"changes": {
        "credit_limit_minor": {"from": None, "to": 400000},
        "credit_currency": {"from": None, "to": "EUR"},
    }}  # fmt: skip
    assert data[3] == {
        "from": "standard",
        "to": "high_risk",
        "policy": "high_risk",
        "reasons": body["segment_reasons"],
        "invoice_ids": body["policy_change_invoice_ids"],
    }
    assert data[4] == {
        "causes": ["overdue"],
        "reason": "an invoice is overdue more than 30 days",
        "was": "an invoice is overdue more than 60 days",
        "exposure_minor": 335000,
        "limit_minor": 400000,
        "currency": "EUR",
        "overdue_days_limit": 30,
        "overdue_invoice_ids": [api.ids["A8"]],
        "max_days_overdue": 90,
    }
    assert data[6]["statement_day"] == {"from": None, "to": 1}
    assert data[9]["statement_day"] == {"from": 1, "to": None}
    assert all(e["actor"].startswith("specialist:") for e in events)
    only = await api.http.get(f"/v1/customers/{a}/events", params={"kind": "segment_changed"},
                              headers=role("viewer"))  # fmt: skip
    assert len(only.json()) == 4
    missing = await api.http.get("/v1/customers/999999/events", headers=role("viewer"))
    assert missing.status_code == 404


async def test_profile_validation_and_roles(api: Api) -> None:
    a = api.ids["A"]
    for body, words in (
        ({"segment": "nope"}, "unknown segment 'nope'"),
        ({"credit_limit_minor": 100}, "give credit_currency with credit_limit_minor"),
        ({"credit_currency": "EUR"}, "give credit_limit_minor with credit_currency"),
        ({"credit_limit_minor": 100, "credit_currency": "XYZ"}, "unknown currency"),
        ({"credit_limit_minor": 12.5, "credit_currency": "EUR"}, "valid integer"),
        ({"key_account": None}, "key_account must be true or false"),
        ({"assigned_collector": "  "}, "must not be blank"),
        ({"colour": "red"}, "unknown field"),
    ):
        resp = await api.send("PUT", f"/v1/customers/{a}/profile", body)
        assert resp.status_code == 422, (body, resp.text)
        assert words in resp.json()["error"]["message"], (body, resp.text)
    assert (
        await api.send("PUT", f"/v1/customers/{a}/profile", {}, who="viewer")
    ).status_code == 403
    assert (await api.send("PUT", "/v1/customers/999999/profile", {})).status_code == 404
    # A limit cleared takes its currency with it (moving a limit to another currency and
    # clearing it both raise it: the admin's).
    await api.send("PUT", f"/v1/customers/{a}/profile",
                   {"credit_limit_minor": 5, "credit_currency": "USD"}, who="admin")  # fmt: skip
    cleared = await api.send(
        "PUT", f"/v1/customers/{a}/profile", {"credit_limit_minor": None}, who="admin"
    )
    assert cleared.json()["profile"]["credit_currency"] is None
    got = await api.get(f"/v1/customers/{a}/profile")
    assert got["profile"]["credit_limit_minor"] is None
    assert got["evaluated_segment"] == "standard"
    assert got["risk"]["score"] == 57


async def test_segments_can_be_added_and_changed(api: Api) -> None:
    body = {
        "name": "big_spenders",
        "position": 5,
        "rules": [{"field": "annual_revenue_minor", "op": "gte", "value": "1000000.50"}],
        "policy_name": "default",
        "channels": ["email"],
    }
    assert (await api.send("POST", "/v1/segments", body)).status_code == 403  # admins only
    created = await api.send("POST", "/v1/segments", body, who="admin")
    assert created.status_code == 201, created.text
    assert created.json()["rules"] == [
        {"field": "annual_revenue_minor", "op": "gte", "value": "1000000.50"}
    ]
    dup = await api.send("POST", "/v1/segments", body, who="admin")
    assert dup.status_code == 409
    for bad, words in (
        ({"policy_name": "nope"}, "unknown policy 'nope'"),
        ({"rules": [{"field": "shoe_size", "op": "eq", "value": 1}]}, "unknown rule field"),
        ({"rules": [{"field": "key_account", "op": "gt", "value": True}]}, "eq and ne only"),
        ({"rules": [{"field": "risk_score", "op": "gt", "value": True}]}, "takes a number"),
        ({"channels": ["email", "email"]}, "must not repeat"),
        ({"channels": ["fax"]}, "channels.0"),
    ):
        resp = await api.send("POST", "/v1/segments", body | {"name": "x"} | bad, who="admin")
        assert resp.status_code == 422, (bad, resp.text)
        assert words in resp.text, (bad, resp.text)

    a = api.ids["A"]
    await api.send("PUT", f"/v1/customers/{a}/profile", {"annual_revenue_minor": 2_000_000})
    with Session(api.engine) as s:
        customer = s.get(Customer, a)
        assert customer is not None and customer.segment == "big_spenders"
    update = {k: v for k, v in body.items() if k != "name"} | {
        "rules": [{"field": "annual_revenue_minor", "op": "gte", "value": 3_000_000}]
    }
    changed = await api.send("PUT", "/v1/segments/big_spenders", update, who="admin")
    assert changed.status_code == 200, changed.text
    moved = await api.send("POST", "/v1/segments/reevaluate", None, who="admin")
    assert moved.status_code == 200, moved.text
    by_customer = {r["profile"]["customer_id"]: r for r in moved.json()}
    assert by_customer[a]["segment"] == "standard"
    assert by_customer[a]["previous_segment"] == "big_spenders"
    assert (await api.send("PUT", "/v1/segments/nope", update, who="admin")).status_code == 404


# -- credit --------------------------------------------------------------------------------


async def test_credit_check_approve_decline_and_hold_on_and_off(api: Api) -> None:
    c = api.ids["C"]
    check = f"/v1/customers/{c}/credit-check"

    no_limit = (await api.send("POST", check, {"amount_minor": 10**9, "currency": "EUR"})).json()
    assert (no_limit["decision"], no_limit["code"], no_limit["limit_minor"]) == (
        "approve", "no_limit", None,
    )  # fmt: skip

    await api.send("PUT", f"/v1/customers/{c}/profile",
                   {"credit_limit_minor": 100000, "credit_currency": "EUR"})  # fmt: skip
    order = {"external_id": "SO-1", "amount_minor": 30000, "currency": "EUR"}
    assert (await api.send("POST", f"/v1/customers/{c}/orders", order)).status_code == 201
    again = await api.send("POST", f"/v1/customers/{c}/orders", order)
    assert again.status_code == 200  # the same order again: stored once
    other = await api.send("POST", f"/v1/customers/{c}/orders", order | {"amount_minor": 1})
    assert other.status_code == 409
    with Session(api.engine) as s:  # an open invoice of 50000, due in the future
        policy = s.exec(select(DunningPolicy)).first()
        assert policy is not None and policy.id is not None
        s.add(Invoice(external_id="C1", number="C1", currency="EUR", issued_on=date(2026, 3, 20),
                      due_date=date(2026, 4, 19), customer_id=c, policy_id=policy.id,
                      amount_minor=50000, balance_minor=50000, request_hash="x" * 64,
                      due_at=at(2026, 4, 19, 23)))  # fmt: skip
        s.commit()

    ok = (await api.send("POST", check, {"amount_minor": 20000, "currency": "EUR"})).json()
    assert ok == {
        "decision": "approve",
        "code": "within_limit",
        "reason": "exposure 80000 + 20000 = 100000 is within 100000",  # 50000 + 30000 order
        "currency": "EUR",
        "amount_minor": 20000,
        "exposure_minor": 80000,
        "limit_minor": 100000,
        "available_minor": 20000,
        "credit_hold": False,
    }
    over = (await api.send("POST", check, {"amount_minor": 20001, "currency": "EUR"})).json()
    assert (over["decision"], over["code"], over["reason"]) == (
        "decline", "over_limit",
        "exposure 80000 + 20001 = 100001 would pass the credit limit 100000 EUR",
    )  # fmt: skip
    usd = await api.send("POST", check, {"amount_minor": 1, "currency": "USD"})
    assert usd.status_code == 422
    assert "the credit limit is in EUR" in usd.json()["error"]["message"]
    bad = await api.send("POST", check, {"amount_minor": "5", "currency": "EUR"})
    assert bad.status_code == 422

    # A second order takes exposure to 110000: over the limit, the account goes on hold.
    order2 = {"external_id": "SO-2", "amount_minor": 30000, "currency": "EUR"}
    assert (await api.send("POST", f"/v1/customers/{c}/orders", order2)).status_code == 201
    held = (await api.send("POST", check, {"amount_minor": 1, "currency": "EUR"})).json()
    assert (held["decision"], held["code"], held["credit_hold"], held["available_minor"]) == (
        "decline", "credit_hold", True, 0,
    )  # fmt: skip
    assert held["reason"] == (
        "the account is on credit hold: exposure is over the credit limit (EUR)"
    )
    orders = await api.http.get(f"/v1/customers/{c}/orders", headers=role("viewer"))
    assert [o["external_id"] for o in orders.json()] == ["SO-1", "SO-2"]

    # SO-2 is invoiced: deleted from the orders, the hold lifts.
    assert (await api.send("DELETE", f"/v1/customers/{c}/orders/SO-2")).status_code == 204
    assert (await api.send("DELETE", f"/v1/customers/{c}/orders/SO-2")).status_code == 404
    lifted = (await api.send("POST", check, {"amount_minor": 1, "currency": "EUR"})).json()
    assert (lifted["decision"], lifted["credit_hold"]) == ("approve", False)

    # C1 becomes 75 days overdue (more than standard's 60): hold again, whatever the limit.
    with Session(api.engine) as s:
        inv = s.exec(select(Invoice).where(Invoice.external_id == "C1")).one()
        inv.due_date = date(2026, 1, 15)
        s.add(inv)
        s.commit()
        c1 = inv.id
    late = (await api.send("POST", check, {"amount_minor": 1, "currency": "EUR"})).json()
    assert (late["decision"], late["reason"]) == (
        "decline", "the account is on credit hold: an invoice is overdue more than 60 days",
    )  # fmt: skip

    # It is paid (what the workflow's record_payment activity does), then the payment path
    # calls reassess_credit_hold: the hold lifts.
    with Session(api.engine) as s:
        inv2 = s.get(Invoice, c1)
        assert inv2 is not None
        inv2.status, inv2.balance_minor = "paid", 0
        s.add(inv2)
        state = reassess_credit_hold(s, c, actor="workflow", now=NOW)
        s.commit()
    assert (state.on, state.changed, state.reason) == (False, True, None)

    events = await api.http.get(f"/v1/customers/{c}/events", headers=role("viewer"))
    holds = [(e["kind"], e["actor"].split(":")[0], e["data"].get("causes"))
             for e in events.json() if e["kind"].startswith("credit_hold")]  # fmt: skip
    assert holds == [
        ("credit_hold_on", "specialist", ["over_limit"]),
        ("credit_hold_off", "specialist", None),
        ("credit_hold_on", "specialist", ["overdue"]),
        ("credit_hold_off", "workflow", None),
    ]
    with Session(api.engine) as s:
        customer = s.get(Customer, c)
        assert customer is not None
        assert (customer.credit_hold, customer.credit_hold_reason) == (False, None)


async def test_refresh_customer_is_what_the_workflow_side_calls(api: Api) -> None:
    with Session(api.engine) as s:
        customer = s.get(Customer, api.ids["A"])
        assert customer is not None
        customer.credit_limit_minor, customer.credit_currency = 400000, "EUR"
        s.add(customer)
        s.commit()
        done = refresh_customer(s, api.ids["A"], now=NOW)
        s.commit()
    assert (done.segment.previous, done.segment.segment, done.segment.changed) == (
        "standard", "high_risk", True,
    )  # fmt: skip
    assert done.segment.invoice_ids == sorted(api.ids[k] for k in ("A4", "A5", "A6", "A8"))
    assert (done.hold.on, done.hold.causes) == (True, ["overdue"])
    with Session(api.engine) as s:
        events = s.exec(select(CustomerEvent).where(CustomerEvent.customer_id == api.ids["A"]))
        assert [(e.kind, e.actor) for e in events.all()] == [
            ("segment_changed", "workflow"),
            ("credit_hold_on", "workflow"),
        ]
        again = refresh_customer(s, api.ids["A"], now=NOW)
        assert (again.segment.changed, again.hold.changed) == (False, False)


def test_default_segments_are_created_once(engine: Engine) -> None:
    with Session(engine) as s:
        ensure_default_segments(s)
        ensure_default_segments(s)
        rows = s.exec(select(Segment).order_by(col(Segment.id))).all()
        assert [x.name for x in rows] == ["key_account", "high_risk", "standard"]
