"""The dunning schedule as a pure function: no I/O, deterministic, safe inside a workflow.

Day-sized parts of an offset move the calendar in the customer's time zone (so a DST change
never shifts a reminder to another day or hour); the policy's ``send_at`` then pins the local
time of day. With ``send_at`` unset, the offset's time part is added to the exact instant
(seconds-scale policies for demos and tests).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

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


def _split(offset: str) -> tuple[int, int, int, timedelta]:
    """(sign, years, months, days...) split of an ISO 8601 duration into calendar and clock parts."""
    text = offset.strip()
    sign = -1 if text.startswith("-") else 1
    parsed = isodate.parse_duration(text.lstrip("+-"))
    if isinstance(parsed, isodate.Duration):
        years, months, delta = int(parsed.years), int(parsed.months), parsed.tdelta
    else:
        years, months, delta = 0, 0, parsed
    return sign, years, months, delta


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
    sign, years, months, delta = _split(offset)
    wall = due_at.astimezone(zone).replace(tzinfo=None)
    wall = _add_months(wall, sign * (years * 12 + months))
    wall = wall + sign * timedelta(days=delta.days)
    clock = sign * timedelta(seconds=delta.seconds, microseconds=delta.microseconds)
    if send_at is not None:
        hour, minute = (int(part) for part in send_at.split(":"))
        local_day = (wall + clock).date()
        return _localize(datetime.combine(local_day, time(hour, minute)), zone)
    return _localize(wall, zone) + clock


def build_schedule(policy: PolicySpec, due_at: datetime, timezone: str) -> list[ScheduledStep]:
    """Every step of ``policy`` with its instant, in the policy's order."""
    return [
        ScheduledStep(
            key=step.key,
            channel=step.channel,
            template=step.template,
            at=shift(due_at, step.offset, timezone, policy.send_at),
        )
        for step in policy.steps
    ]


def escalation_at(policy: PolicySpec, due_at: datetime, timezone: str) -> datetime:
    return shift(due_at, policy.escalate_after, timezone, policy.send_at)


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
    return passed[-1], passed[:-1]


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
