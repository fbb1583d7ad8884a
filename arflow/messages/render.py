"""Rendering reminder messages from Jinja2 templates, with money and dates formatted by Babel.

Templates live in ``templates/<locale>/<name>.j2`` (``en``, ``de``, ``fr``; a territory folder
such as ``de-AT`` would be preferred for ``de-AT`` customers if it existed). Each one defines the
blocks ``subject``, ``body`` (plain text), ``html`` and ``sms``. A locale's partials
(``_note.j2``, ``_pay.j2``, ``_pay_html.j2``) sit beside its templates; ``templates/_common``
holds the language-free HTML layout macros.

Locale fallback: ``de-AT`` -> ``de`` -> the default locale (setting ``default_locale``) -> ``en``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.core import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, get_currency_precision
from babel.numbers import format_percent as babel_format_percent
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound

log = logging.getLogger("arflow.render")
TEMPLATE_DIR = Path(__file__).parent / "templates"
COMMON_DIR = TEMPLATE_DIR / "_common"
DEFAULT_LOCALE = "en"  # the built-in default, and the last resort: its templates must exist
SMS_MAX_CHARS = 300
BLOCKS = ("subject", "body", "html", "sms")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclass(frozen=True)
class Rendered:
    """One step's message in every form a channel may need."""

    subject: str
    text: str
    html: str
    sms: str
    locale_used: str  # the template folder used, e.g. "de" for a de-AT customer


def money(amount_minor: int, currency: str, locale: str = DEFAULT_LOCALE) -> str:
    """Minor units to a localized amount, exactly (Decimal, never float)."""
    exponent = get_currency_precision(currency)
    value = Decimal(amount_minor).scaleb(-exponent)
    return format_currency(value, currency, locale=_locale(locale))


def format_percent(basis_points: int | Decimal, locale: str = DEFAULT_LOCALE) -> str:
    """Basis points as a localized percentage, exact: 250 -> "2.5%" (en), "2,5 %" (de, fr)."""
    value = Decimal(basis_points).scaleb(-4)
    return babel_format_percent(value, locale=_locale(locale), decimal_quantization=False)


def local_date(value: date | datetime, timezone: str, locale: str = DEFAULT_LOCALE) -> str:
    """A date (or the customer's local date of an instant) in the locale's long format."""
    if isinstance(value, datetime):
        value = value.astimezone(ZoneInfo(timezone)).date()
    loc = _locale(locale)
    text = format_date(value, format="long", locale=loc)
    if loc.language == "fr" and value.day == 1 and text.startswith("1 "):
        text = "1er" + text[1:]  # French writes the first of the month as an ordinal
    return text


def _locale(name: str) -> Locale:
    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT_LOCALE)


# -- locales ----------------------------------------------------------------------------


def _split(tag: str) -> tuple[str, str | None]:
    """``de-AT``, ``de_at``, ``DE`` -> ("de", "AT") / ("de", None)."""
    language, _, territory = tag.strip().replace("_", "-").partition("-")
    return language.lower(), (territory.upper() or None)


def _tag(language: str, territory: str | None) -> str:
    return f"{language}-{territory}" if territory else language


@cache
def available_locales() -> tuple[str, ...]:
    """The locales with a template folder (folders starting with ``_`` are shared parts)."""
    return tuple(
        sorted(p.name for p in TEMPLATE_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
    )


def _candidates(tag: str) -> list[str]:
    language, territory = _split(tag)
    return [_tag(language, territory), language] if territory else [language]


def resolve_locale(requested: str | None, default_locale: str = DEFAULT_LOCALE) -> str:
    """The template folder for a customer's locale: ``de-AT`` -> ``de-AT`` if it has templates,
    else ``de``; a language without templates gets ``default_locale`` (same rule), then ``en``."""
    available = available_locales()
    for tag in (requested or "", default_locale, DEFAULT_LOCALE):
        for candidate in _candidates(tag) if tag else ():
            if candidate in available:
                return candidate
    raise TemplateNotFound(f"no templates for {DEFAULT_LOCALE!r} in {TEMPLATE_DIR}")


def _babel_knows(tag: str) -> bool:
    try:
        Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return False
    return True


def formatting_locale(requested: str | None, default_locale: str = DEFAULT_LOCALE) -> str:
    """The locale that formats money and dates inside the templates ``resolve_locale`` picks.

    The customer's own locale when it speaks the templates' language (``de-AT`` keeps Austrian
    formats, "€ 1.200,00" and "Jänner", in the German text); otherwise the default locale if it
    does, otherwise the templates' locale: an English text never shows Portuguese dates.
    """
    used = resolve_locale(requested, default_locale)
    language = _split(used)[0]
    for tag in (requested or "", default_locale):
        if tag and _split(tag)[0] == language and _babel_knows(tag):
            return _tag(*_split(tag))
    return used


# -- templates --------------------------------------------------------------------------


@cache
def _environments(locale_used: str) -> tuple[Environment, Environment]:
    """(plain text, HTML) environments over one locale's folder and the shared macros.

    The same template is compiled in both: the text environment renders ``subject``, ``body``
    and ``sms`` unescaped; the HTML one autoescapes everything its ``html`` block prints."""
    loader = FileSystemLoader([TEMPLATE_DIR / locale_used, COMMON_DIR])
    common: dict[str, Any] = {
        "loader": loader,
        "undefined": StrictUndefined,
        "keep_trailing_newline": False,
    }
    return Environment(autoescape=False, **common), Environment(autoescape=True, **common)


def template_names(locale: str = DEFAULT_LOCALE) -> tuple[str, ...]:
    """The message templates of a locale folder (partials, ``_*.j2``, left out)."""
    folder = TEMPLATE_DIR / locale
    return tuple(sorted(p.stem for p in folder.glob("*.j2") if not p.name.startswith("_")))


def _block(tmpl: Template, block: str, context: dict[str, Any]) -> str:
    try:
        render_block = tmpl.blocks[block]
    except KeyError:
        raise TemplateNotFound(f"{tmpl.name} has no block {block!r}") from None
    return "".join(render_block(tmpl.new_context(context))).strip()


def render_message(
    template: str, locale: str, context: dict[str, Any], *, default_locale: str = DEFAULT_LOCALE
) -> Rendered:
    """Render ``template`` for a customer in ``locale``, falling back as ``resolve_locale`` says.

    ``context`` comes from ``arflow.messages.context.message_context`` (built with the same
    default locale, so money and dates match the language of the text). StrictUndefined: a
    variable the context lacks is an error, never an empty gap in a reminder.
    """
    if not _NAME.match(template):
        raise TemplateNotFound(template)
    used = resolve_locale(locale, default_locale)
    text_env, html_env = _environments(used)
    ctx = context | {"lang": used}
    text_tmpl = text_env.get_template(f"{template}.j2")
    html_tmpl = html_env.get_template(f"{template}.j2")
    return Rendered(
        subject=_block(text_tmpl, "subject", ctx),
        text=_block(text_tmpl, "body", ctx),
        html=_block(html_tmpl, "html", ctx),
        sms=_sms(text_tmpl, ctx),
        locale_used=used,
    )


def _sms(tmpl: Template, context: dict[str, Any]) -> str:
    """The ``sms`` block on one line; when longer than SMS_MAX_CHARS (a long invoice number or
    pay link), again with ``sms_short``, which leaves out the dates and the optional clauses."""
    for short in (False, True):
        sms = " ".join(_block(tmpl, "sms", context | {"sms_short": short}).split())
        if len(sms) <= SMS_MAX_CHARS:
            return sms
    log.warning(
        "sms of %s has %d characters, more than %d: is the pay link too long?",
        tmpl.name,
        len(sms),
        SMS_MAX_CHARS,
    )
    return sms


def render(template: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, plain text) of ``template`` in the context's ``locale`` (see render_message)."""
    rendered = render_message(template, str(context.get("locale") or DEFAULT_LOCALE), context)
    return rendered.subject, rendered.text
