"""Policy simulation: hand-computed cases on the pure driver (quiet hours, a holiday, a cap,
a payment before escalation, fees and interest), the domain on both databases, the API's 4xx
cases, and the equivalence with real InvoiceWorkflows on the time-skipping server."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from arflow.policies import simulation as domain
from models import Customer, Invoice
from models.invoice import InvoiceEvent
from tests.conftest import harness
from tests.test_api import eventually
from tests.webhook import signed_payment
from workflows.schedule import default_due_at
from workflows.simulation import Fact, SimInvoice, simulate, simulate_customer
from workflows.types import ChargeSpec, LadderStage, PolicySpec, StepSpec

BERLIN = ZoneInfo("Europe/Berlin")
FAR = datetime(2027, 1, 1, tzinfo=UTC)


def policy(**overrides: Any) -> PolicySpec:
    base: dict[str, Any] = {
        "policy_id": 0,
        "name": "draft",
        "steps": [StepSpec("late", "P1D")],
        "escalate_after": "P20D",
        "send_at": "09:00",
    }
    return PolicySpec(**(base | overrides))


def invoice(due: date, n: int = 1, customer: int = 1, **kw: Any) -> SimInvoice:
    tz = kw.pop("timezone", "Europe/Berlin")
    return SimInvoice(
        invoice_id=n,
        customer_id=customer,
        currency="EUR",
        amount_minor=kw.pop("amount_minor", 100_000),
        due_at=default_due_at(due, tz),
        timezone=tz,
        **kw,
    )


def local(at: datetime) -> datetime:
    return at.astimezone(BERLIN).replace(tzinfo=None)


# -- hand-computed cases ---------------------------------------------------------------------


def test_quiet_hours_move_a_nine_oclock_step_to_ten() -> None:
    pol = policy(contact_window="10:00-18:00")
    out = simulate(pol, invoice(date(2026, 3, 2)), FAR)  # due Monday: the step Tuesday 09:00
    [send] = [s for s in out.sends if s.key == "late"]
    assert local(send.at) == datetime(2026, 3, 3, 10, 0)
    assert send.local == "2026-03-03T10:00:00+01:00"
    assert send.moved_by == ["quiet_hours"]


def test_a_public_holiday_moves_the_step_to_the_next_day() -> None:
    pol = policy(contact_window="08:00-20:00", skip_holidays=True)
    # due 30 April: the step would go out on 1 May (Labour Day in Germany) at 09:00
    out = simulate(pol, invoice(date(2026, 4, 30), country="DE"), FAR)
    send = out.sends[0]
    assert local(send.at) == datetime(2026, 5, 2, 8, 0)
    assert send.moved_by == ["holiday"]
    # without a country there is no holiday
    plain = simulate(pol, invoice(date(2026, 4, 30)), FAR)
    assert local(plain.sends[0].at) == datetime(2026, 5, 1, 9, 0)
    assert plain.sends[0].moved_by == []


def test_the_daily_cap_moves_a_second_invoice_of_the_customer_to_the_next_day() -> None:
    pol = policy(contact_window="08:00-20:00", max_messages_per_day=1)
    first, second = invoice(date(2026, 3, 2), 1), invoice(date(2026, 3, 2), 2)
    a, b = simulate_customer(pol, [first, second], FAR)
    assert local(a.sends[0].at) == datetime(2026, 3, 3, 9, 0)
    assert a.sends[0].moved_by == []
    # capped at 09:00, free at midnight, within the window at 08:00 the next day
    assert local(b.sends[0].at) == datetime(2026, 3, 4, 8, 0)
    assert b.sends[0].moved_by == ["cap"]
    # two customers: no cap between them
    other = invoice(date(2026, 3, 2), 2, customer=2)
    assert local(simulate_customer(pol, [first, other], FAR)[1].sends[0].at).day == 3
    # a confirmation the customer really got at 08:30 that day takes the day's one message;
    # one at 09:30 comes after the step and does not move it
    early = datetime(2026, 3, 3, 7, 30, tzinfo=UTC)
    confirmed = invoice(date(2026, 3, 2), 1, messages=[early])
    assert local(simulate(pol, confirmed, FAR).sends[0].at) == datetime(2026, 3, 4, 8, 0)
    later = invoice(date(2026, 3, 2), 1, messages=[early + timedelta(hours=1)])
    assert local(simulate(pol, later, FAR).sends[0].at) == datetime(2026, 3, 3, 9, 0)


def test_paid_before_escalation_is_not_escalated_and_flagged() -> None:
    due = date(2026, 3, 2)
    paid_at = datetime(2026, 3, 12, 12, tzinfo=UTC)
    inv = invoice(due, facts=[Fact(paid_at, "payment", 100_000, paid_at=paid_at, ref=7)])
    out = simulate(policy(), inv, FAR)
    assert [s.key for s in out.sends] == ["late"]
    assert (out.status, out.paid_at, out.stages) == ("paid", paid_at, [])
    assert out.escalated_before_payment is None
    # paid after the escalation instant (due + 20 days, 09:00): escalated first
    late_pay = datetime(2026, 3, 25, 12, tzinfo=UTC)
    inv = invoice(due, facts=[Fact(late_pay, "payment", 100_000, paid_at=late_pay, ref=8)])
    out = simulate(policy(), inv, FAR)
    assert [(s.key, local(s.at)) for s in out.stages] == [("agency", datetime(2026, 3, 22, 9))]
    assert out.escalated_before_payment is True
    assert out.status == "paid"
    totals = domain.totals(
        [
            domain.InvoiceSimulation(
                1,
                "1",
                1,
                "EUR",
                100_000,
                "Europe/Berlin",
                inv.due_at,
                stages=out.stages,
                paid_at=out.paid_at,
                escalated_before_payment=True,
            )
        ]
    )
    assert (totals.escalations, totals.escalations_before_payment) == (1, 1)


def test_fees_and_interest() -> None:
    """100,000.00 at 10% a year from 31 January: 28 days to 28 February are 767.12, charged
    in parts (at the step, at the escalation, at the period's end) that add up to 767; the
    step's fee 5.00; a 40.00 compensation once."""
    charges = ChargeSpec(
        stage_fees_minor={"late": 500}, interest_rate_pct="10", compensation_minor=4000
    )
    pol = policy(charges=charges, ladder=[LadderStage("agency")])
    out = simulate(pol, invoice(date(2026, 1, 31)), datetime(2026, 3, 10, tzinfo=UTC))
    by_kind: dict[str, int] = {}
    for c in out.charges:
        by_kind[c.kind] = by_kind.get(c.kind, 0) + c.amount_minor
    assert by_kind == {"fee": 500, "interest": 767, "compensation": 4000}
    # the first interest line: one day (1 February) at the step: 27.40 rounded
    assert [c.amount_minor for c in out.charges if c.kind == "interest"][0] == 27
    # a payment of half on 10 February halves the interest from that day
    paid = datetime(2026, 2, 10, 12, tzinfo=UTC)
    half = invoice(date(2026, 1, 31), facts=[Fact(paid, "payment", 50_000, paid_at=paid, ref=1)])
    out = simulate(pol, half, datetime(2026, 3, 10, tzinfo=UTC))
    interest = sum(c.amount_minor for c in out.charges if c.kind == "interest")
    # 9 days (1-9 Feb) on 100,000.00 and 19 days (10-28 Feb) on 50,000.00
    assert interest == round((100_000 * 9 + 50_000 * 19) * 0.10 / 365)


def test_a_promise_holds_dunning_and_a_broken_one_resumes_it() -> None:
    due = date(2026, 3, 2)
    promised = datetime(2026, 3, 3, 7, tzinfo=UTC)  # before the step at 09:00 local
    pol = policy(steps=[StepSpec("late", "P1D"), StepSpec("late_7", "P7D", channel="sms")])
    inv = invoice(due, facts=[Fact(promised, "promise", 100_000, on="2026-03-05")])
    out = simulate(pol, inv, FAR)
    # held until the promise's check (the end of 5 March + P3D): the step due on 3 March
    # goes out then, once; late_7 (9 March) on its own day
    check = default_due_at(date(2026, 3, 8), "Europe/Berlin")
    assert [(s.key, s.channel, s.at) for s in out.sends] == [
        ("late", "email", check),
        ("late_7", "sms", datetime(2026, 3, 9, 8, tzinfo=UTC)),
    ]
    assert out.sends[0].moved_by == ["hold"] and out.sends[1].moved_by == []
    # kept: the payment on 5 March lifts the hold, nothing more is sent
    paid = datetime(2026, 3, 5, 12, tzinfo=UTC)
    inv.facts.append(Fact(paid, "payment", 100_000, paid_at=paid, ref=3))
    out = simulate(pol, inv, FAR)
    assert out.sends == [] and out.status == "paid"


# -- the domain on both databases ----------------------------------------------------------


def _customer(session: Session, **kw: Any) -> Customer:
    row = Customer(
        external_id=f"C-{kw['name']}",
        email="ap@acme.example.com",
        timezone="Europe/Berlin",
        locale="en",
        **kw,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def _invoice(session: Session, customer: Customer, issued: date, due: date, n: str) -> Invoice:
    from arflow.policies.service import ensure_default_policy

    pol = ensure_default_policy(session)
    row = Invoice(
        external_id=f"INV-{n}",
        number=n,
        currency="EUR",
        issued_on=issued,
        due_date=due,
        due_at=default_due_at(due, customer.timezone),
        customer_id=customer.id or 0,
        policy_id=pol.id or 0,
        amount_minor=100_000,
        balance_minor=100_000,
        request_hash="x" * 64,
        created_at=datetime.combine(issued, time(8), UTC),
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def test_simulate_from_the_timeline_on_both_databases(engine: Engine) -> None:
    with Session(engine) as s:
        gold = _customer(s, name="gold", segment="gold")
        std = _customer(s, name="std")
        paid = _invoice(s, gold, date(2026, 3, 1), date(2026, 3, 31), "A-1")
        open_ = _invoice(s, std, date(2026, 3, 2), date(2026, 3, 31), "A-2")
        _invoice(s, std, date(2026, 5, 1), date(2026, 5, 31), "A-3")  # outside the window
        s.add(
            InvoiceEvent(
                invoice_id=paid.id or 0,
                at=datetime(2026, 4, 9, 10, tzinfo=UTC),
                actor="workflow",
                kind="payment_applied",
                data={"payment_id": 99, "amount_minor": 100_000, "balance_after": 0},
            )
        )
        s.add(
            InvoiceEvent(
                invoice_id=open_.id or 0,
                at=datetime(2026, 3, 28, 7, tzinfo=UTC),
                actor="workflow",
                kind="reminder_sent",
                data={"step": "before_due", "channel": "email"},
            )
        )
        s.commit()
        window = domain.SimulationWindow(date(2026, 3, 1), date(2026, 3, 31))
        ids = domain.select_invoices(s, window)
        assert ids == [paid.id, open_.id]
        assert domain.select_invoices(s, domain.SimulationWindow(*window_dates(), "gold")) == [
            paid.id
        ]
        assert domain.select_invoices(
            s, domain.SimulationWindow(*window_dates(), customer_id=std.id)
        ) == [open_.id]
        spec = domain.draft_spec(default_draft())
        results = domain.simulate(s, spec, ids, datetime(2026, 7, 1, tzinfo=UTC))
    a, b = results
    assert [x.key for x in a.sends] == ["before_due", "first_late_day", "late_7"]
    assert a.status == "paid" and a.paid_at == datetime(2026, 4, 9, 10, tzinfo=UTC)
    assert [x.key for x in b.sends][-1] == "final_notice" and b.status == "escalated"
    assert [(r.key, r.channel) for r in b.real_sends] == [("before_due", "email")]
    totals = domain.totals(results)
    assert totals.invoices == 2 and totals.sends == 3 + 5
    assert totals.sends_by_channel == {"email": 8}
    assert totals.real_sends_by_week == {"2026-W13": {"email": 1}}
    assert sum(w.get("email", 0) for w in totals.sends_by_week.values()) == 8
    assert totals.escalations == 1 and totals.escalations_before_payment == 0
    rows = domain.csv_rows(results)
    assert rows[0] == domain.CSV_HEADER and len(rows) == 3
    assert rows[1][rows[0].index("status")] == "paid"
    assert rows[2][rows[0].index("sends_email")] == "5"


def window_dates() -> tuple[date, date]:
    return date(2026, 3, 1), date(2026, 3, 31)


def default_draft() -> Any:
    from models.policy import DEFAULT_POLICY

    return DEFAULT_POLICY


# -- the API ----------------------------------------------------------------------------------


async def test_simulate_api_refuses_what_it_cannot_run(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, engine, tmp_path, with_worker=False) as h:
        draft = {
            "name": "draft",
            "escalate_after": "P30D",
            "steps": [{"key": "late", "offset": "P1D"}],
        }
        window = {"issued_from": "2026-01-01", "issued_to": "2026-03-31"}

        async def post(body: dict[str, Any], role: str = "admin") -> Any:
            return await h.post("/v1/policies/simulate", body, role=role)

        assert (await post(window | {"policy": draft}, role="specialist")).status_code == 403
        cases: list[tuple[dict[str, Any], str]] = [
            (window, "exactly one"),
            (window | {"policy": draft, "policy_id": 1}, "exactly one"),
            (window | {"policy_id": 999}, "unknown policy"),
            (window | {"policy": draft, "version": 2}, "version"),
            (window | {"policy_id": 1, "version": 99}, "no version 99"),
            ({"issued_from": "2026-03-01", "issued_to": "2026-01-01", "policy": draft}, "before"),
            ({"issued_from": "2020-01-01", "issued_to": "2023-01-02", "policy": draft}, "3 years"),
            (window | {"policy": draft | {"steps": []}}, "steps"),
            (window | {"policy": draft | {"escalate_after": "P1D"}}, "escalate_after"),
            (window | {"policy": draft, "customer_id": 2**40}, "customer_id"),
        ]
        for body, words in cases:
            resp = await post(body)
            assert resp.status_code == 422, (body, resp.text)
            assert words in resp.text, (words, resp.text)


async def test_simulate_api_answers_totals_and_refuses_a_large_window(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path, monkeypatch: Any
) -> None:
    # with a worker: a workflow whose first task never ran can stick the server's clock
    async with harness(ts_env, engine, tmp_path) as h:
        cust = await h.customer(timezone="Europe/Berlin")
        today = (await ts_env.get_current_time()).date()
        inv = await h.invoice(cust["id"], issued_on=today.isoformat())
        draft = {
            "name": "draft",
            "escalate_after": "P30D",
            "send_at": "09:00",
            "steps": [{"key": "late", "offset": "P1D", "channel": "sms"}],
        }
        body = {
            "policy": draft,
            "issued_from": today.isoformat(),
            "issued_to": today.isoformat(),
            "per_invoice": True,
        }
        resp = await h.post("/v1/policies/simulate", body, role="admin")
        assert resp.status_code == 200, resp.text
        got = resp.json()
        assert got["totals"]["invoices"] == 1
        assert got["invoices"][0]["invoice_id"] == inv["id"]
        # nothing is due yet (the invoice is due in 30 days): no send before now
        assert got["totals"]["sends"] == 0 and got["totals"]["real_sends"] == 0
        stored = await h.post(
            "/v1/policies/simulate",
            body | {"policy": None, "policy_id": inv["policy_id"]},
            role="admin",
        )
        assert stored.status_code == 200, stored.text
        assert stored.json()["invoices"][0]["invoice_id"] == inv["id"]
        first = body | {"policy": None, "policy_id": inv["policy_id"], "version": 1}
        resp = await h.post("/v1/policies/simulate", first, role="admin")
        assert resp.status_code == 200, resp.text
        monkeypatch.setattr(domain, "MAX_SYNC_INVOICES", 0)
        resp = await h.post("/v1/policies/simulate", body, role="admin")
        assert resp.status_code == 409, resp.text
        assert "job" in resp.text


# -- the same sends as the real workflow ------------------------------------------------------

EQUIVALENCE_POLICY: dict[str, Any] = {
    "send_at": "09:00",
    "contact_window": "08:00-20:00",
    "skip_weekends": True,
    "escalate_after": "P30D",
    "resume_grace": "P5D",
    "promise_grace": "P2D",
    "steps": [
        {"key": "before", "offset": "-P3D", "template": "reminder"},
        {"key": "late_1", "offset": "P1D", "template": "reminder_overdue"},
        {"key": "late_7", "offset": "P7D", "template": "reminder_overdue", "channel": "sms"},
        {"key": "late_14", "offset": "P14D", "template": "reminder_overdue"},
    ],
    "ladder": [
        {"key": "final", "kind": "notice", "channels": ["email", "sms"]},
        {"key": "agency", "kind": "agency", "wait": "P10D"},
    ],
}


async def test_simulation_sends_what_the_workflow_sent(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Six invoices run as real InvoiceWorkflows (one paid mid-schedule, one disputed then
    resolved, one with a broken promise, one escalated, one on a payment plan broken at its
    second instalment, one paused until a date) and through the simulation on their
    recorded timelines under the same policy: the same steps on the same channels, scheduled
    for the same instants, skipped alike, sent within a second of each other.

    The test server's clock is not the wall clock the activities date events by (in
    production they are one): each action's events are moved onto the server's clock."""
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        pol = await h.policy(**EQUIVALENCE_POLICY)

        async def on_server_clock(action: Awaitable[Any], settled: Any = None) -> Any:
            with Session(sqlite_engine) as s:
                last = s.exec(select(InvoiceEvent.id).order_by(col(InvoiceEvent.id).desc())).first()
            result = await action
            if settled is not None:
                await eventually(settled)
            delta = await ts_env.get_current_time() - datetime.now(UTC)
            with Session(sqlite_engine) as s:
                for e in s.exec(select(InvoiceEvent).where(col(InvoiceEvent.id) > (last or 0))):
                    e.at = e.at + delta
                    s.add(e)
                s.commit()
            return result

        now = await ts_env.get_current_time()
        due = now.date() + timedelta(days=10)
        invoices = []
        for _ in range(6):
            cust = await h.customer(timezone="Europe/Berlin")
            inv = await h.invoice(
                cust["id"],
                policy_id=pol["id"],
                issued_on=now.date().isoformat(),
                due_date=due.isoformat(),
            )
            invoices.append(inv)
        delta = await ts_env.get_current_time() - datetime.now(UTC)
        with Session(sqlite_engine) as s:
            for inv in invoices:
                row = s.get(Invoice, inv["id"])
                assert row is not None
                row.created_at = row.created_at + delta
                s.add(row)
            s.commit()
        paid, disputed, promised, escalated, planned, paused = (i["id"] for i in invoices)

        def at(days: int, hour: int = 12) -> datetime:
            return datetime.combine(due + timedelta(days=days), time(hour), UTC)

        async def sleep_until(instant: datetime) -> None:
            current = await ts_env.get_current_time()
            await ts_env.sleep(max(instant - current, timedelta(0)))

        def applied(invoice_id: int) -> Any:
            return lambda: any(e.kind == "payment_applied" for e in h.events(invoice_id))

        async def act(invoice_id: int, path: str, body: Any) -> Any:
            resp = await h.post(f"/v1/invoices/{invoice_id}{path}", body)
            assert resp.status_code == 200, resp.text
            return resp.json()

        await sleep_until(at(1))
        pause = {"reason": "customer on holiday", "until": (due + timedelta(days=9)).isoformat()}
        await on_server_clock(act(paused, "/pause", pause))
        await sleep_until(at(2))
        await on_server_clock(act(disputed, "/disputes", {"reason": "not ordered"}))
        plan = {
            "installments": [
                {"due_date": (due + timedelta(days=5)).isoformat(), "amount_minor": 60_000},
                {"due_date": (due + timedelta(days=12)).isoformat(), "amount_minor": 60_000},
            ]
        }
        await on_server_clock(act(planned, "/payment-plan", plan))
        await sleep_until(at(4))
        await on_server_clock(
            signed_payment(h, invoice_id=planned, amount_minor=60_000), settled=applied(planned)
        )
        await sleep_until(at(3))
        promise = {"promised_date": (due + timedelta(days=6)).isoformat(), "amount_minor": 120_000}
        await on_server_clock(act(promised, "/promise", promise))
        await sleep_until(at(9))
        await on_server_clock(
            signed_payment(h, invoice_id=paid, amount_minor=120_000), settled=applied(paid)
        )
        await sleep_until(at(10))
        dispute_id = (await h.get(f"/v1/invoices/{disputed}/disputes")).json()[0]["id"]
        resolve = {"outcome": "rejected", "note": "order confirmed"}
        await on_server_clock(act(disputed, f"/disputes/{dispute_id}/resolve", resolve))
        await sleep_until(at(50))
        end = await ts_env.get_current_time()

        with Session(sqlite_engine) as s:
            from models import DunningPolicy

            stored = s.get(DunningPolicy, pol["id"])
            assert stored is not None
            results = domain.simulate(s, stored.spec(), [i["id"] for i in invoices], end)
        for r in results:
            events = h.events(r.invoice_id)
            real = [
                (e.data["step"], e.data["channel"], e.data["scheduled_for"])
                for e in events
                if e.kind == "reminder_sent"
            ]
            simulated = [(x.key, x.channel, x.scheduled_for.isoformat()) for x in r.sends]
            assert simulated == real, r.invoice_id
            skipped = sorted(e.data["step"] for e in events if e.kind == "reminder_skipped")
            assert sorted(r.skipped) == skipped, r.invoice_id
            outbox = {(m.step_key, m.channel): m.created_at for m in h.reminders(r.invoice_id)}
            for x in r.sends:
                assert abs(outbox[(x.key, x.channel)] - x.at) < timedelta(seconds=1), x
        by_id = {r.invoice_id: r for r in results}
        assert by_id[paid].status == "paid" and by_id[paid].stages == []
        assert [x.key for x in by_id[paid].sends] == ["before", "late_1", "late_7"]
        assert "hold" in by_id[disputed].sends[2].moved_by  # the catch-up after the dispute
        # late_7 passed under the promise: sent when the broken promise lifted the hold
        assert [(x.key, x.moved_by) for x in by_id[promised].sends][2] == ("late_7", ["hold"])
        assert [st.key for st in by_id[escalated].stages] == ["final", "agency"]
        assert by_id[escalated].escalated_before_payment is False
        plan_sends = [x.key for x in by_id[planned].sends if x.kind == "plan"]
        assert plan_sends and all(k.startswith("plan1-") for k in plan_sends)
        assert by_id[planned].stages  # the broken plan resumed dunning up to escalation
        assert any("hold" in x.moved_by for x in by_id[paused].sends)
        assert [(x.key, x.kind) for x in by_id[escalated].sends][-2:] == [
            ("final", "notice"),
            ("final", "notice"),
        ]


async def test_simulation_caps_like_the_send_activity(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Two invoices of one customer whose steps fall on the same local day, a cap of one
    message a day: the real send activity holds the second back to the next day's window, and
    the simulation does the same."""
    async with harness(ts_env, sqlite_engine, tmp_path) as h:
        pol = await h.policy(
            send_at=None,
            contact_window="08:00-20:00",
            max_messages_per_day=1,
            escalate_after="P10D",
            steps=[{"key": "late", "offset": "PT12H", "template": "reminder_overdue"}],
        )
        cust = await h.customer(timezone="Europe/Berlin")
        now = await ts_env.get_current_time()
        day = now.astimezone(BERLIN).date() + timedelta(days=5)
        ids = []
        for hour in (20, 22):  # steps at 08:00 and 10:00 local the next day
            due_at = datetime.combine(day, time(hour), BERLIN)
            inv = await h.invoice(
                cust["id"],
                policy_id=pol["id"],
                issued_on=now.date().isoformat(),
                due_date=day.isoformat(),
                due_at=due_at.isoformat(),
            )
            ids.append(inv["id"])
        delta = await ts_env.get_current_time() - datetime.now(UTC)
        with Session(sqlite_engine) as s:
            for invoice_id in ids:
                row = s.get(Invoice, invoice_id)
                assert row is not None
                row.created_at = row.created_at + delta
                s.add(row)
            s.commit()
        await ts_env.sleep(datetime.combine(day, time(12), BERLIN) + timedelta(days=3) - now)
        end = await ts_env.get_current_time()
        with Session(sqlite_engine) as s:
            from models import DunningPolicy

            stored = s.get(DunningPolicy, pol["id"])
            assert stored is not None
            first, second = domain.simulate(s, stored.spec(), ids, end)
        assert local(first.sends[0].at) == datetime.combine(day + timedelta(days=1), time(8))
        assert local(second.sends[0].at) == datetime.combine(day + timedelta(days=2), time(8))
        assert second.sends[0].moved_by == ["cap"]
        for r in (first, second):
            real = [
                (e.data["step"], e.data["channel"], e.data["scheduled_for"])
                for e in h.events(r.invoice_id)
                if e.kind == "reminder_sent"
            ]
            assert [(x.key, x.channel, x.scheduled_for.isoformat()) for x in r.sends] == real
            deferred = [e for e in h.events(r.invoice_id) if e.kind == "reminder_deferred"]
            assert len(deferred) == (1 if r is second else 0)
