"""The Policy lab in a browser (Playwright driving Debian's Chromium against the real server of
tests/test_web.py's ``live`` fixture, on the dev server): past invoices with real timelines
are written to its database, an admin edits the draft (a step's channel changed, a step
added, a contact rule), runs it and sees the totals and the weekly chart; axe-core finds no
serious or critical violation on the form or on the result."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from bench.simulate_10k import seed
from tests.conftest import API_KEYS
from tests.test_web import Live, chromium_path, live, page, shot  # noqa: F401 - the fixtures

BLOCKING = ("serious", "critical")


def _violations(tab: Page, name: str) -> list[str]:
    found = Axe().run(tab).response["violations"]
    return [
        f"{name}: {v['id']} ({v['impact']}) on {len(v['nodes'])} element(s): {v['help']}"
        for v in found
        if v["impact"] in BLOCKING
    ]


@pytest.fixture
def admin(live: Live, page: Page) -> Iterator[Page]:  # noqa: F811
    page.goto(f"{live.url}/app/login")
    page.fill("input[name=api_key]", API_KEYS["admin"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Overview")
    yield page


def test_an_admin_edits_a_draft_runs_it_and_sees_the_chart(
    live: Live,  # noqa: F811
    admin: Page,
) -> None:
    data = seed(live.engine, 120, 12, rng=random.Random(21))
    tab = admin
    tab.click("nav >> text=Policy lab")
    expect(tab.locator("h1")).to_contain_text("Policy lab")
    found = _violations(tab, "policy-lab")
    steps = tab.locator("#lab-steps tbody tr")
    before = steps.count()
    assert before >= 2
    tab.click("#lab-add")  # a round trip: one more empty row
    expect(steps).to_have_count(before + 1)
    tab.fill(f"#lab-steps tbody tr:nth-child({before + 1}) input[name=key]", "sms_nudge")
    tab.fill(f"#lab-steps tbody tr:nth-child({before + 1}) input[name=offset]", "P40D")
    tab.select_option(f"#lab-steps tbody tr:nth-child({before + 1}) select[name=channel]", "sms")
    tab.select_option(
        f"#lab-steps tbody tr:nth-child({before + 1}) select[name=template]", "reminder_overdue"
    )
    tab.fill("input[name=escalate_after]", "P60D")
    tab.fill("input[name=contact_window]", "09:00-17:00")
    tab.check("input[name=skip_weekends]")
    tab.fill("input[name=issued_from]", data.issued_from.isoformat())
    tab.fill("input[name=issued_to]", data.issued_to.isoformat())
    tab.click("#lab-run")
    result = tab.locator("#lab-result")
    expect(result).to_be_visible()
    expect(result).to_contain_text("invoices, simulated at once")  # 120 and the fixture's
    sms = tab.locator("#lab-channels tbody tr", has_text="sms")
    expect(sms).to_have_count(1)
    assert int(sms.locator("td").nth(1).inner_text()) > 0  # the new step would have gone out
    chart = tab.locator("#lab-chart svg[role=img]")
    expect(chart).to_be_visible()
    assert chart.locator("polyline").count() == 2  # the draft and what was really sent
    expect(tab.locator("#lab-chart .legend")).to_contain_text("really sent")
    # The form keeps what was typed.
    expect(tab.locator("input[name=contact_window]")).to_have_value("09:00-17:00")
    shot(tab, "policy-lab-result")
    found += _violations(tab, "policy-lab-result")
    # A refused value: the page again with the message, not an error page.
    tab.fill("input[name=escalate_after]", "P5D")
    tab.click("#lab-run")
    expect(tab.locator("#lab-error")).to_contain_text("escalate_after")
    found += _violations(tab, "policy-lab-error")
    assert found == [], "\n".join(found)
