"""Accessibility of the dashboard: axe-core (the axe-playwright-python package) on every page in
Debian's Chromium, with no serious or critical violation; and the main actions with the
keyboard alone (no mouse). The pages run over real HTTP on the dev server (tests/test_web.py's
``live`` fixture and its seeded data)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Locator, Page, expect

from tests.conftest import API_KEYS
from tests.test_web import Live, chromium_path, live, page  # noqa: F401 - the fixtures

BLOCKING = ("serious", "critical")
#: Where the axe results are written when ARFLOW_AXE_RESULTS names a folder (for the notes).
RESULTS = os.environ.get("ARFLOW_AXE_RESULTS")


@pytest.fixture
def signed_in(live: Live, page: Page) -> Iterator[Page]:  # noqa: F811
    page.goto(f"{live.url}/app/login")
    page.fill("input[name=api_key]", API_KEYS["admin"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Overview")
    yield page


def _pages(live: Live) -> dict[str, str]:  # noqa: F811
    return {
        "overview": "/app",
        "invoices": "/app/invoices",
        "invoices-filtered": f"/app/invoices?customer_id={live.ids['hudson']}&overdue=yes",
        "invoice": f"/app/invoices/{live.ids['A-1001']}",
        "invoice-disputed": f"/app/invoices/{live.ids['C-3001']}",
        "worklist": "/app/worklist",
        "worklist-by-due": "/app/worklist?sort=due",
        "payments": "/app/payments",
        "reports": "/app/reports",
        "reports-filtered": "/app/reports?currency=USD",
        "customers": "/app/customers",
        "customers-searched": "/app/customers?q=hudson",
        "customer": f"/app/customers/{live.ids['bergmann']}",
        "policy-lab": "/app/policy-lab",
    }


def _check(tab: Page, name: str) -> list[str]:
    results = Axe().run(tab)
    violations = results.response["violations"]
    if RESULTS:
        folder = Path(RESULTS)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(violations, indent=1))
    return [
        f"{name}: {v['id']} ({v['impact']}) on {len(v['nodes'])} element(s): {v['help']}"
        for v in violations
        if v["impact"] in BLOCKING
    ]


def test_no_page_has_a_serious_or_critical_axe_violation(
    live: Live,  # noqa: F811
    page: Page,  # noqa: F811
    signed_in: Page,
) -> None:
    found: list[str] = []
    for name, path in _pages(live).items():
        page.goto(f"{live.url}{path}")
        expect(page.locator("h1")).to_be_visible()
        found += _check(page, name)
    assert found == [], "\n".join(found)


def test_the_login_page_passes_axe(live: Live, page: Page) -> None:  # noqa: F811
    page.goto(f"{live.url}/app/login")
    assert _check(page, "login") == []


def test_a_note_and_a_pause_with_the_keyboard_alone(
    live: Live,  # noqa: F811
    page: Page,  # noqa: F811
    signed_in: Page,
) -> None:
    page.goto(f"{live.url}/app/invoices/{live.ids['A-1002']}")
    # From the top of the page, Tab until the note's text area has the focus.
    note = page.locator("#action-note textarea[name=text]")
    _tab_to(page, note)
    page.keyboard.type("called the customer, will pay Friday")
    page.keyboard.press("Tab")  # to the form's button
    expect(page.locator("#action-note button")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#action-note .ok")).to_have_text("Note added.")
    expect(page.locator("#timeline")).to_contain_text("called the customer, will pay Friday")

    reason = page.locator("#action-pause input[name=reason]")
    _tab_to(page, reason)
    page.keyboard.type("customer on holiday")
    page.keyboard.press("Enter")  # submits the form from its text field
    expect(page.locator("#action-pause .ok")).to_have_text("Reminders paused.")
    expect(page.locator("#timeline tr.event-paused")).to_have_count(1)


def _tab_to(tab: Page, target: Locator, limit: int = 150) -> None:
    """Press Tab until ``target`` has the focus; fail after ``limit`` presses."""
    for _ in range(limit):
        tab.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {target}")
