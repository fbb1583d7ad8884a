"""The dunning schedule as a pure function: no I/O, deterministic, safe inside a workflow.

Day-sized parts of an offset move the calendar in the customer's time zone (so a DST change
never shifts a reminder to another day or hour); the policy's ``send_at`` then pins the local
time of day. With ``send_at`` unset, the offset's time part is added to the exact instant
(seconds-scale policies for demos and tests).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
import isodate

from workflows.types import NextAction, PolicySpec, ScheduledStep

END_OF_DAY = time(23, 59, 59)


def default_due_at(due_date: date, timezone: str) -> datetime:
    """The end of ``due_date`` in the customer's zone, as a UTC instant."""
    return _localize(datetime.combine(due_date, END_OF_DAY), ZoneInfo(timezone))


def _localize(naive: datetime, zone: ZoneInfo) -> datetime:
    # fold=0: an ambiguous wall time is its first occurrence; a wall time inside a DST gap
    # lands just after the gap. Either way the result is a real instant.
    return naive.replace(tzinfo=zone).astimezone(UTC)


def _split(offset: str) -> tuple[int, int, int, int, timedelta]:
    """(sign, years, months, days, clock) of an ISO 8601 duration.

    The date part (before ``T``) and the time part are parsed apart, so ``PT24H`` stays 24 hours
    of clock time and only ``P1D`` means one calendar day.
    """
    text = offset.strip()
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    date_part, _, time_part = body.partition("T")
    years = months = days = 0
    if date_part not in ("P", ""):
        parsed = isodate.parse_duration(date_part)
        if isinstance(parsed, isodate.Duration):
            years, months = int(parsed.years), int(parsed.months)
            days = parsed.tdelta.days
        else:
            days = parsed.days
    clock = isodate.parse_duration("PT" + time_part) if time_part else timedelta(0)
    assert isinstance(clock, timedelta)
    return sign, years, months, days, clock


def _add_months(d: datetime, months: int) -> datetime:
    total = d.year * 12 + (d.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    # clamp the day: 31 Jan + P1M = 28/29 Feb
    for day in (d.day, 30, 29, 28):
        try:
            return d.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise ValueError(f"cannot add {months} months to {d}")


def shift(due_at: datetime, offset: str, timezone: str, send_at: str | None) -> datetime:
    """The instant ``offset`` away from ``due_at`` for a customer in ``timezone``."""
    zone = ZoneInfo(timezone)
    sign, years, months, days, clock = _split(offset)
    if send_at is None and not (years or months or days):
        return due_at.astimezone(UTC) + sign * clock  # pure clock time: exact, whatever the zone
    wall = due_at.astimezone(zone).replace(tzinfo=None)
    wall = _add_months(wall, sign * (years * 12 + months))
    wall = wall + sign * timedelta(days=days)
    if send_at is not None:
        hour, minute = (int(part) for part in send_at.split(":"))
        local_day = (wall + sign * clock).date()
        return _localize(datetime.combine(local_day, time(hour, minute)), zone)
    return _localize(wall, zone) + sign * clock


def build_schedule(
    policy: PolicySpec, due_at: datetime, timezone: str, country: str | None = None
) -> list[ScheduledStep]:
    """Every step of ``policy`` with its instant (moved into the contact window), in order."""
    return [
        ScheduledStep(
            key=step.key,
            channel=step.channel,
            template=step.template,
            at=contact_allowed(
                shift(due_at, step.offset, timezone, policy.send_at), policy, timezone, country
            ),
            fallback=list(step.fallback),
        )
        for step in policy.steps
    ]


def parse_window(window: str) -> tuple[time, time]:
    """``"08:00-21:00"`` as (start, end); raises ValueError naming the input."""
    try:
        start_text, end_text = window.split("-")
        start, end = time.fromisoformat(start_text.strip()), time.fromisoformat(end_text.strip())
    except ValueError:
        raise ValueError(
            f"contact window {window!r} must be HH:MM-HH:MM, e.g. 08:00-21:00"
        ) from None
    if not start < end:
        raise ValueError(f"contact window {window!r}: the start must be before the end")
    return start, end


def contact_allowed(
    at: datetime, policy: PolicySpec, timezone: str, country: str | None = None
) -> datetime:
    """The first instant at or after ``at`` when the customer may be contacted: inside the
    policy's daily window in their zone, and (if the policy says so) not on a weekend or a
    public holiday of their country. Pure: the same inputs always give the same instant."""
    if policy.contact_window is None and not policy.skip_weekends and not policy.skip_holidays:
        return at
    zone = ZoneInfo(timezone)
    start, end = parse_window(policy.contact_window or "00:00-23:59")
    if policy.contact_window is None:
        end = time(23, 59, 59, 999999)
    wall = at.astimezone(zone).replace(tzinfo=None)
    for _ in range(400):  # a year of days is plenty; holidays never fill one
        day = wall.date()
        if _closed(day, policy, country):
            wall = datetime.combine(day + timedelta(days=1), start)
            continue
        if wall.time() < start:
            wall = datetime.combine(day, start)
        elif wall.time() >= end:
            wall = datetime.combine(day + timedelta(days=1), start)
            continue
        moved = _localize(wall, zone)
        # Never earlier than asked (a DST gap can push a wall time forward, not back).
        return max(moved, at)
    raise ValueError("no allowed contact time within 400 days")


def _closed(day: date, policy: PolicySpec, country: str | None) -> bool:
    if policy.skip_weekends and day.weekday() >= 5:
        return True
    if policy.skip_holidays and country:
        return day in _holidays(country, day.year)
    return False


@lru_cache(maxsize=256)
def _holidays(country: str, year: int) -> frozenset[date]:
    try:
        return frozenset(holidays.country_holidays(country, years=[year]).keys())
    except NotImplementedError:  # a country the holidays package does not know
        return frozenset()


def escalation_at(policy: PolicySpec, due_at: datetime, timezone: str) -> datetime:
    return shift(due_at, policy.escalate_after, timezone, policy.send_at)


def nth_period(start: datetime, every: str, n: int, timezone: str) -> datetime:
    """``start`` plus ``n`` times the duration ``every``, counted from ``start`` each time (a
    monthly period from 31 January ends on 28 February, then on 31 March: no drift)."""
    _, years, months, days, clock = _split(every)
    zone = ZoneInfo(timezone)
    wall = start.astimezone(zone).replace(tzinfo=None)
    wall = _add_months(wall, (years * 12 + months) * n) + timedelta(days=days * n)
    return _localize(wall, zone) + clock * n


def due_steps(
    schedule: Iterable[ScheduledStep], done: set[str], now: datetime
) -> tuple[ScheduledStep | None, list[ScheduledStep]]:
    """Which step to send now and which to record as skipped.

    Of the steps whose instant has passed and that were neither sent nor skipped, only the
    latest is sent; the earlier ones are skipped. This is what keeps an imported overdue
    invoice, or one whose worker was down for a long time, from receiving a burst.
    """
    passed = [s for s in schedule if s.key not in done and s.at <= now]
    if not passed:
        return None, []
    latest = max(reversed(passed), key=lambda s: s.at)  # ties: the later step in the policy
    return latest, [s for s in passed if s is not latest]


def next_action(
    schedule: Iterable[ScheduledStep],
    done: set[str],
    escalate_at: datetime,
    escalated: bool,
) -> NextAction | None:
    """The next thing the workflow will do if nothing changes (None when nothing is left)."""
    pending = [s for s in schedule if s.key not in done and s.at < escalate_at]
    if pending:
        step = min(pending, key=lambda s: s.at)
        return NextAction(kind="reminder", at=step.at, step_key=step.key, channel=step.channel)
    if not escalated:
        return NextAction(kind="escalation", at=escalate_at)
    return None


def local_today(now: datetime, timezone: str) -> date:
    """The customer's calendar date at the instant ``now``."""
    return now.astimezone(ZoneInfo(timezone)).date()


def moved_by(
    at: datetime, allowed: datetime, policy: PolicySpec, timezone: str, country: str | None = None
) -> list[str]:
    """Why ``contact_allowed`` moved ``at`` to ``allowed``: ``weekend`` and ``holiday`` for the
    closed days passed over, ``quiet_hours`` for the hours outside the daily window; empty when
    it did not move. Explains the instants ``build_schedule`` gives, for the simulation."""
    if allowed <= at:
        return []
    zone = ZoneInfo(timezone)
    day, last = at.astimezone(zone).date(), allowed.astimezone(zone).date()
    reasons: list[str] = []
    while True:  # the day of ``at``, then each day passed over (not the day it lands on)
        if policy.skip_weekends and day.weekday() >= 5:
            why = "weekend"
        elif policy.skip_holidays and country and day in _holidays(country, day.year):
            why = "holiday"
        else:
            why = "quiet_hours"
        if why not in reasons:
            reasons.append(why)
        day += timedelta(days=1)
        if day >= last:
            return reasons
