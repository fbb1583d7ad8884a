"""The contact window as a pure function: quiet hours in the customer's zone, across DST,
weekends and public holidays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workflows.schedule import build_schedule, contact_allowed, parse_window
from workflows.types import PolicySpec, StepSpec


def policy(**rules: object) -> PolicySpec:
    return PolicySpec(
        policy_id=1,
        name="p",
        steps=[StepSpec(key="s", offset="PT0S")],
        escalate_after="P30D",
        send_at=None,
        **rules,  # type: ignore[arg-type]
    )


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


WINDOW = policy(contact_window="08:00-21:00")


@pytest.mark.parametrize(
    ("at", "zone", "expected"),
    [
        # Inside the window: unchanged.
        (utc(2026, 3, 10, 12, 0), "Europe/Berlin", utc(2026, 3, 10, 12, 0)),
        # 22:30 in Berlin (CET, +1) waits for 08:00 the next morning = 07:00 UTC.
        (utc(2026, 3, 10, 21, 30), "Europe/Berlin", utc(2026, 3, 11, 7, 0)),
        # 05:00 in New York (EST, -5) waits for 08:00 the same day = 13:00 UTC.
        (utc(2026, 1, 15, 10, 0), "America/New_York", utc(2026, 1, 15, 13, 0)),
        # Exactly 21:00 local is outside (the window ends at 21:00).
        (utc(2026, 1, 15, 20, 0), "Europe/Berlin", utc(2026, 1, 16, 7, 0)),
        # Tonga (+13): 02:00 UTC is 15:00 local: fine.
        (utc(2026, 6, 1, 2, 0), "Pacific/Tongatapu", utc(2026, 6, 1, 2, 0)),
        # Berlin's spring change (29 March 2026, 02:00 -> 03:00): 06:30 UTC on the 28th is 07:30
        # CET -> 08:00 CET = 07:00 UTC; on the 29th the same UTC time is 08:30 CEST: allowed.
        (utc(2026, 3, 28, 6, 30), "Europe/Berlin", utc(2026, 3, 28, 7, 0)),
        (utc(2026, 3, 29, 6, 30), "Europe/Berlin", utc(2026, 3, 29, 6, 30)),
        # A night across the spring change: 22:00 CET on the 28th -> 08:00 CEST = 06:00 UTC.
        (utc(2026, 3, 28, 21, 0), "Europe/Berlin", utc(2026, 3, 29, 6, 0)),
        # Autumn change (25 October 2026): 05:30 UTC is 06:30 CET -> 08:00 CET = 07:00 UTC.
        (utc(2026, 10, 25, 5, 30), "Europe/Berlin", utc(2026, 10, 25, 7, 0)),
    ],
)
def test_quiet_hours_in_the_customers_zone(at: datetime, zone: str, expected: datetime) -> None:
    assert contact_allowed(at, WINDOW, zone) == expected


def test_weekends_and_holidays() -> None:
    rules = policy(contact_window="08:00-21:00", skip_weekends=True, skip_holidays=True)
    # Friday 25 December 2026 is Christmas in Germany, the 26th too (a Saturday), then Sunday:
    # the first allowed minute is Monday 28 December 08:00 CET.
    assert contact_allowed(utc(2026, 12, 24, 20, 30), rules, "Europe/Berlin", "DE") == utc(
        2026, 12, 28, 7, 0
    )
    # The same evening in the US: the 25th is a holiday there too, the 26th a Saturday.
    assert contact_allowed(utc(2026, 12, 25, 15, 0), rules, "America/New_York", "US") == utc(
        2026, 12, 28, 13, 0
    )
    # Without a country only weekends count.
    assert contact_allowed(utc(2026, 12, 25, 9, 0), rules, "UTC", None) == utc(2026, 12, 25, 9, 0)


def test_no_rules_leaves_every_instant_alone() -> None:
    at = utc(2026, 12, 25, 3, 0)
    assert contact_allowed(at, policy(), "Europe/Berlin", "DE") == at


def test_schedule_steps_move_into_the_window() -> None:
    rules = PolicySpec(
        policy_id=1,
        name="p",
        steps=[StepSpec(key="a", offset="PT0S"), StepSpec(key="b", offset="PT10H")],
        escalate_after="P30D",
        send_at=None,
        contact_window="08:00-21:00",
    )
    due = utc(2026, 5, 4, 15, 0)  # 17:00 in Berlin (CEST)
    steps = build_schedule(rules, due, "Europe/Berlin")
    assert [s.at for s in steps] == [due, utc(2026, 5, 5, 6, 0)]  # 03:00 local -> 08:00


@pytest.mark.parametrize("bad", ["8-21", "21:00-08:00", "08:00", "25:00-26:00"])
def test_malformed_windows_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="contact window"):
        parse_window(bad)
