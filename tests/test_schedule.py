"""Unit tests of the pure dunning-schedule functions in ``workflows.schedule``.

Every expected instant is written out literally (computed by hand from the zone's UTC offset
on that date), never recomputed with the code under test.

Offsets used below: Europe/Berlin CET = UTC+1, CEST = UTC+2 (2026: CEST from 29 Mar 01:00 UTC
to 25 Oct 01:00 UTC); America/New_York EST = UTC-5, EDT = UTC-4 (2026: EDT from 8 Mar 07:00 UTC
to 1 Nov 06:00 UTC); Pacific/Tongatapu and Pacific/Apia UTC+13, Pacific/Kiritimati UTC+14,
Pacific/Honolulu UTC-10 (no DST in any of the last four).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from workflows.schedule import (
    build_schedule,
    default_due_at,
    due_steps,
    escalation_at,
    next_action,
    shift,
)
from workflows.types import NextAction, PolicySpec, ScheduledStep, StepSpec


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def local(at: datetime, tz: str) -> datetime:
    return at.astimezone(ZoneInfo(tz))


def default_policy(send_at: str | None = "09:00") -> PolicySpec:
    return PolicySpec(
        policy_id=1,
        name="default",
        steps=[
            StepSpec(key="before_due", offset="-P3D", template="reminder_before_due"),
            StepSpec(key="first_late_day", offset="P1D", template="reminder_overdue"),
            StepSpec(key="late_7", offset="P7D", template="reminder_overdue"),
            StepSpec(key="late_14", offset="P14D", template="reminder_overdue"),
            StepSpec(key="final_notice", offset="P30D", channel="letter", template="final_notice"),
        ],
        escalate_after="P45D",
        send_at=send_at,
    )


DEFAULT_KEYS = ["before_due", "first_late_day", "late_7", "late_14", "final_notice"]


# -- default_due_at -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due_date", "tz", "expected"),
    [
        (date(2026, 4, 15), "UTC", utc(2026, 4, 15, 23, 59, 59)),
        (date(2026, 1, 15), "Europe/Berlin", utc(2026, 1, 15, 22, 59, 59)),  # CET
        (date(2026, 7, 15), "Europe/Berlin", utc(2026, 7, 15, 21, 59, 59)),  # CEST
        (date(2026, 3, 29), "Europe/Berlin", utc(2026, 3, 29, 21, 59, 59)),  # spring-forward day
        (date(2026, 10, 25), "Europe/Berlin", utc(2026, 10, 25, 22, 59, 59)),  # fall-back day
        (date(2026, 1, 15), "America/New_York", utc(2026, 1, 16, 4, 59, 59)),  # EST
        (date(2026, 7, 15), "America/New_York", utc(2026, 7, 16, 3, 59, 59)),  # EDT
        (date(2026, 3, 8), "America/New_York", utc(2026, 3, 9, 3, 59, 59)),  # spring-forward day
        (date(2026, 11, 1), "America/New_York", utc(2026, 11, 2, 4, 59, 59)),  # fall-back day
        (date(2026, 4, 15), "Pacific/Tongatapu", utc(2026, 4, 15, 10, 59, 59)),
        (date(2026, 4, 15), "Pacific/Apia", utc(2026, 4, 15, 10, 59, 59)),
        (date(2026, 4, 15), "Pacific/Kiritimati", utc(2026, 4, 15, 9, 59, 59)),
        (date(2026, 4, 15), "Pacific/Honolulu", utc(2026, 4, 16, 9, 59, 59)),  # next UTC date
        (date(2026, 12, 31), "Pacific/Honolulu", utc(2027, 1, 1, 9, 59, 59)),  # next UTC year
        (date(2026, 1, 1), "Pacific/Kiritimati", utc(2026, 1, 1, 9, 59, 59)),
    ],
)
def test_default_due_at_is_end_of_local_due_date(due_date: date, tz: str, expected: datetime):
    got = default_due_at(due_date, tz)
    assert got == expected
    assert got.utcoffset() == timedelta(0)
    assert got.tzinfo is UTC
    # and it really is 23:59:59 on the due date in the customer's zone
    assert local(got, tz).date() == due_date
    assert local(got, tz).time() == time(23, 59, 59)


# -- default policy: UTC and Berlin ------------------------------------------------------------


def test_default_policy_for_utc_customer():
    due_at = default_due_at(date(2026, 4, 15), "UTC")
    assert due_at == utc(2026, 4, 15, 23, 59, 59)
    schedule = build_schedule(default_policy(), due_at, "UTC")

    assert [s.key for s in schedule] == DEFAULT_KEYS
    assert [s.at for s in schedule] == [
        utc(2026, 4, 12, 9),
        utc(2026, 4, 16, 9),
        utc(2026, 4, 22, 9),
        utc(2026, 4, 29, 9),
        utc(2026, 5, 15, 9),
    ]
    assert escalation_at(default_policy(), due_at, "UTC") == utc(2026, 5, 30, 9)


def test_default_policy_for_berlin_customer_across_spring_forward():
    # Due 20 Mar 2026 (CET); the later steps fall after the 29 Mar change to CEST.
    due_at = default_due_at(date(2026, 3, 20), "Europe/Berlin")
    assert due_at == utc(2026, 3, 20, 22, 59, 59)
    schedule = build_schedule(default_policy(), due_at, "Europe/Berlin")

    assert [s.key for s in schedule] == DEFAULT_KEYS
    assert [s.at for s in schedule] == [
        utc(2026, 3, 17, 8),  # 17 Mar 09:00 CET
        utc(2026, 3, 21, 8),  # 21 Mar 09:00 CET
        utc(2026, 3, 27, 8),  # 27 Mar 09:00 CET
        utc(2026, 4, 3, 7),  # 3 Apr 09:00 CEST
        utc(2026, 4, 19, 7),  # 19 Apr 09:00 CEST
    ]
    assert escalation_at(default_policy(), due_at, "Europe/Berlin") == utc(2026, 5, 4, 7)
    for step in schedule:
        assert local(step.at, "Europe/Berlin").time() == time(9, 0)


def test_default_policy_for_berlin_customer_in_summer():
    due_at = default_due_at(date(2026, 4, 15), "Europe/Berlin")
    assert due_at == utc(2026, 4, 15, 21, 59, 59)
    schedule = build_schedule(default_policy(), due_at, "Europe/Berlin")
    assert [s.at for s in schedule] == [
        utc(2026, 4, 12, 7),
        utc(2026, 4, 16, 7),
        utc(2026, 4, 22, 7),
        utc(2026, 4, 29, 7),
        utc(2026, 5, 15, 7),
    ]
    assert escalation_at(default_policy(), due_at, "Europe/Berlin") == utc(2026, 5, 30, 7)


def test_build_schedule_keeps_step_fields_and_policy_order():
    due_at = utc(2026, 4, 15, 23, 59, 59)
    schedule = build_schedule(default_policy(), due_at, "UTC")
    assert all(isinstance(s, ScheduledStep) for s in schedule)
    assert [(s.key, s.channel, s.template) for s in schedule] == [
        ("before_due", "email", "reminder_before_due"),
        ("first_late_day", "email", "reminder_overdue"),
        ("late_7", "email", "reminder_overdue"),
        ("late_14", "email", "reminder_overdue"),
        ("final_notice", "letter", "final_notice"),
    ]


def test_build_schedule_of_empty_policy_is_empty():
    policy = PolicySpec(policy_id=2, name="empty", steps=[], escalate_after="P10D")
    assert build_schedule(policy, utc(2026, 4, 15, 23, 59, 59), "UTC") == []
    assert escalation_at(policy, utc(2026, 4, 15, 23, 59, 59), "UTC") == utc(2026, 4, 25, 9)


def test_build_schedule_with_seconds_scale_policy_and_no_send_at():
    policy = PolicySpec(
        policy_id=3,
        name="demo",
        steps=[
            StepSpec(key="early", offset="-PT5S"),
            StepSpec(key="due", offset="PT0S"),
            StepSpec(key="late", offset="PT5S"),
            StepSpec(key="later", offset="PT1M30S", channel="sms"),
        ],
        escalate_after="PT2M",
        send_at=None,
    )
    due_at = utc(2026, 4, 15, 12, 0, 0)
    schedule = build_schedule(policy, due_at, "Europe/Berlin")
    assert [(s.key, s.at) for s in schedule] == [
        ("early", utc(2026, 4, 15, 11, 59, 55)),
        ("due", utc(2026, 4, 15, 12, 0, 0)),
        ("late", utc(2026, 4, 15, 12, 0, 5)),
        ("later", utc(2026, 4, 15, 12, 1, 30)),
    ]
    assert schedule[3].channel == "sms"
    assert escalation_at(policy, due_at, "Europe/Berlin") == utc(2026, 4, 15, 12, 2, 0)


# -- DST: reminders stay at 09:00 local on the right local day ------------------------------


@pytest.mark.parametrize(
    ("tz", "due_date", "offset", "expected", "local_date"),
    [
        # Europe/Berlin, spring forward on Sun 29 Mar 2026 (CET -> CEST)
        ("Europe/Berlin", date(2026, 3, 27), "P1D", utc(2026, 3, 28, 8), date(2026, 3, 28)),
        ("Europe/Berlin", date(2026, 3, 27), "P2D", utc(2026, 3, 29, 7), date(2026, 3, 29)),
        ("Europe/Berlin", date(2026, 3, 27), "P3D", utc(2026, 3, 30, 7), date(2026, 3, 30)),
        ("Europe/Berlin", date(2026, 3, 28), "P1D", utc(2026, 3, 29, 7), date(2026, 3, 29)),
        ("Europe/Berlin", date(2026, 4, 1), "-P3D", utc(2026, 3, 29, 7), date(2026, 3, 29)),
        ("Europe/Berlin", date(2026, 4, 1), "-P4D", utc(2026, 3, 28, 8), date(2026, 3, 28)),
        # Europe/Berlin, fall back on Sun 25 Oct 2026 (CEST -> CET)
        ("Europe/Berlin", date(2026, 10, 23), "P1D", utc(2026, 10, 24, 7), date(2026, 10, 24)),
        ("Europe/Berlin", date(2026, 10, 23), "P2D", utc(2026, 10, 25, 8), date(2026, 10, 25)),
        ("Europe/Berlin", date(2026, 10, 23), "P3D", utc(2026, 10, 26, 8), date(2026, 10, 26)),
        ("Europe/Berlin", date(2026, 10, 27), "-P3D", utc(2026, 10, 24, 7), date(2026, 10, 24)),
        ("Europe/Berlin", date(2026, 10, 27), "-P2D", utc(2026, 10, 25, 8), date(2026, 10, 25)),
        # America/New_York, spring forward on Sun 8 Mar 2026 (EST -> EDT)
        ("America/New_York", date(2026, 3, 6), "P1D", utc(2026, 3, 7, 14), date(2026, 3, 7)),
        ("America/New_York", date(2026, 3, 6), "P2D", utc(2026, 3, 8, 13), date(2026, 3, 8)),
        ("America/New_York", date(2026, 3, 6), "P3D", utc(2026, 3, 9, 13), date(2026, 3, 9)),
        ("America/New_York", date(2026, 3, 10), "-P3D", utc(2026, 3, 7, 14), date(2026, 3, 7)),
        # America/New_York, fall back on Sun 1 Nov 2026 (EDT -> EST)
        ("America/New_York", date(2026, 10, 30), "P1D", utc(2026, 10, 31, 13), date(2026, 10, 31)),
        ("America/New_York", date(2026, 10, 30), "P2D", utc(2026, 11, 1, 14), date(2026, 11, 1)),
        ("America/New_York", date(2026, 10, 30), "P3D", utc(2026, 11, 2, 14), date(2026, 11, 2)),
        ("America/New_York", date(2026, 11, 3), "-P3D", utc(2026, 10, 31, 13), date(2026, 10, 31)),
        # escalation P45D across the New York fall-back: 15 Oct EDT -> 29 Nov EST
        ("America/New_York", date(2026, 10, 15), "P45D", utc(2026, 11, 29, 14), date(2026, 11, 29)),
    ],
)
def test_dst_keeps_nine_local_on_the_right_day(
    tz: str, due_date: date, offset: str, expected: datetime, local_date: date
):
    due_at = default_due_at(due_date, tz)
    got = shift(due_at, offset, tz, "09:00")
    assert got == expected
    assert local(got, tz).date() == local_date
    assert local(got, tz).time() == time(9, 0)


def test_dst_utc_hour_differs_before_and_after_the_change():
    due_at = default_due_at(date(2026, 3, 27), "Europe/Berlin")
    before = shift(due_at, "P1D", "Europe/Berlin", "09:00")
    after = shift(due_at, "P3D", "Europe/Berlin", "09:00")
    assert (before.hour, after.hour) == (8, 7)
    # two local days apart, but only 47 hours of real time
    assert after - before == timedelta(hours=47)

    due_at = default_due_at(date(2026, 10, 30), "America/New_York")
    before = shift(due_at, "P1D", "America/New_York", "09:00")
    after = shift(due_at, "P2D", "America/New_York", "09:00")
    assert (before.hour, after.hour) == (13, 14)
    assert after - before == timedelta(hours=25)


def test_send_at_in_the_repeated_hour_is_its_first_occurrence():
    # 25 Oct 2026, Berlin: 02:30 happens twice; the first time is 02:30 CEST = 00:30 UTC.
    due_at = default_due_at(date(2026, 10, 24), "Europe/Berlin")
    assert shift(due_at, "P1D", "Europe/Berlin", "02:30") == utc(2026, 10, 25, 0, 30)
    # 1 Nov 2026, New York: 01:30 happens twice; the first time is 01:30 EDT = 05:30 UTC.
    due_at = default_due_at(date(2026, 10, 31), "America/New_York")
    assert shift(due_at, "P1D", "America/New_York", "01:30") == utc(2026, 11, 1, 5, 30)


def test_send_at_in_the_skipped_hour_lands_on_that_day_after_the_gap():
    # 29 Mar 2026, Berlin: 02:00-03:00 local does not exist.
    due_at = default_due_at(date(2026, 3, 28), "Europe/Berlin")
    got = shift(due_at, "P1D", "Europe/Berlin", "02:30")
    on_wall = local(got, "Europe/Berlin")
    assert on_wall.date() == date(2026, 3, 29)
    assert time(3, 0) <= on_wall.time() <= time(3, 30)
    assert utc(2026, 3, 29, 1, 0) <= got <= utc(2026, 3, 29, 1, 30)


# -- far zones ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "offset", "send_at", "expected", "local_date"),
    [
        # UTC+13: 09:00 local is 20:00 UTC on the *previous* UTC date
        ("Pacific/Tongatapu", "P1D", "09:00", utc(2026, 4, 15, 20), date(2026, 4, 16)),
        ("Pacific/Tongatapu", "-P3D", "09:00", utc(2026, 4, 11, 20), date(2026, 4, 12)),
        ("Pacific/Tongatapu", "P7D", "09:00", utc(2026, 4, 21, 20), date(2026, 4, 22)),
        ("Pacific/Apia", "P1D", "09:00", utc(2026, 4, 15, 20), date(2026, 4, 16)),
        ("Pacific/Apia", "P14D", "09:00", utc(2026, 4, 28, 20), date(2026, 4, 29)),
        ("Pacific/Apia", "P45D", "09:00", utc(2026, 5, 29, 20), date(2026, 5, 30)),
        # UTC+14: 09:00 local is 19:00 UTC on the previous UTC date
        ("Pacific/Kiritimati", "P1D", "09:00", utc(2026, 4, 15, 19), date(2026, 4, 16)),
        ("Pacific/Kiritimati", "-P3D", "09:00", utc(2026, 4, 11, 19), date(2026, 4, 12)),
        ("Pacific/Kiritimati", "P30D", "09:00", utc(2026, 5, 14, 19), date(2026, 5, 15)),
        ("Pacific/Kiritimati", "P1D", "15:00", utc(2026, 4, 16, 1), date(2026, 4, 16)),
        # UTC-10: the due instant is already on 16 Apr UTC, the P1D reminder is still 16 Apr
        ("Pacific/Honolulu", "P1D", "09:00", utc(2026, 4, 16, 19), date(2026, 4, 16)),
        ("Pacific/Honolulu", "-P3D", "09:00", utc(2026, 4, 12, 19), date(2026, 4, 12)),
        ("Pacific/Honolulu", "P30D", "09:00", utc(2026, 5, 15, 19), date(2026, 5, 15)),
        # 18:30 local is 04:30 UTC on the *next* UTC date
        ("Pacific/Honolulu", "P1D", "18:30", utc(2026, 4, 17, 4, 30), date(2026, 4, 16)),
    ],
)
def test_far_zones_use_the_local_date(
    tz: str, offset: str, send_at: str, expected: datetime, local_date: date
):
    due_at = default_due_at(date(2026, 4, 15), tz)
    got = shift(due_at, offset, tz, send_at)
    assert got == expected
    assert local(got, tz).date() == local_date
    hour, minute = (int(p) for p in send_at.split(":"))
    assert local(got, tz).time() == time(hour, minute)


@pytest.mark.parametrize(
    "tz",
    [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Pacific/Tongatapu",
        "Pacific/Apia",
        "Pacific/Kiritimati",
        "Pacific/Honolulu",
    ],
)
@pytest.mark.parametrize(
    ("due_date", "first_late_day"),
    [
        (date(2026, 4, 15), date(2026, 4, 16)),
        (date(2026, 2, 28), date(2026, 3, 1)),
        (date(2028, 2, 28), date(2028, 2, 29)),
        (date(2026, 12, 31), date(2027, 1, 1)),
        (date(2026, 3, 28), date(2026, 3, 29)),
        (date(2026, 10, 31), date(2026, 11, 1)),
    ],
)
def test_first_late_day_is_the_local_day_after_the_due_date(
    tz: str, due_date: date, first_late_day: date
):
    due_at = default_due_at(due_date, tz)
    got = shift(due_at, "P1D", tz, "09:00")
    assert local(got, tz).date() == first_late_day
    assert local(got, tz).time() == time(9, 0)
    assert got > due_at


def test_first_late_day_literal_instants_in_far_zones():
    policy = default_policy()
    cases = {
        "Pacific/Tongatapu": utc(2026, 12, 31, 20),  # 1 Jan 2027 09:00 +13
        "Pacific/Kiritimati": utc(2026, 12, 31, 19),  # 1 Jan 2027 09:00 +14
        "Pacific/Honolulu": utc(2027, 1, 1, 19),  # 1 Jan 2027 09:00 -10
    }
    for tz, expected in cases.items():
        schedule = build_schedule(policy, default_due_at(date(2026, 12, 31), tz), tz)
        first_late = next(s for s in schedule if s.key == "first_late_day")
        assert first_late.at == expected, tz


# -- month and year offsets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due_date", "offset", "expected"),
    [
        (date(2026, 1, 31), "P1M", utc(2026, 2, 28, 9)),
        (date(2028, 1, 31), "P1M", utc(2028, 2, 29, 9)),  # leap year
        (date(2026, 1, 30), "P1M", utc(2026, 2, 28, 9)),
        (date(2026, 1, 29), "P1M", utc(2026, 2, 28, 9)),
        (date(2026, 1, 28), "P1M", utc(2026, 2, 28, 9)),
        (date(2026, 1, 15), "P1M", utc(2026, 2, 15, 9)),
        (date(2026, 3, 31), "P1M", utc(2026, 4, 30, 9)),
        (date(2026, 5, 31), "P1M", utc(2026, 6, 30, 9)),
        (date(2026, 12, 31), "P1M", utc(2027, 1, 31, 9)),  # year rollover
        (date(2025, 12, 31), "P2M", utc(2026, 2, 28, 9)),
        (date(2026, 1, 31), "P13M", utc(2027, 2, 28, 9)),
        (date(2026, 12, 31), "P12M", utc(2027, 12, 31, 9)),
        (date(2028, 2, 29), "P1Y", utc(2029, 2, 28, 9)),
        (date(2026, 3, 31), "-P1M", utc(2026, 2, 28, 9)),
        (date(2026, 1, 15), "-P1M", utc(2025, 12, 15, 9)),
        (date(2026, 1, 15), "-P13M", utc(2024, 12, 15, 9)),
        (date(2026, 1, 31), "P1M1D", utc(2026, 3, 1, 9)),  # months first, then days
        (date(2026, 4, 15), "P1Y2M3D", utc(2027, 6, 18, 9)),
    ],
)
def test_month_offsets_clamp_to_the_end_of_the_month(
    due_date: date, offset: str, expected: datetime
):
    due_at = default_due_at(due_date, "UTC")
    assert shift(due_at, offset, "UTC", "09:00") == expected


def test_month_offset_without_send_at_keeps_the_time_of_day():
    assert shift(utc(2026, 1, 31, 23, 59, 59), "P1M", "UTC", None) == utc(2026, 2, 28, 23, 59, 59)


@pytest.mark.parametrize(
    ("tz", "due_date", "offset", "expected"),
    [
        # Tonga: 28 Feb 09:00 +13 is 27 Feb 20:00 UTC
        ("Pacific/Tongatapu", date(2026, 1, 31), "P1M", utc(2026, 2, 27, 20)),
        # Honolulu: due instant is 1 Feb UTC, but the local due date is 31 Jan -> 28 Feb
        ("Pacific/Honolulu", date(2026, 1, 31), "P1M", utc(2026, 2, 28, 19)),
        # Kiritimati: 29 Feb 2028 09:00 +14 is 28 Feb 19:00 UTC
        ("Pacific/Kiritimati", date(2028, 1, 31), "P1M", utc(2028, 2, 28, 19)),
        # Berlin across spring forward: 28 Mar 09:00 CET, 28 Apr 09:00 CEST
        ("Europe/Berlin", date(2026, 2, 28), "P1M", utc(2026, 3, 28, 8)),
        ("Europe/Berlin", date(2026, 2, 28), "P2M", utc(2026, 4, 28, 7)),
        # New York across fall back: 31 Oct EDT + 1M -> 30 Nov 09:00 EST
        ("America/New_York", date(2026, 10, 31), "P1M", utc(2026, 11, 30, 14)),
    ],
)
def test_month_offsets_in_other_zones(tz: str, due_date: date, offset: str, expected: datetime):
    assert shift(default_due_at(due_date, tz), offset, tz, "09:00") == expected


# -- other offset forms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ("P1D", utc(2026, 4, 16, 9)),
        ("+P1D", utc(2026, 4, 16, 9)),
        (" P1D ", utc(2026, 4, 16, 9)),
        ("P1W", utc(2026, 4, 22, 9)),
        ("-P1W", utc(2026, 4, 8, 9)),
        ("P0D", utc(2026, 4, 15, 9)),
        ("-P3D", utc(2026, 4, 12, 9)),
        ("-P30D", utc(2026, 3, 16, 9)),
        # the time part can move the local date before send_at pins the time of day
        ("PT12H", utc(2026, 4, 16, 9)),  # 15 Apr 23:59:59 + 12h = 16 Apr
        ("-PT12H", utc(2026, 4, 15, 9)),  # 15 Apr 11:59:59
        ("P1DT12H", utc(2026, 4, 17, 9)),
    ],
)
def test_offset_forms_with_send_at(offset: str, expected: datetime):
    due_at = utc(2026, 4, 15, 23, 59, 59)
    assert shift(due_at, offset, "UTC", "09:00") == expected


@pytest.mark.parametrize(
    ("tz", "offset", "expected"),
    [
        # due 15 Apr 2026 Berlin = 21:59:59 UTC; no DST change in between
        ("Europe/Berlin", "-P1D", utc(2026, 4, 14, 21, 59, 59)),
        ("Europe/Berlin", "P1D", utc(2026, 4, 16, 21, 59, 59)),
        ("Europe/Berlin", "-P3DT1H", utc(2026, 4, 12, 20, 59, 59)),
        ("Pacific/Kiritimati", "-P3D", utc(2026, 4, 12, 9, 59, 59)),
    ],
)
def test_day_offsets_without_send_at(tz: str, offset: str, expected: datetime):
    assert shift(default_due_at(date(2026, 4, 15), tz), offset, tz, None) == expected


def test_negative_day_offset_without_send_at_moves_the_local_calendar_across_dst():
    # Due 30 Mar 2026 23:59:59 CEST = 21:59:59 UTC; -P3D is 27 Mar 23:59:59 CET = 22:59:59 UTC
    # (71 hours of real time, not 72).
    due_at = default_due_at(date(2026, 3, 30), "Europe/Berlin")
    assert due_at == utc(2026, 3, 30, 21, 59, 59)
    assert shift(due_at, "-P3D", "Europe/Berlin", None) == utc(2026, 3, 27, 22, 59, 59)
    # and forward across fall back: 24 Oct CEST + P2D = 26 Oct 23:59:59 CET
    due_at = default_due_at(date(2026, 10, 24), "Europe/Berlin")
    assert shift(due_at, "P2D", "Europe/Berlin", None) == utc(2026, 10, 26, 22, 59, 59)


# -- seconds-scale offsets (send_at=None) ------------------------------------------------------


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Pacific/Kiritimati", "Pacific/Honolulu"])
@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ("PT5S", utc(2026, 4, 15, 12, 0, 5)),
        ("-PT5S", utc(2026, 4, 15, 11, 59, 55)),
        ("PT0S", utc(2026, 4, 15, 12, 0, 0)),
        ("-PT0S", utc(2026, 4, 15, 12, 0, 0)),
        ("PT1M", utc(2026, 4, 15, 12, 1, 0)),
        ("PT2H30M", utc(2026, 4, 15, 14, 30, 0)),
        ("-PT1H", utc(2026, 4, 15, 11, 0, 0)),
    ],
)
def test_seconds_scale_offsets_are_added_to_the_exact_instant(
    tz: str, offset: str, expected: datetime
):
    assert shift(utc(2026, 4, 15, 12, 0, 0), offset, tz, None) == expected


def test_fractional_seconds_offset():
    got = shift(utc(2026, 4, 15, 12, 0, 0), "PT0.5S", "UTC", None)
    assert got == datetime(2026, 4, 15, 12, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "due_at", "offset", "expected"),
    [
        # Berlin, into the spring-forward gap: 01:59:58 CET + 5s = 03:00:03 CEST
        ("Europe/Berlin", utc(2026, 3, 29, 0, 59, 58), "PT5S", utc(2026, 3, 29, 1, 0, 3)),
        ("Europe/Berlin", utc(2026, 3, 29, 1, 0, 3), "-PT5S", utc(2026, 3, 29, 0, 59, 58)),
        # Berlin, into the repeated hour from before it: 02:59:58 CEST + 5s = 02:00:03 CET
        ("Europe/Berlin", utc(2026, 10, 25, 0, 59, 58), "PT5S", utc(2026, 10, 25, 1, 0, 3)),
        # Berlin, inside the first occurrence of the repeated hour (02:30 CEST)
        ("Europe/Berlin", utc(2026, 10, 25, 0, 30, 0), "PT5S", utc(2026, 10, 25, 0, 30, 5)),
        # New York, spring forward: 01:59:58 EST + 5s = 03:00:03 EDT
        ("America/New_York", utc(2026, 3, 8, 6, 59, 58), "PT5S", utc(2026, 3, 8, 7, 0, 3)),
        # New York, inside the first occurrence of the repeated hour (01:30 EDT)
        ("America/New_York", utc(2026, 11, 1, 5, 30, 0), "PT5S", utc(2026, 11, 1, 5, 30, 5)),
    ],
)
def test_seconds_scale_offsets_across_dst_are_exact(
    tz: str, due_at: datetime, offset: str, expected: datetime
):
    assert shift(due_at, offset, tz, None) == expected


@pytest.mark.parametrize(
    ("tz", "due_at", "offset", "expected"),
    [
        # 02:30 CET: the *second* 02:30 on 25 Oct 2026 in Berlin
        ("Europe/Berlin", utc(2026, 10, 25, 1, 30, 0), "PT0S", utc(2026, 10, 25, 1, 30, 0)),
        ("Europe/Berlin", utc(2026, 10, 25, 1, 30, 0), "PT5S", utc(2026, 10, 25, 1, 30, 5)),
        ("Europe/Berlin", utc(2026, 10, 25, 1, 30, 0), "-PT5S", utc(2026, 10, 25, 1, 29, 55)),
        # 02:00:00 CET: the first instant after the Berlin clocks went back
        ("Europe/Berlin", utc(2026, 10, 25, 1, 0, 0), "PT5S", utc(2026, 10, 25, 1, 0, 5)),
        # 01:30 EST: the *second* 01:30 on 1 Nov 2026 in New York
        ("America/New_York", utc(2026, 11, 1, 6, 30, 0), "PT0S", utc(2026, 11, 1, 6, 30, 0)),
        ("America/New_York", utc(2026, 11, 1, 6, 30, 0), "PT5S", utc(2026, 11, 1, 6, 30, 5)),
        ("America/New_York", utc(2026, 11, 1, 6, 30, 0), "-PT5S", utc(2026, 11, 1, 6, 29, 55)),
    ],
)
def test_seconds_scale_offsets_from_the_second_occurrence_of_a_repeated_hour(
    tz: str, due_at: datetime, offset: str, expected: datetime
):
    # The offset is added to the exact instant: a due instant in the repeated hour must not
    # be moved back an hour, to the first occurrence of the same wall time.
    assert shift(due_at, offset, tz, None) == expected


@pytest.mark.parametrize(
    ("due_at", "offset", "expected"),
    [
        # 24 hours of real time across the Berlin spring forward
        (utc(2026, 3, 28, 12, 0, 0), "PT24H", utc(2026, 3, 29, 12, 0, 0)),
        # 24 hours of real time across the Berlin fall back
        (utc(2026, 10, 24, 12, 0, 0), "PT24H", utc(2026, 10, 25, 12, 0, 0)),
        # 30 hours of real time across the Berlin spring forward
        (utc(2026, 3, 28, 12, 0, 0), "PT30H", utc(2026, 3, 29, 18, 0, 0)),
    ],
)
def test_hour_offsets_without_send_at_are_exact_even_when_a_day_long(
    due_at: datetime, offset: str, expected: datetime
):
    # PT24H has no day part: it is a time part, added to the exact instant.
    assert shift(due_at, offset, "Europe/Berlin", None) == expected


# -- due_steps ---------------------------------------------------------------------------------


def step(key: str, at: datetime, channel: str = "email") -> ScheduledStep:
    return ScheduledStep(key=key, channel=channel, template="reminder", at=at)


A = step("a", utc(2026, 4, 10, 9))
B = step("b", utc(2026, 4, 16, 9))
C = step("c", utc(2026, 4, 22, 9), channel="sms")
D = step("d", utc(2026, 4, 29, 9))
SCHEDULE = [A, B, C, D]


def test_due_steps_nothing_passed():
    assert due_steps(SCHEDULE, set(), utc(2026, 4, 1)) == (None, [])
    assert due_steps(SCHEDULE, set(), utc(2026, 4, 10, 8, 59, 59)) == (None, [])


def test_due_steps_on_an_empty_schedule():
    assert due_steps([], set(), utc(2026, 4, 1)) == (None, [])
    assert due_steps([], {"a"}, utc(2030, 1, 1)) == (None, [])


def test_due_steps_one_passed_exactly_at_its_instant():
    send, skip = due_steps(SCHEDULE, set(), utc(2026, 4, 10, 9))
    assert send == A
    assert skip == []


def test_due_steps_one_passed():
    send, skip = due_steps(SCHEDULE, {"a"}, utc(2026, 4, 17))
    assert send == B
    assert skip == []


@pytest.mark.parametrize(
    ("now", "sent", "skipped"),
    [
        (utc(2026, 4, 16, 9), B, [A]),
        (utc(2026, 4, 21), B, [A]),
        (utc(2026, 4, 22, 9), C, [A, B]),
        (utc(2026, 4, 29, 9), D, [A, B, C]),
        (utc(2027, 1, 1), D, [A, B, C]),
    ],
)
def test_due_steps_several_passed_sends_latest_and_skips_the_rest(
    now: datetime, sent: ScheduledStep, skipped: list[ScheduledStep]
):
    assert due_steps(SCHEDULE, set(), now) == (sent, skipped)


@pytest.mark.parametrize(
    ("done", "now", "sent", "skipped"),
    [
        ({"a"}, utc(2026, 4, 23), C, [B]),
        ({"b"}, utc(2026, 4, 23), C, [A]),
        ({"a", "b"}, utc(2026, 4, 23), C, []),
        ({"c"}, utc(2026, 4, 23), B, [A]),  # done steps are never re-sent
        ({"d"}, utc(2027, 1, 1), C, [A, B]),
        ({"a", "b", "c"}, utc(2026, 4, 23), None, []),
        ({"a", "b", "c", "d"}, utc(2027, 1, 1), None, []),
        ({"unknown"}, utc(2026, 4, 17), B, [A]),
    ],
)
def test_due_steps_ignores_done_steps(
    done: set[str], now: datetime, sent: ScheduledStep | None, skipped: list[ScheduledStep]
):
    assert due_steps(SCHEDULE, done, now) == (sent, skipped)


def test_due_steps_accepts_any_iterable_and_does_not_mutate_inputs():
    done = {"a"}
    send, skip = due_steps(iter(SCHEDULE), done, utc(2026, 4, 30))
    assert send == D
    assert skip == [B, C]
    assert done == {"a"}
    assert SCHEDULE == [A, B, C, D]


def test_due_steps_on_a_built_schedule_for_an_imported_overdue_invoice():
    # Imported on 20 May 2026 for an invoice due 15 Apr (UTC): every reminder has passed;
    # only the final notice goes out, the rest are skipped.
    due_at = default_due_at(date(2026, 4, 15), "UTC")
    schedule = build_schedule(default_policy(), due_at, "UTC")
    send, skip = due_steps(schedule, set(), utc(2026, 5, 20))
    assert send is not None
    assert send.key == "final_notice"
    assert send.at == utc(2026, 5, 15, 9)
    assert [s.key for s in skip] == ["before_due", "first_late_day", "late_7", "late_14"]


def test_due_steps_sends_the_latest_step_even_when_policy_order_is_not_chronological():
    # [P1M, P28D] passes the policy validator (both land on 28 Feb 09:00 from its 31 Jan
    # reference date), but for an invoice due 31 Mar the P28D step comes first in time:
    # P1M -> 30 Apr 09:00, P28D -> 28 Apr 09:00.
    policy = PolicySpec(
        policy_id=4,
        name="months",
        steps=[StepSpec(key="one_month", offset="P1M"), StepSpec(key="four_weeks", offset="P28D")],
        escalate_after="P60D",
    )
    schedule = build_schedule(policy, default_due_at(date(2026, 3, 31), "UTC"), "UTC")
    assert [(s.key, s.at) for s in schedule] == [
        ("one_month", utc(2026, 4, 30, 9)),
        ("four_weeks", utc(2026, 4, 28, 9)),
    ]
    send, skip = due_steps(schedule, set(), utc(2026, 5, 1))
    assert send is not None
    assert send.key == "one_month"  # the latest passed step
    assert [s.key for s in skip] == ["four_weeks"]


# -- next_action -------------------------------------------------------------------------------

ESCALATE_AT = utc(2026, 5, 30, 9)


def test_next_action_reminders_left():
    got = next_action(SCHEDULE, set(), ESCALATE_AT, escalated=False)
    assert got == NextAction(kind="reminder", at=A.at, step_key="a", channel="email")


@pytest.mark.parametrize(
    ("done", "key", "at", "channel"),
    [
        ({"a"}, "b", utc(2026, 4, 16, 9), "email"),
        ({"a", "b"}, "c", utc(2026, 4, 22, 9), "sms"),
        ({"b"}, "a", utc(2026, 4, 10, 9), "email"),  # earliest not-done step
        ({"a", "b", "c"}, "d", utc(2026, 4, 29, 9), "email"),
    ],
)
def test_next_action_is_the_earliest_step_not_done(
    done: set[str], key: str, at: datetime, channel: str
):
    got = next_action(SCHEDULE, done, ESCALATE_AT, escalated=False)
    assert got == NextAction(kind="reminder", at=at, step_key=key, channel=channel)


def test_next_action_picks_the_earliest_instant_not_the_first_in_order():
    got = next_action([D, C, B], set(), ESCALATE_AT, escalated=False)
    assert got is not None
    assert (got.kind, got.step_key, got.at) == ("reminder", "b", utc(2026, 4, 16, 9))


def test_next_action_only_escalation_left():
    got = next_action(SCHEDULE, {"a", "b", "c", "d"}, ESCALATE_AT, escalated=False)
    assert got == NextAction(kind="escalation", at=utc(2026, 5, 30, 9))
    assert got.step_key is None
    assert got.channel is None


def test_next_action_only_escalation_left_with_empty_schedule():
    got = next_action([], set(), ESCALATE_AT, escalated=False)
    assert got == NextAction(kind="escalation", at=utc(2026, 5, 30, 9))


def test_next_action_nothing_left_after_escalation():
    assert next_action(SCHEDULE, {"a", "b", "c", "d"}, ESCALATE_AT, escalated=True) is None
    assert next_action([], set(), ESCALATE_AT, escalated=True) is None


def test_next_action_ignores_steps_at_or_after_escalation():
    at_escalation = step("e", ESCALATE_AT)
    after_escalation = step("f", utc(2026, 6, 1, 9))
    schedule = [*SCHEDULE, at_escalation, after_escalation]
    got = next_action(schedule, {"a", "b", "c", "d"}, ESCALATE_AT, escalated=False)
    assert got == NextAction(kind="escalation", at=ESCALATE_AT)
    assert next_action(schedule, {"a", "b", "c", "d"}, ESCALATE_AT, escalated=True) is None


def test_next_action_on_the_default_schedule():
    tz = "Europe/Berlin"
    due_at = default_due_at(date(2026, 3, 20), tz)
    schedule = build_schedule(default_policy(), due_at, tz)
    esc = escalation_at(default_policy(), due_at, tz)
    assert esc == utc(2026, 5, 4, 7)

    got = next_action(schedule, {"before_due"}, esc, escalated=False)
    assert got == NextAction(
        kind="reminder", at=utc(2026, 3, 21, 8), step_key="first_late_day", channel="email"
    )
    got = next_action(schedule, set(DEFAULT_KEYS[:-1]), esc, escalated=False)
    assert got == NextAction(
        kind="reminder", at=utc(2026, 4, 19, 7), step_key="final_notice", channel="letter"
    )
    assert next_action(schedule, set(DEFAULT_KEYS), esc, escalated=False) == NextAction(
        kind="escalation", at=utc(2026, 5, 4, 7)
    )
    assert next_action(schedule, set(DEFAULT_KEYS), esc, escalated=True) is None
