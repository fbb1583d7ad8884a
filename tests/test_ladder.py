"""The escalation ladder after the last reminder: final notice (letter + email) -> pre-legal
letter -> agency, each after its wait, skippable per segment, paused by disputes and promises;
and late charges posted by the workflow (time-skipping server, real worker)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlmodel import Session, col, select

from models import AgencyPlacement, InvoiceCharge
from tests.conftest import Harness
from tests.webhook import signed_payment

LADDER = [
    {"key": "final", "kind": "notice", "channels": ["letter", "email"]},
    {
        "key": "pre_legal",
        "kind": "notice",
        "wait": "P10D",
        "channels": ["letter"],
        "template": "pre_legal",
        "skip_segments": ["vip"],
    },
    {"key": "agency", "kind": "agency", "wait": "P14D"},
]


class Ladder:
    """One invoice under a day-scale ladder policy (09:00 UTC), due ``due``."""

    def __init__(self, h: Harness, inv: dict[str, Any], due: date) -> None:
        self.h, self.inv, self.id, self.due = h, inv, inv["id"], due

    def at(self, days_after_due: int, hour: int = 9, minute: int = 0) -> datetime:
        return datetime.combine(self.due + timedelta(days=days_after_due), time(hour, minute), UTC)

    def iso(self, days_after_due: int) -> str:
        """How the API writes that day's 09:00 UTC."""
        return self.at(days_after_due).isoformat().replace("+00:00", "Z")

    async def sleep_until(self, instant: datetime) -> None:
        now = await self.h.env.get_current_time()
        await self.h.env.sleep(max(instant - now, timedelta(0)))

    async def act(self, path: str, body: Any = None) -> Any:
        return await self.h.http.post(
            f"/v1/invoices/{self.id}{path}", json=body, headers=self.h.as_role("specialist")
        )

    async def get(self) -> Any:
        return (await self.h.get(f"/v1/invoices/{self.id}")).json()

    def sent(self) -> list[tuple[str, str]]:
        return [(m.step_key, m.channel) for m in self.h.reminders(self.id)]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.h.events(self.id)]

    def charges(self) -> list[InvoiceCharge]:
        with Session(self.h.engine) as s:
            rows = s.exec(
                select(InvoiceCharge)
                .where(InvoiceCharge.invoice_id == self.id)
                .order_by(col(InvoiceCharge.id))
            ).all()
            return list(rows)


async def ladder_case(h: Harness, customer: dict[str, Any] | None = None, **policy: Any) -> Ladder:
    body = {
        "send_at": "09:00",
        "escalate_after": "P20D",
        "resume_grace": "P7D",
        "steps": [
            {"key": "before_due", "offset": "-P3D", "template": "reminder_before_due"},
            {"key": "late_7", "offset": "P7D", "template": "reminder_overdue"},
        ],
        "ladder": LADDER,
    } | policy
    pol = await h.policy(**body)
    cust = customer or await h.customer(address="Hauptstr. 1\n10115 Berlin")
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=10)
    inv = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        issued_on=now.date().isoformat(),
        due_date=due.isoformat(),
        amount_minor=100_000,
    )
    return Ladder(h, inv, due)


async def test_final_notice_then_pre_legal_then_agency_each_after_its_wait(h: Harness) -> None:
    c = await ladder_case(h, charges={"stage_fees_minor": {"final": 1500, "agency": 5000}})
    await c.sleep_until(c.at(19))
    assert c.sent() == [("before_due", "email"), ("late_7", "email")]
    nxt = (await c.get())["next_action"]
    assert (nxt["kind"], nxt["step_key"], nxt["at"]) == (
        "escalation",
        "final",
        c.iso(20),
    )

    await c.sleep_until(c.at(20, 10))
    # The final notice goes out as a letter and an email, once each.
    assert c.sent()[2:] == [("final", "letter"), ("final", "email")]
    invoice = await c.get()
    assert (invoice["status"], invoice["escalation_stage"]) == ("open", "final")
    assert (invoice["next_action"]["step_key"], invoice["next_action"]["at"]) == (
        "pre_legal",
        c.iso(30),
    )
    assert [(x.kind, x.stage, x.amount_minor) for x in c.charges()] == [("fee", "final", 1500)]
    # The final notice announces the next stage (another notice), not an agency it is not yet.
    email = next(m for m in h.outbox(c.id) if (m.step_key, m.channel) == ("final", "email"))
    assert "take further steps to recover the claim" in email.body
    assert "collection agency" not in email.body
    assert "Late fee" in email.body and "€15.00" in email.body

    await c.sleep_until(c.at(29, 23))
    assert len(c.sent()) == 4  # nothing before the pre-legal letter's day
    await c.sleep_until(c.at(30, 10))
    assert c.sent()[4:] == [("pre_legal", "letter")]
    assert (await c.get())["next_action"]["at"] == c.iso(44)

    await c.sleep_until(c.at(43, 23))
    assert (await c.get())["status"] == "open"
    await c.sleep_until(c.at(44, 10))
    invoice = await c.get()
    assert (invoice["status"], invoice["next_action"]) == ("escalated", None)
    assert invoice["escalation_stage"] == "agency"
    with Session(h.engine) as s:
        placement = s.exec(select(AgencyPlacement).where(AgencyPlacement.invoice_id == c.id)).one()
        assert (placement.amount_minor, placement.stage, placement.status) == (
            100_000,
            "agency",
            "placed",
        )
    assert [(x.stage, x.amount_minor) for x in c.charges()] == [("final", 1500), ("agency", 5000)]
    kinds = c.kinds()
    assert kinds.count("escalated") == 1
    assert len(c.sent()) == 5  # nothing was sent twice


async def test_a_dispute_and_a_promise_hold_the_ladder(h: Harness) -> None:
    c = await ladder_case(h)
    await c.sleep_until(c.at(19, 12))
    resp = await c.act("/disputes", {"reason": "goods damaged"})
    assert resp.status_code == 200, resp.text
    await c.sleep_until(c.at(26))
    assert [k for k, _ in c.sent()] == ["before_due", "late_7"]  # no final notice in dispute
    disputes = (await c.h.get(f"/v1/invoices/{c.id}/disputes")).json()
    dispute_id = disputes[0]["id"]
    resp = await c.act(
        f"/disputes/{dispute_id}/resolve", {"outcome": "rejected", "note": "goods were fine"}
    )
    assert resp.status_code == 200, resp.text
    # Resumed on day 26 at 09:00: the ladder comes no earlier than the 7-day grace.
    nxt = resp.json()["next_action"]
    assert nxt["step_key"] == "final"
    assert c.at(33) <= datetime.fromisoformat(nxt["at"]) < c.at(33) + timedelta(seconds=5)
    await c.sleep_until(c.at(33, 10))
    assert [k for k, _ in c.sent()][2:] == ["final", "final"]

    # A promise to pay holds the pre-legal letter (due day 43) until it is broken.
    resp = await c.act(
        "/promise",
        {"promised_date": (c.due + timedelta(days=45)).isoformat(), "amount_minor": 100_000},
    )
    assert resp.status_code == 200, resp.text
    await c.sleep_until(c.at(47))
    assert [k for k, _ in c.sent()].count("pre_legal") == 0
    assert "promise_broken" not in c.kinds()
    # Broken at the end of day 48 (promised day 45 + 3 days' grace), then 7 days' grace.
    await c.sleep_until(c.at(49, 10))
    assert "promise_broken" in c.kinds()
    assert [k for k, _ in c.sent()].count("pre_legal") == 0
    nxt = (await c.get())["next_action"]
    assert nxt["step_key"] == "pre_legal"
    broken_at = datetime.fromisoformat(nxt["at"]) - timedelta(days=7)
    assert c.at(48, 23) < broken_at <= c.at(49)
    await c.sleep_until(datetime.fromisoformat(nxt["at"]) + timedelta(hours=1))
    assert [k for k, _ in c.sent()].count("pre_legal") == 1
    assert (await c.get())["status"] == "open"


async def test_a_payment_plan_holds_the_ladder_and_paying_it_closes(h: Harness) -> None:
    c = await ladder_case(h)
    await c.sleep_until(c.at(21))  # the final notice went out on day 20
    resp = await c.act(
        "/payment-plan",
        {
            "installments": [
                {"due_date": (c.due + timedelta(days=40)).isoformat(), "amount_minor": 50_000},
                {"due_date": (c.due + timedelta(days=70)).isoformat(), "amount_minor": 50_000},
            ],
            "note": "two halves",
        },
    )
    assert resp.status_code == 200, resp.text
    await c.sleep_until(c.at(39))
    paid = await signed_payment(
        h, invoice_id=c.id, amount_minor=50_000, paid_at=c.at(39).isoformat()
    )
    assert paid.status_code == 200, paid.text
    await c.sleep_until(c.at(69))
    # The pre-legal letter (day 30) and the agency (day 44) wait while the plan is kept.
    assert [k for k, _ in c.sent() if not k.startswith("plan")] == [
        "before_due",
        "late_7",
        "final",
        "final",
    ]
    invoice = await c.get()
    assert (invoice["status"], invoice["hold"]) == ("open", "plan")
    paid = await signed_payment(
        h, invoice_id=c.id, amount_minor=50_000, paid_at=c.at(69).isoformat()
    )
    assert paid.status_code == 200, paid.text
    await c.sleep_until(c.at(70))
    assert (await c.get())["status"] == "paid"
    assert "escalated" not in c.kinds()


async def test_a_segment_skips_its_stage_with_a_record(h: Harness) -> None:
    probe = await ladder_case(h)  # creates a ladder policy we can name in the segment
    policy_id = probe.inv["policy_id"]
    policies = {p["id"]: p["name"] for p in (await h.get("/v1/policies")).json()}
    resp = await h.post(
        "/v1/segments",
        {"name": "vip", "position": 1, "policy_name": policies[policy_id], "rules": []},
        role="admin",
    )
    assert resp.status_code == 201, resp.text
    cust = await h.customer(address="Hauptstr. 1\n10115 Berlin")
    resp = await h.http.put(
        f"/v1/customers/{cust['id']}/profile",
        json={"segment": "vip"},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=10)
    inv = await h.invoice(cust["id"], issued_on=now.date().isoformat(), due_date=due.isoformat())
    assert inv["policy_id"] == policy_id  # the segment's policy
    c = Ladder(h, inv, due)
    await c.sleep_until(c.at(31))
    assert [k for k, _ in c.sent()] == ["before_due", "late_7", "final", "final"]
    skipped = next(e for e in h.events(c.id) if e.kind == "stage_skipped")
    assert skipped.data == {"stage": "pre_legal", "segment": "vip", "skipped": []}
    # The agency stage's wait counts from the skipped stage's day (30): placed on day 44.
    nxt = (await c.get())["next_action"]
    assert (nxt["step_key"], nxt["at"]) == ("agency", c.iso(44))
    await c.sleep_until(c.at(44, 10))
    assert (await c.get())["status"] == "escalated"


async def test_policy_ladder_validation(h: Harness) -> None:
    base = {
        "escalate_after": "P20D",
        "steps": [{"key": "late_7", "offset": "P7D"}],
    }
    cases = [
        (
            [{"key": "a", "kind": "agency"}, {"key": "n", "kind": "notice", "channels": ["email"]}],
            "notices first",
        ),
        ([{"key": "n", "kind": "notice"}], "needs at least one channel"),
        ([{"key": "late_7", "kind": "agency"}], "must differ from step keys"),
        ([{"key": "a", "kind": "agency"}, {"key": "b", "kind": "agency"}], "at most one agency"),
        ([{"key": "a", "kind": "agency", "channels": ["email"]}], "sends nothing"),
        (
            [{"key": "n", "kind": "notice", "channels": ["email"], "template": "x"}],
            "unknown template",
        ),
    ]
    for ladder, message in cases:
        resp = await h.post("/v1/policies", base | {"name": "bad", "ladder": ladder}, role="admin")
        assert resp.status_code == 422, (ladder, resp.text)
        assert message in resp.text, (message, resp.text)
    resp = await h.post(
        "/v1/policies",
        base | {"name": "bad", "charges": {"preset": "eu_b2b"}},
        role="admin",
    )
    assert resp.status_code == 422 and "needs ecb_reference_rate_pct" in resp.text
    policies = [p["name"] for p in (await h.get("/v1/policies")).json()]
    assert "bad" not in policies
