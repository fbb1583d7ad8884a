"""Champion / challenger: stable arm assignment (pure), the experiment report on a fixed data
set written straight into the database (SQLite and PostgreSQL; every figure worked out by hand
in the comments), and the experiment's routes on a running stack (assignment at creation
through the API and the bulk import, promotion, the 4xx cases).

The report's data set ("today" is 2026-06-30; segment ``smb``; experiment E1 started
2026-01-01 00:00 UTC, champion ``default`` v1, challenger ``gentle`` v1, 50%):

Champion arm (customers A1, A2):

- I1 A1 EUR issued 03-01 due 03-31 100000: paid 60000 on 03-20 and 40000 on 04-20 (last
  payment 20 days after due; 50 days after issue); a refund of 1000 and an unapplied 5000
  payment do not count. 2 reminders.
- I2 A1 EUR issued 03-01 due 03-31  50000: paid 06-10 (71 days after due, 101 after issue).
  3 reminders.
- I3 A2 USD issued 04-01 due 05-01  30000: open; a dispute. 1 reminder.
- I4 A2 EUR issued 05-20 due 06-19  20000: paid 06-15 (4 days early; 26 after issue).
- I5 A1 EUR cancelled (void: counts nowhere, nor its reminder).
- Contact blocks: A1 email "unsubscribed" 02-01 (an opt-out); A2 sms "bounced" 03-01 (not
  an opt-out); A2 letter "opt_out" 2025-12-01 (before the experiment).

Challenger arm (customers B1, B2):

- J1 B1 EUR issued 03-01 due 03-31 80000: paid 04-05 (5 after due, 35 after issue).
- J2 B1 EUR issued 03-05 due 04-04 40000: paid 05-20 (46 after due, 76 after issue). 2 reminders.
- J3 B2 EUR issued 03-10 due 04-09 60000: paid 04-09 (0 after due, 30 after issue).
- J4 B2 EUR issued 04-01 due 05-01 25000: open. 2 reminders.
- Contact blocks: B2 sms "stop" 04-01 (an opt-out).

Outside E1: K1 (B1, experiment E0, ended before E1) and K2 (A1, no experiment).

A window of N days is over when due + N < today (06-30): due 03-31 -> 30: 04-30, 60: 05-30,
90: 06-29 (all over); due 05-01 -> 30: 05-31 (over), 60: 06-30 (not over).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from statsmodels.stats.proportion import confint_proportions_2indep
from temporalio.testing import WorkflowEnvironment

from arflow.invoices import bulk
from arflow.invoices.arms import arm, bucket
from arflow.policies import service as policies
from models import (
    ContactBlock,
    Customer,
    Dispute,
    DunningPolicy,
    Experiment,
    Invoice,
    InvoiceEvent,
    Payment,
    Segment,
)
from models.invoice import InvoiceCreate
from models.policy import DunningPolicyCreate, ReminderStep
from tests.conftest import API_KEYS, Harness, harness
from tests.test_reports import reports_api

TODAY = date(2026, 6, 30)
VIEWER = {"Authorization": f"Bearer {API_KEYS['viewer']}"}


# -- stable assignment ------------------------------------------------------------------


def test_arm_is_a_fixed_function_of_segment_and_customer() -> None:
    # SHA-256 of "standard:1" etc., first 8 bytes big-endian, mod 100 (worked out once with
    # hashlib): the same in every process and release, unlike Python's hash() of a str, which
    # changes with PYTHONHASHSEED.
    assert [bucket("standard", i) for i in (1, 2, 3, 4, 5)] == [73, 87, 47, 71, 87]
    assert [bucket("high_risk", i) for i in (1, 2, 3, 4, 5)] == [99, 10, 36, 78, 23]
    assert [arm("standard", i, 72) for i in (1, 3, 4)] == ["champion", "challenger", "challenger"]
    assert arm("standard", 1, 74) == "challenger"


@settings(max_examples=200, deadline=None)
@given(
    segment=st.from_regex(r"[a-z0-9_\-]{1,50}", fullmatch=True),
    customer_id=st.integers(min_value=1, max_value=2**31 - 1),
    share=st.integers(min_value=0, max_value=100),
)
def test_a_customer_always_gets_the_same_arm(segment: str, customer_id: int, share: int) -> None:
    first = arm(segment, customer_id, share)
    assert all(arm(segment, customer_id, share) == first for _ in range(3))
    assert first == ("challenger" if bucket(segment, customer_id) < share else "champion")
    # A larger share only moves champions to the challenger, never the other way.
    if first == "challenger":
        assert arm(segment, customer_id, min(100, share + 10)) == "challenger"
    assert arm(segment, customer_id, 0) == "champion"
    assert arm(segment, customer_id, 100) == "challenger"


@pytest.mark.parametrize("share", [1, 10, 20, 50, 80, 99])
@pytest.mark.parametrize("segment", ["standard", "smb"])
def test_the_share_holds_over_10000_customers(segment: str, share: int) -> None:
    on_challenger = sum(arm(segment, i, share) == "challenger" for i in range(1, 10_001))
    assert abs(on_challenger / 100 - share) <= 2, on_challenger


# -- the report on a fixed data set ------------------------------------------------------


def at(y: int, m: int, d: int, hh: int = 12) -> datetime:
    return datetime(y, m, d, hh, tzinfo=UTC)


class Reports:
    def __init__(self, http: httpx.AsyncClient, ids: dict[str, int]) -> None:
        self.http = http
        self.ids = ids

    async def get(self, segment: str, **params: Any) -> httpx.Response:
        return await self.http.get(
            f"/v1/reports/experiments/{segment}", params=params, headers=VIEWER
        )

    async def json(self, segment: str, **params: Any) -> dict[str, Any]:
        resp = await self.get(segment, **params)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


@pytest.fixture
async def r(engine: Engine, tmp_path: Path) -> AsyncIterator[Reports]:
    ids = build_data_set(engine)
    async with reports_api(engine, tmp_path, TODAY) as (http, _):
        yield Reports(http, ids)


GENTLE = DunningPolicyCreate(
    name="gentle",
    escalate_after="P60D",
    steps=[ReminderStep(key="late_14", offset="P14D", template="reminder_overdue")],
)


def build_data_set(engine: Engine) -> dict[str, int]:
    ids: dict[str, int] = {}
    with Session(engine) as s:
        default = policies.ensure_default_policy(s)
        gentle = policies.create_policy(s, GENTLE)
        assert default.id is not None and gentle.id is not None
        for name in ("smb", "quiet"):
            s.add(Segment(name=name, policy_name="default", channels=["email"], rules=[]))
        s.flush()
        e0 = Experiment(
            segment="smb",
            champion_policy="default",
            champion_version=1,
            challenger_policy="gentle",
            challenger_version=1,
            share_pct=20,
            started_at=at(2025, 10, 1, 0),
            started_by="admin",
            ended_at=at(2025, 12, 31, 23),
            ended_by="admin",
            outcome="replaced",
        )
        e1 = Experiment(
            segment="smb",
            champion_policy="default",
            champion_version=1,
            challenger_policy="gentle",
            challenger_version=1,
            share_pct=50,
            started_at=at(2026, 1, 1, 0),
            started_by="admin",
        )
        s.add_all([e0, e1])
        s.flush()
        assert e0.id is not None and e1.id is not None
        ids["E0"], ids["E1"] = e0.id, e1.id
        smb = s.exec(select(Segment).where(Segment.name == "smb")).one()
        smb.experiment_id = e1.id
        smb.challenger_policy, smb.challenger_version, smb.challenger_share_pct = "gentle", 1, 50
        s.add(smb)
        for key in ("A1", "A2", "B1", "B2"):
            c = Customer(external_id=key, name=key, segment="smb", timezone="UTC")
            s.add(c)
            s.flush()
            assert c.id is not None
            ids[key] = c.id

        def invoice(
            key: str,
            customer: str,
            currency: str,
            issued: date,
            due: date,
            amount: int,
            status: str,
            arm_: str | None,
            experiment: str | None = "E1",
        ) -> None:
            policy = gentle if arm_ == "challenger" else default
            inv = Invoice(
                external_id=key,
                number=key,
                currency=currency,
                issued_on=issued,
                due_date=due,
                customer_id=ids[customer],
                policy_id=policy.id or 0,
                amount_minor=amount,
                balance_minor=0 if status == "paid" else amount,
                due_at=datetime.combine(due, datetime.max.time(), tzinfo=UTC),
                status=status,
                request_hash="x" * 64,
                experiment_id=ids[experiment] if experiment else None,
                experiment_arm=arm_,
            )
            s.add(inv)
            s.flush()
            assert inv.id is not None
            ids[key] = inv.id

        d = date
        ch, cl = "champion", "challenger"
        invoice("I1", "A1", "EUR", d(2026, 3, 1), d(2026, 3, 31), 100000, "paid", ch)
        invoice("I2", "A1", "EUR", d(2026, 3, 1), d(2026, 3, 31), 50000, "paid", ch)
        invoice("I3", "A2", "USD", d(2026, 4, 1), d(2026, 5, 1), 30000, "open", ch)
        invoice("I4", "A2", "EUR", d(2026, 5, 20), d(2026, 6, 19), 20000, "paid", ch)
        invoice("I5", "A1", "EUR", d(2026, 3, 2), d(2026, 4, 1), 10000, "cancelled", ch)
        invoice("J1", "B1", "EUR", d(2026, 3, 1), d(2026, 3, 31), 80000, "paid", cl)
        invoice("J2", "B1", "EUR", d(2026, 3, 5), d(2026, 4, 4), 40000, "paid", cl)
        invoice("J3", "B2", "EUR", d(2026, 3, 10), d(2026, 4, 9), 60000, "paid", cl)
        invoice("J4", "B2", "EUR", d(2026, 4, 1), d(2026, 5, 1), 25000, "open", cl)
        invoice("K1", "B1", "EUR", d(2025, 11, 1), d(2025, 12, 1), 70000, "paid", cl, "E0")
        invoice("K2", "A1", "EUR", d(2026, 3, 1), d(2026, 3, 31), 90000, "paid", None, None)

        def pay(
            key: str, amount: int, when: datetime, kind: str = "payment", status: str = "applied"
        ) -> None:
            s.add(
                Payment(
                    event_id=f"ev-{uuid.uuid4().hex}",
                    invoice_id=ids[key],
                    amount_minor=amount,
                    currency="USD" if key == "I3" else "EUR",
                    paid_at=when,
                    method="transfer",
                    kind=kind,
                    status=status,
                )
            )

        pay("I1", 60000, at(2026, 3, 20))
        pay("I1", 40000, at(2026, 4, 20, 23))  # 23:00 UTC is still 04-20
        pay("I1", 1000, at(2026, 5, 1), kind="refund")
        pay("I2", 50000, at(2026, 6, 10))
        pay("I2", 5000, at(2026, 6, 20), status="unapplied")
        pay("I4", 20000, at(2026, 6, 15))
        pay("J1", 80000, at(2026, 4, 5))
        pay("J2", 40000, at(2026, 5, 20))
        pay("J3", 60000, at(2026, 4, 9, 0))
        pay("K1", 70000, at(2025, 12, 20))
        pay("K2", 90000, at(2026, 4, 1))

        def events(key: str, kind: str, n: int) -> None:
            for i in range(n):
                s.add(InvoiceEvent(invoice_id=ids[key], actor="workflow", kind=kind,
                                   data={"step": f"s{i}"}, at=at(2026, 4, 1)))  # fmt: skip

        events("I1", "reminder_sent", 2)
        events("I1", "note_added", 1)  # not a reminder
        events("I2", "reminder_sent", 3)
        events("I3", "reminder_sent", 1)
        events("I5", "reminder_sent", 1)  # void invoice
        events("J2", "reminder_sent", 2)
        events("J4", "reminder_sent", 2)
        events("K1", "reminder_sent", 4)  # the earlier experiment
        s.add(Dispute(invoice_id=ids["I3"], status="open", reason="wrong", opened_by="portal",
                      opened_at=at(2026, 5, 10)))  # fmt: skip

        def block(customer: str, channel: str, reason: str, when: datetime) -> None:
            s.add(ContactBlock(customer_id=ids[customer], channel=channel, reason=reason,
                               source="test", created_at=when))  # fmt: skip

        block("A1", "email", "unsubscribed", at(2026, 2, 1))
        block("A2", "sms", "bounced", at(2026, 3, 1))
        block("A2", "letter", "opt_out", at(2025, 12, 1))
        block("B2", "sms", "stop", at(2026, 4, 1))
        s.commit()
    return ids


def amounts(arm_report: dict[str, Any], currency: str) -> dict[str, Any]:
    return next(c for c in arm_report["currencies"] if c["currency"] == currency)


def collected(part: dict[str, Any]) -> list[tuple[int, ...]]:
    return [tuple(v for k, v in c.items() if k != "days") for c in part["collected"]]


async def test_report_figures_on_the_fixed_data_set(r: Reports) -> None:
    body = await r.json("smb")
    assert body["segment"] == "smb" and body["today"] == "2026-06-30"
    assert body["message"] is None
    exp = body["experiment"]
    assert (exp["id"], exp["running"], exp["share_pct"]) == (r.ids["E1"], True, 50)
    champion, challenger = body["arms"]
    assert (champion["arm"], champion["policy"], champion["version"]) == ("champion", "default", 1)
    assert (challenger["arm"], challenger["policy"], challenger["version"]) == (
        "challenger",
        "gentle",
        1,
    )

    # Champion: I1..I4 (I5 void), customers A1 and A2.
    assert (champion["invoices"], champion["customers"], champion["paid"]) == (4, 2, 3)
    # (eligible, invoices, share): 30 days: I1, I2, I3 over, I1 in time -> 1/3;
    # 60: I1, I2 over (I3's ends 06-30), I1 -> 1/2; 90: I1, I2 -> 2/2.
    assert [(c["days"], c["eligible"], c["invoices"], c["share_pct"]) for c in
            champion["collected"]] == [(30, 3, 1, "33.3"), (60, 2, 1, "50.0"),
                                       (90, 2, 2, "100.0")]  # fmt: skip
    # days to pay 50, 101, 26 -> 177 / 3; late 20, 71, -4 -> 87 / 3
    assert (champion["avg_days_to_pay"], champion["avg_days_late"]) == ("59.0", "29.0")
    # reminders 2 + 3 + 1 (I5's is void); a dispute on I3; A1's unsubscribe (A2's bounce is no
    # opt-out, its letter opt-out came before the experiment)
    assert (champion["reminders_sent"], champion["disputes_opened"], champion["opt_outs"]) == (
        6,
        1,
        1,
    )
    eur = amounts(champion, "EUR")
    assert (eur["invoices"], eur["amount_minor"]) == (3, 170000)
    # eligible amounts 30/60/90: I1 + I2 = 150000; collected: I1 100000, I1 100000, both 150000
    assert [(c["days"], c["eligible_minor"], c["collected_minor"]) for c in eur["collected"]] == [
        (30, 150000, 100000),
        (60, 150000, 100000),
        (90, 150000, 150000),
    ]
    # received 60000 + 40000 + 50000 + 20000 (not the refund, not the unapplied 5000);
    # 5 EUR reminders per 1,000.00 EUR: 5 x 100000 / 170000 = 2.94
    assert (eur["received_minor"], eur["reminders_sent"]) == (170000, 5)
    assert eur["reminders_per_1000_collected"] == "2.9"
    usd = amounts(champion, "USD")
    assert (usd["invoices"], usd["amount_minor"], usd["received_minor"]) == (1, 30000, 0)
    assert [(c["eligible_minor"], c["collected_minor"]) for c in usd["collected"]] == [
        (30000, 0),
        (0, 0),
        (0, 0),
    ]
    assert (usd["reminders_sent"], usd["reminders_per_1000_collected"]) == (1, None)

    # Challenger: J1..J4, customers B1 and B2 (K1 belongs to the earlier experiment).
    assert (challenger["invoices"], challenger["customers"], challenger["paid"]) == (4, 2, 3)
    # 30: all four over, J1 (5) and J3 (0) in time -> 2/4; 60: J1, J2, J3 over (J4's ends
    # 06-30), all three -> 3/3; 90: only J1's is over -> 1/1
    assert [(c["days"], c["eligible"], c["invoices"], c["share_pct"]) for c in
            challenger["collected"]] == [(30, 4, 2, "50.0"), (60, 3, 3, "100.0"),
                                         (90, 1, 1, "100.0")]  # fmt: skip
    # days to pay 35, 76, 30 -> 141 / 3; late 5, 46, 0 -> 51 / 3
    assert (challenger["avg_days_to_pay"], challenger["avg_days_late"]) == ("47.0", "17.0")
    assert (
        challenger["reminders_sent"],
        challenger["disputes_opened"],
        challenger["opt_outs"],
    ) == (4, 0, 1)
    eur = amounts(challenger, "EUR")
    assert [c["currency"] for c in challenger["currencies"]] == ["EUR"]
    assert (eur["invoices"], eur["amount_minor"], eur["received_minor"]) == (4, 205000, 180000)
    assert [(c["eligible_minor"], c["collected_minor"]) for c in eur["collected"]] == [
        (205000, 140000),  # J1 + J3
        (180000, 180000),  # J1 + J2 + J3
        (80000, 80000),  # J1
    ]
    # 4 x 100000 / 180000 = 2.22
    assert eur["reminders_per_1000_collected"] == "2.2"

    # The difference in the 60-day share: 3/3 - 1/2 = 50 points, with statsmodels' interval.
    diff = body["difference"]
    assert (diff["champion_pct"], diff["challenger_pct"], diff["difference_pct"]) == (
        "50.0",
        "100.0",
        "50.0",
    )
    low, high = confint_proportions_2indep(3, 3, 1, 2, method="newcomb", compare="diff")
    assert Decimal(diff["ci_low_pct"]) == round(Decimal(float(low) * 100), 1)
    assert Decimal(diff["ci_high_pct"]) == round(Decimal(float(high) * 100), 1)
    assert (diff["ci_low_pct"], diff["ci_high_pct"], diff["confidence_pct"]) == (
        "-19.3",
        "90.5",
        95,
    )


async def test_an_earlier_experiment_and_the_empty_cases(r: Reports) -> None:
    body = await r.json("smb", experiment_id=r.ids["E0"])
    assert (body["experiment"]["outcome"], body["experiment"]["running"]) == ("replaced", False)
    champion, challenger = body["arms"]
    assert (champion["invoices"], challenger["invoices"]) == (0, 1)  # K1
    assert (challenger["paid"], challenger["reminders_sent"]) == (1, 4)
    # K1 paid 19 days after due: in time for every window; no champion invoice: no interval
    assert [(c["eligible"], c["invoices"]) for c in challenger["collected"]] == [(1, 1)] * 3
    assert body["difference"]["difference_pct"] is None
    assert body["difference"]["ci_low_pct"] is None

    quiet = await r.json("quiet")  # a segment that never ran one
    assert (quiet["experiment"], quiet["arms"], quiet["difference"]) == (None, [], None)
    assert quiet["message"] == "segment 'quiet' has never run an experiment"

    assert (await r.get("nosuch")).status_code == 404
    assert (await r.get("quiet", experiment_id=r.ids["E1"])).status_code == 404  # not quiet's
    assert (await r.get("smb", experiment_id=0)).status_code == 422
    assert (await r.get("smb", experiment_id=2**40)).status_code == 422
    assert (await r.get("x" * 51)).status_code == 422
    unauth = await r.http.get("/v1/reports/experiments/smb")
    assert unauth.status_code == 401
    # Promoting needs Temporal (the running invoices switch): without it a 503, nothing done.
    admin = {"Authorization": f"Bearer {API_KEYS['admin']}"}
    resp = await r.http.post("/v1/segments/smb/experiment/promote", headers=admin)
    assert resp.status_code == 503
    assert (await r.json("smb"))["experiment"]["running"] is True


# -- the routes on a running stack ---------------------------------------------------------


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


STEPS_A = [{"key": "late_1", "offset": "PT1H", "template": "reminder_overdue"}]
STEPS_B = [{"key": "late_2", "offset": "PT2H", "template": "reminder_overdue"}]


async def segment_with_policies(h: Harness) -> tuple[str, dict[str, Any], dict[str, Any]]:
    champion = await h.policy(steps=STEPS_A, escalate_after="P30D")
    challenger = await h.policy(steps=STEPS_B, escalate_after="P30D")
    name = f"exp-{uuid.uuid4().hex[:6]}"
    resp = await h.post(
        "/v1/segments",
        {"name": name, "position": 1, "policy_name": champion["name"]},
        role="admin",
    )
    assert resp.status_code == 201, resp.text
    return name, champion, challenger


def stored(h: Harness, invoice_id: int) -> Invoice:
    with Session(h.engine) as s:
        inv = s.get(Invoice, invoice_id)
        assert inv is not None
        return inv


async def put(h: Harness, name: str, role: str = "admin", **body: Any) -> httpx.Response:
    return await h.http.put(f"/v1/segments/{name}/experiment", json=body, headers=h.as_role(role))


async def test_experiment_assigns_new_invoices_and_promote_makes_the_challenger_champion(
    h: Harness, tmp_path: Path
) -> None:
    name, champion, challenger = await segment_with_policies(h)
    resp = await put(h, name, challenger_policy=challenger["name"], challenger_version=1,
                     share_pct=50)  # fmt: skip
    assert resp.status_code == 200, resp.text
    exp = resp.json()
    assert (exp["running"], exp["champion_policy"], exp["champion_version"]) == (
        True,
        champion["name"],
        1,
    )
    # Customers until both arms have two (the arm is the hash's: checked per invoice).
    customers: list[dict[str, Any]] = []
    arms: dict[str, int] = {"champion": 0, "challenger": 0}
    while min(arms.values()) < 2:
        c = await h.customer(segment=name)
        customers.append(c)
        arms[arm(name, c["id"], 50)] += 1
        assert len(customers) < 30
    for c in customers:
        expected = arm(name, c["id"], 50)
        for _ in range(2):  # a customer's invoices stay on one arm
            inv = stored(h, (await h.invoice(c["id"]))["id"])
            assert (inv.experiment_id, inv.experiment_arm) == (exp["id"], expected)
            policy = challenger if expected == "challenger" else champion
            assert (inv.policy_id, inv.policy_version) == (policy["id"], 1)
        created = next(e for e in h.events(inv.id or 0) if e.kind == "created")
        assert created.data["experiment"] == {"id": exp["id"], "arm": expected}
    # A request naming its policy stays out of the experiment.
    named = stored(h, (await h.invoice(customers[0]["id"], policy_name=champion["name"]))["id"])
    assert (named.experiment_id, named.experiment_arm) == (None, None)

    # The bulk import assigns the same way.
    path = tmp_path / "invoices.csv"
    today = (await h.env.get_current_time()).date()
    rows = [
        [f"B-{i}-{uuid.uuid4().hex[:6]}", f"N{i}", c["id"], 5000, "EUR", today.isoformat(),
         (today + timedelta(days=30)).isoformat()]
        for i, c in enumerate(customers)
    ]  # fmt: skip
    header = ["external_id", "number", "customer_id", "amount_minor", "currency", "issued_on",
              "due_date"]  # fmt: skip
    path.write_text("\n".join(",".join(map(str, row)) for row in [header, *rows]) + "\n")
    result = await bulk.import_invoices(
        bulk.read_csv(path, InvoiceCreate), h.engine, h.settings, h.client
    )
    assert result.created == len(customers), result
    with Session(h.engine) as s:
        for row, c in zip(rows, customers, strict=True):
            inv = s.exec(select(Invoice).where(Invoice.external_id == row[0])).one()
            expected = arm(name, c["id"], 50)
            assert (inv.experiment_id, inv.experiment_arm) == (exp["id"], expected)
            policy = challenger if expected == "challenger" else champion
            assert inv.policy_id == policy["id"]

    # Promote: the challenger's content becomes the champion's version 2, the champion's
    # running invoices switch to it (a job), the experiment ends.
    resp = await h.post(f"/v1/segments/{name}/experiment/promote", None, role="admin")
    assert resp.status_code == 202, resp.text
    promoted = resp.json()
    assert (promoted["policy"], promoted["version"]) == (champion["name"], 2)
    assert promoted["switch_job_id"] is not None
    assert promoted["experiment"]["outcome"] == "promoted"
    assert promoted["experiment"]["promoted_version"] == 2
    assert promoted["experiment"]["ended_by"].startswith("admin")
    assert promoted["experiment"]["running"] is False
    versions = (await h.get(f"/v1/policies/{champion['id']}/versions")).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert [s["key"] for s in versions[0]["policy"]["steps"]] == ["late_2"]
    assert "promoted from" in versions[0]["note"]
    job = (await h.get(f"/v1/jobs/{promoted['switch_job_id']}")).json()
    assert job["kind"] == "policy_switch"
    with Session(h.engine) as s:
        seg = s.exec(select(Segment).where(Segment.name == name)).one()
        assert (seg.experiment_id, seg.challenger_policy, seg.challenger_share_pct) == (
            None,
            None,
            0,
        )
        current = s.get(DunningPolicy, champion["id"])
        assert current is not None and current.version == 2
    # New invoices all run the champion's new version, outside any experiment.
    after = stored(h, (await h.invoice(customers[0]["id"]))["id"])
    assert (after.experiment_arm, after.policy_id, after.policy_version) == (
        None,
        champion["id"],
        2,
    )
    listed = (await h.get(f"/v1/segments/{name}/experiments")).json()
    assert [(e["id"], e["outcome"]) for e in listed] == [(exp["id"], "promoted")]
    report = (await h.get(f"/v1/reports/experiments/{name}")).json()
    total = sum(a["invoices"] for a in report["arms"])
    assert total == 3 * len(customers)  # two through the API and one imported, each


async def test_experiment_4xx(h: Harness) -> None:
    name, champion, challenger = await segment_with_policies(h)
    good = {"challenger_policy": challenger["name"], "challenger_version": 1, "share_pct": 20}

    async def status(resp: httpx.Response) -> tuple[int, str]:
        return resp.status_code, resp.text

    assert (await put(h, "nosuch", **good)).status_code == 404
    assert (await put(h, name, role="specialist", **good)).status_code == 403
    assert (await put(h, name, role="viewer", **good)).status_code == 403
    resp = await put(h, name, **(good | {"challenger_policy": "nosuch"}))
    assert resp.status_code == 422 and "unknown policy 'nosuch'" in resp.text
    resp = await put(h, name, **(good | {"challenger_version": 9}))
    assert resp.status_code == 422 and "has no version 9" in resp.text
    for share in (0, 100, -1):
        assert (await put(h, name, **(good | {"share_pct": share}))).status_code == 422
    resp = await put(h, name, **(good | {"challenger_policy": champion["name"]}))
    assert resp.status_code == 422 and "the challenger is the champion" in resp.text
    assert (await put(h, name, **(good | {"extra": 1}))).status_code == 422

    promote = f"/v1/segments/{name}/experiment/promote"
    resp = await h.post(promote, None, role="admin")
    assert resp.status_code == 409 and "runs no experiment" in resp.text
    resp = await h.http.delete(f"/v1/segments/{name}/experiment", headers=h.as_role("admin"))
    assert resp.status_code == 409
    assert (
        await h.post("/v1/segments/nosuch/experiment/promote", None, role="admin")
    ).status_code == 404

    first = (await put(h, name, **good)).json()
    second = (await put(h, name, **(good | {"share_pct": 30}))).json()  # replaces the first
    listed = (await h.get(f"/v1/segments/{name}/experiments")).json()
    assert [(e["id"], e["outcome"], e["running"]) for e in listed] == [
        (second["id"], None, True),
        (first["id"], "replaced", False),
    ]
    # The champion cannot change under a running experiment.
    resp = await h.http.put(
        f"/v1/segments/{name}",
        json={"position": 1, "policy_name": challenger["name"]},
        headers=h.as_role("admin"),
    )
    assert resp.status_code == 409 and "promote or stop it" in resp.text
    assert (await h.post(promote, None, role="specialist")).status_code == 403
    assert (await h.post(promote, None, role="viewer")).status_code == 403
    resp = await h.http.delete(f"/v1/segments/{name}/experiment", headers=h.as_role("viewer"))
    assert resp.status_code == 403
    resp = await h.http.delete(f"/v1/segments/{name}/experiment", headers=h.as_role("admin"))
    assert resp.status_code == 200 and resp.json()["outcome"] == "stopped"
    c = await h.customer(segment=name)
    inv = stored(h, (await h.invoice(c["id"]))["id"])
    assert (inv.experiment_arm, inv.policy_id) == (None, champion["id"])
