"""Column types and validated value types shared by every model."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import isodate
import phonenumbers
import pycountry
from pydantic import AfterValidator
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException
from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores instants as UTC; always returns aware UTC datetimes (SQLite drops zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_currency(code: str) -> str:
    """An active ISO 4217 code, upper case."""
    code = code.strip().upper()
    if len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"unknown currency {code!r}: expected an ISO 4217 code such as EUR or USD")
    return code


def check_country(code: str) -> str:
    """An ISO 3166 alpha-2 country code, upper case."""
    code = code.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"unknown country {code!r}: expected ISO 3166 alpha-2 such as DE or US")
    return code


def check_timezone(name: str) -> str:
    """An IANA time zone name such as Europe/Berlin."""
    if name not in _zone_names():
        raise ValueError(f"unknown time zone {name!r}: expected an IANA name such as Europe/Berlin")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


_ZONES: set[str] = set()


def _zone_names() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones())
    return _ZONES


def check_phone(number: str) -> str:
    """A phone number in E.164 form (+ and digits), checked for plausibility."""
    if not number.startswith("+"):
        raise ValueError("phone must be in E.164 form, e.g. +4930123456")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"phone {number!r} is not a valid E.164 number: {exc}") from None
    formatted = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if formatted != number or not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"phone {number!r} is not a valid E.164 number")
    return number


def parse_duration(text: str) -> timedelta | isodate.Duration:
    """ISO 8601 duration, optionally negative (``-P3D``); raises ValueError with the input."""
    try:
        value = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError, TypeError):
        raise ValueError(
            f"malformed ISO 8601 duration {text!r}: expected e.g. P3D, -P3D, PT30S, P1M"
        ) from None
    return value


def check_duration(text: str) -> str:
    parse_duration(text)
    return text.strip()


def check_nonnegative_duration(text: str) -> str:
    if text.strip().startswith("-"):
        raise ValueError(f"duration {text!r} must not be negative")
    return check_duration(text)


def check_time_of_day(text: str) -> str:
    """``HH:MM`` on a 24-hour clock."""
    try:
        hh, mm = text.split(":")
        hour, minute = int(hh), int(mm)
    except ValueError:
        raise ValueError(f"time of day {text!r} must be HH:MM, e.g. 09:00") from None
    if not (0 <= hour < 24 and 0 <= minute < 60) or len(hh) != 2 or len(mm) != 2:
        raise ValueError(f"time of day {text!r} must be HH:MM between 00:00 and 23:59")
    return text


def check_iban(text: str) -> str:
    """An IBAN with valid check digits, compact (upper case, no spaces)."""
    try:
        return str(IBAN(text).compact)
    except SchwiftyException as exc:
        raise ValueError(f"invalid IBAN {text!r}: {exc}") from None


def compact_iban(text: str | None) -> str | None:
    """Upper case without spaces, unchecked (for matching what a bank sent)."""
    return re.sub(r"\s+", "", text).upper() or None if text else None


CurrencyCode = Annotated[str, AfterValidator(check_currency)]
CountryCode = Annotated[str, AfterValidator(check_country)]
TimeZoneName = Annotated[str, AfterValidator(check_timezone)]
PhoneE164 = Annotated[str, AfterValidator(check_phone)]
IsoDuration = Annotated[str, AfterValidator(check_duration)]
NonNegativeIsoDuration = Annotated[str, AfterValidator(check_nonnegative_duration)]
TimeOfDay = Annotated[str, AfterValidator(check_time_of_day)]
IbanStr = Annotated[str, AfterValidator(check_iban)]

# The largest id: ids are 32-bit INTEGER columns on PostgreSQL (and beyond 64 bits SQLite's
# driver cannot bind a value at all).
MAX_ID = 2**31 - 1
