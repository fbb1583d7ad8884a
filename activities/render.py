"""Rendering reminder messages from Jinja2 templates, with money and dates formatted by Babel."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.core import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal, get_currency_precision
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATE_DIR = Path(__file__).parent / "templates"
DEFAULT_LOCALE = "en"

_env = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(enabled_extensions=("html",)),
    undefined=StrictUndefined,
    keep_trailing_newline=False,
)


def money(amount_minor: int, currency: str, locale: str = DEFAULT_LOCALE) -> str:
    """Minor units to a localized amount, exactly (Decimal, never float)."""
    exponent = get_currency_precision(currency)
    value = Decimal(amount_minor).scaleb(-exponent)
    return format_currency(value, currency, locale=_locale(locale))


def format_percent(basis_points: int, locale: str = DEFAULT_LOCALE) -> str:
    """Basis points as a localized percentage: 200 -> "2 %" style per locale, exact."""
    value = Decimal(basis_points).scaleb(-2)
    return f"{format_decimal(value, format='#,##0.##', locale=_locale(locale))}%"


def local_date(value: date | datetime, timezone: str, locale: str = DEFAULT_LOCALE) -> str:
    if isinstance(value, datetime):
        value = value.astimezone(ZoneInfo(timezone)).date()
    return format_date(value, format="long", locale=_locale(locale))


def _locale(name: str) -> Locale:
    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT_LOCALE)


def render(template: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of ``template`` rendered with ``context``."""
    tmpl = _env.get_template(f"{template}.j2")
    ctx = tmpl.new_context(context)
    subject = "".join(tmpl.blocks["subject"](ctx)).strip()
    body = "".join(tmpl.blocks["body"](ctx)).strip()
    return subject, body
