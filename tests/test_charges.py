"""Late fees, interest and compensation: the pure arithmetic (``workflows/charges.py``) against
hand-computed figures, and the charges API (list, waive) on SQLite and PostgreSQL.

Interest is simple, ACT/365 Fixed, accrued exactly and rounded half up once on the total from
the due date; 100,000.00 EUR is 10,000,000 minor units; the EU rate is 4.5 % (ECB) + 8 = 12.5 %.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from arflow.charges.service import interest_charged_minor, post_charge
from arflow.config import Settings
from arflow.policies import service as policies
from models import Customer, Invoice, InvoiceCharge, InvoiceEvent
from tests.conftest import API_KEYS, WEBHOOK_SECRET
from workflows.charges import (
    Accrual,
    ChargeLine,
    ChargePolicy,
    accruals_for,
    accrued_interest_minor,
    compensation_charge,
    eu_b2b_policy,
    interest_charge,
    interest_minor,
    percent_fee_minor,
    round_half_up,
    stage_charges,
)

EUR_100K = 10_000_000


# -- interest ------------------------------------------------------------------------------


def test_interest_over_a_year_and_a_month_at_the_eu_rate() -> None:
    rate = eu_b2b_policy("4.5").interest_rate_pct
    assert rate == "12.5"
    assert interest_minor(EUR_100K, rate, 365) == 1_250_000  # 12,500.00 exactly
    # 10,000,000 x 0.125 x 30 / 365 = 102,739.726... -> 102,740 (1,027.40)
    assert interest_minor(EUR_100K, rate, 30) == 102_740
    # 1 day: 1,250,000 / 365 = 3,424.657... -> 3,425
    assert interest_minor(EUR_100K, rate, 1) == 3_425
    assert interest_minor(EUR_100K, rate, 0) == 0
    assert interest_minor(0, rate, 30) == 0
    assert interest_minor(-5, rate, 30) == 0  # a credit balance earns nothing


def test_act_365_counts_every_calendar_day_in_leap_years_too() -> None:
    # Due 2027-12-31, computed to 2028-12-31: 366 days (2028 is a leap year), each 1/365 of
    # the annual rate: 10,000,000 x 0.125 x 366 / 365 = 1,253,424.657... -> 1,253,425.
    leap = accruals_for(date(2027, 12, 31), date(2028, 12, 31), EUR_100K, "12.5")
    assert leap == [Accrual(date(2027, 12, 31), date(2028, 12, 31), EUR_100K, "12.5")]
    assert leap[0].days == 366
    assert accrued_interest_minor(leap) == 1_253_425
    # The same calendar year span in 2026: 365 days, exactly the annual rate.
    plain = accruals_for(date(2025, 12, 31), date(2026, 12, 31), EUR_100K, "12.5")
    assert accrued_interest_minor(plain) == 1_250_000
    # February of a leap year: 29 days. 10,000,000 x 0.125 x 29 / 365 = 99,315.068 -> 99,315.
    feb = accruals_for(date(2028, 1, 31), date(2028, 2, 29), EUR_100K, "12.5")
    assert accrued_interest_minor(feb) == 99_315


def test_interest_follows_the_balance_after_a_partial_payment() -> None:
    # Due 01-31; 4,000,000 paid on 03-02: days 02-01..03-01 (29) on 10,000,000, days
    # 03-02..03-31 (30) on 6,000,000.
    periods = accruals_for(
        date(2026, 1, 31), date(2026, 3, 31), EUR_100K, "12.5", [(date(2026, 3, 2), -4_000_000)]
    )
    assert periods == [
        Accrual(date(2026, 1, 31), date(2026, 3, 1), EUR_100K, "12.5"),
        Accrual(date(2026, 3, 1), date(2026, 3, 31), 6_000_000, "12.5"),
    ]
    # (10,000,000 x 29 + 6,000,000 x 30) x 0.125 / 365 = 58,750,000 / 365 = 160,958.904
    # -> 160,959; rounding each period first would give 99,315 + 61,644 = 160,959 too here.
    assert accrued_interest_minor(periods) == 160_959
    # A payment on or before the due date lowers the opening balance; one after ``until`` is
    # ignored; a refund raises the balance again.
    early = accruals_for(
        date(2026, 1, 31),
        date(2026, 3, 2),
        EUR_100K,
        "12.5",
        [(date(2026, 1, 20), -5_000_000), (date(2026, 4, 1), -5_000_000)],
    )
    assert early == [Accrual(date(2026, 1, 31), date(2026, 3, 2), 5_000_000, "12.5")]
    assert accrued_interest_minor(early) == 51_370  # 5,000,000 x 0.125 x 30 / 365 = 51,369.86


def test_rate_changes_are_periods_with_their_own_rate() -> None:
    # 181 days at 12.5 % then 184 days at 11.15 % (a new ECB rate + 8):
    # 10,000,000 x (0.125 x 181 + 0.1115 x 184) / 365 = (226,250,000 + 205,160,000) / 365
    # = 431,410,000 / 365 = 1,181,945.205... -> 1,181,945
    periods = [
        Accrual(date(2025, 12, 31), date(2026, 6, 30), EUR_100K, "12.5"),
        Accrual(date(2026, 6, 30), date(2026, 12, 31), EUR_100K, "11.15"),
    ]
    assert [p.days for p in periods] == [181, 184]
    assert accrued_interest_minor(periods) == 1_181_945


def test_periodic_postings_add_up_to_the_one_off_figure() -> None:
    due = date(2026, 1, 31)
    charged = 0
    posted = []
    for until in (date(2026, 2, 1), date(2026, 2, 2), date(2026, 2, 3)):
        line = interest_charge(accruals_for(due, until, EUR_100K, "12.5"), "EUR", charged)
        assert line is not None
        posted.append(line.amount_minor)
        charged += line.amount_minor
    # Totals 3,424.66 -> 3,425; 6,849.32 -> 6,849; 10,273.97 -> 10,274; each posting is the
    # new total minus what was charged: 3,425, 3,424, 3,425 (rounding each day: 3 x 3,425).
    assert posted == [3_425, 3_424, 3_425]
    assert charged == interest_minor(EUR_100K, "12.5", 3) == 10_274
    assert interest_charge(accruals_for(due, date(2026, 2, 3), EUR_100K, "12.5"), "EUR",
                           charged) is None  # fmt: skip


def test_an_interest_charge_line_says_how_it_was_computed() -> None:
    periods = accruals_for(date(2026, 1, 31), date(2026, 3, 2), EUR_100K, "12.5")
    line = interest_charge(periods, "EUR", 0)
    assert line == ChargeLine(
        kind="interest",
        amount_minor=102_740,
        currency="EUR",
        dedupe_key="interest:2026-03-02",
        period_from=date(2026, 1, 31),
        period_to=date(2026, 3, 2),
        basis={
            "rate_pct": "12.5",
            "days": 30,
            "accrued_total_minor": 102_740,
            "charged_before_minor": 0,
            "day_count": "ACT/365",
        },
    )
    assert interest_charge([], "EUR") is None


def test_rounding_is_half_up() -> None:
    assert round_half_up(Fraction(5, 2)) == 3
    assert round_half_up(Fraction(249, 100)) == 2
    assert round_half_up(Fraction(-5, 2)) == -3
    # 2.5 % of 100 = 2.5 -> 3; of 99 = 2.475 -> 2; 5 % of 123,457 = 6,172.85 -> 6,173
    assert percent_fee_minor(100, "2.5") == 3
    assert percent_fee_minor(99, "2.5") == 2
    assert percent_fee_minor(123_457, "5") == 6_173


@pytest.mark.parametrize("rate", ["abc", "-1", "NaN", "Infinity"])
def test_bad_rates_are_refused(rate: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        interest_minor(100, rate, 1)


# -- fees and the EU preset -----------------------------------------------------------------


def test_fixed_and_percentage_fees_per_stage() -> None:
    policy = ChargePolicy(
        stage_fees_minor={"late_14": 500, "final_notice": 1_500},
        stage_fee_pct={"final_notice": "2"},
    )
    assert stage_charges(policy, "late_7", 200_000, "EUR") == []
    assert stage_charges(policy, "late_14", 200_000, "EUR") == [
        ChargeLine("fee", 500, "EUR", "fee:late_14", stage="late_14", basis={"fixed": 500})
    ]
    # final notice on 200,000: 1,500 fixed + 2 % = 4,000
    assert stage_charges(policy, "final_notice", 200_000, "USD") == [
        ChargeLine("fee", 1_500, "USD", "fee:final_notice", stage="final_notice",
                   basis={"fixed": 1_500}),
        ChargeLine("fee", 4_000, "USD", "fee_pct:final_notice", stage="final_notice",
                   basis={"percent": "2", "balance_minor": 200_000}),
    ]  # fmt: skip
    in_eur = ChargePolicy(currency="EUR", stage_fees_minor={"x": 500}, stage_fee_pct={"x": "1"})
    # a fixed EUR amount is not charged on a USD invoice; the percentage is
    assert [c.dedupe_key for c in stage_charges(in_eur, "x", 10_000, "USD")] == ["fee_pct:x"]
    assert stage_charges(in_eur, "x", 0, "EUR") == [
        ChargeLine("fee", 500, "EUR", "fee:x", stage="x", basis={"fixed": 500})
    ]  # 1 % of nothing is no fee


def test_the_eu_b2b_preset() -> None:
    eu = eu_b2b_policy("4.5", stage_fees_minor={"final_notice": 1_000})
    assert eu == ChargePolicy(
        name="eu_b2b",
        currency="EUR",
        stage_fees_minor={"final_notice": 1_000},
        interest_rate_pct="12.5",  # 4.5 + 8
        compensation_minor=4_000,  # EUR 40
    )
    assert compensation_charge(eu, "EUR") == ChargeLine(
        "compensation", 4_000, "EUR", "compensation", basis={"policy": "eu_b2b"}
    )
    assert compensation_charge(eu, "USD") is None  # EUR 40 is not a USD amount
    assert compensation_charge(ChargePolicy(), "EUR") is None
    assert eu_b2b_policy("0").interest_rate_pct == "8"
    assert eu_b2b_policy("3.15").interest_rate_pct == "11.15"
    # 100,000.00 EUR 30 days late under the Directive: 1,027.40 interest + 40.00 compensation
    rate = eu.interest_rate_pct
    assert rate is not None
    due, until = date(2026, 1, 31), date(2026, 3, 2)
    line = interest_charge(accruals_for(due, until, EUR_100K, rate), "EUR")
    assert line is not None and line.amount_minor + eu.compensation_minor == 106_740


# -- the charges API -------------------------------------------------------------------------


def role(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[name]}"}


@pytest.fixture
async def http(engine: Engine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
    )
    app = create_app(settings, engine=engine, temporal=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as client:
        yield client


def an_invoice(engine: Engine, key: str = "I-1") -> int:
    with Session(engine) as s:
        policy_id = policies.ensure_default_policy(s).id
        c = Customer(external_id=f"C-{key}", name="Delta BV", timezone="Europe/Amsterdam")
        s.add(c)
        s.flush()
        assert c.id is not None and policy_id is not None
        inv = Invoice(external_id=key, number=key, currency="EUR", issued_on=date(2026, 1, 1),
                      due_date=date(2026, 1, 31), customer_id=c.id, policy_id=policy_id,
                      amount_minor=EUR_100K, balance_minor=EUR_100K, request_hash="x" * 64,
                      due_at=datetime(2026, 1, 31, 22, 59, 59, tzinfo=UTC))  # fmt: skip
        s.add(inv)
        s.commit()
        assert inv.id is not None
        return inv.id


async def test_charges_are_posted_once_listed_and_waived(
    engine: Engine, http: httpx.AsyncClient
) -> None:
    invoice_id = an_invoice(engine)
    other_invoice = an_invoice(engine, "I-2")
    eu = eu_b2b_policy("4.5", stage_fees_minor={"final_notice": 1_500})
    compensation = compensation_charge(eu, "EUR")
    interest = interest_charge(
        accruals_for(date(2026, 1, 31), date(2026, 3, 2), EUR_100K, "12.5"), "EUR"
    )
    assert compensation is not None and interest is not None
    with Session(engine) as s:
        lines = [compensation, interest, *stage_charges(eu, "final_notice", EUR_100K, "EUR")]
        ids = [post_charge(s, invoice_id, line).id for line in lines]
        assert post_charge(s, invoice_id, interest).id == ids[1]  # a retry: the same row
        assert len(s.exec(select(InvoiceCharge)).all()) == 3
        with pytest.raises(ValueError, match="charge in USD on an invoice in EUR"):
            post_charge(s, invoice_id, ChargeLine("fee", 1, "USD", "usd"))

    listed = await http.get(f"/v1/invoices/{invoice_id}/charges", headers=role("viewer"))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert {k: v for k, v in body.items() if k != "charges"} == {
        "invoice_id": invoice_id,
        "currency": "EUR",
        "invoice_amount_minor": EUR_100K,
        "charged_minor": 108_240,  # 4,000 + 102,740 + 1,500
        "waived_minor": 0,
        "settled_minor": 0,
        "outstanding_minor": 108_240,
    }
    assert [(c["kind"], c["amount_minor"], c["stage"], c["period_from"], c["period_to"])
            for c in body["charges"]] == [
        ("compensation", 4_000, None, None, None),
        ("interest", 102_740, None, "2026-01-31", "2026-03-02"),
        ("fee", 1_500, "final_notice", None, None),
    ]  # fmt: skip
    assert body["charges"][1]["basis"]["rate_pct"] == "12.5"
    assert body["charges"][1]["created_by"] == "workflow"

    path = f"/v1/invoices/{invoice_id}/charges/{ids[1]}/waive"
    viewer = await http.post(path, json={"reason": "goodwill"}, headers=role("viewer"))
    assert viewer.status_code == 403
    blank = await http.post(path, json={"reason": ""}, headers=role("specialist"))
    assert blank.status_code == 422
    waived = await http.post(path, json={"reason": "goodwill"}, headers=role("specialist"))
    assert waived.status_code == 200, waived.text
    got = waived.json()
    assert (got["waive_reason"], got["waived_by"].split(":")[0]) == ("goodwill", "specialist")
    assert got["waived_at"] is not None
    again = await http.post(path, json={"reason": "twice"}, headers=role("specialist"))
    assert again.status_code == 409
    elsewhere = await http.post(
        f"/v1/invoices/{other_invoice}/charges/{ids[1]}/waive",
        json={"reason": "x"},
        headers=role("specialist"),
    )
    assert elsewhere.status_code == 404  # the charge belongs to another invoice
    missing = await http.get("/v1/invoices/999999/charges", headers=role("viewer"))
    assert missing.status_code == 404

    after = (await http.get(f"/v1/invoices/{invoice_id}/charges", headers=role("viewer"))).json()
    assert (after["charged_minor"], after["waived_minor"]) == (5_500, 102_740)
    with Session(engine) as s:
        inv = s.get(Invoice, invoice_id)
        assert inv is not None
        assert (inv.amount_minor, inv.balance_minor) == (EUR_100K, EUR_100K)  # never changed
        # a waived interest charge still counts as charged: it is not charged again
        assert interest_charged_minor(s, invoice_id) == 102_740
        events = s.exec(
            select(InvoiceEvent)
            .where(InvoiceEvent.invoice_id == invoice_id)
            .order_by(col(InvoiceEvent.id))
        ).all()
        timeline: list[tuple[str, Any]] = [(e.kind, e.data.get("amount_minor")) for e in events]
    assert timeline == [
        ("charge_posted", 4_000),
        ("charge_posted", 102_740),
        ("charge_posted", 1_500),
        ("charge_waived", 102_740),
    ]
