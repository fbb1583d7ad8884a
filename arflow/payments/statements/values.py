"""Field values shared by the parsers: amounts in minor units, currencies, IBANs, text.

Every function raises ``ValueError`` with a message fit for a row error.
"""

from __future__ import annotations

import codecs
import re
from decimal import Decimal
from functools import lru_cache

import pycountry
from babel.numbers import get_currency_precision
from stdnum import iban as stdnum_iban

# More digits than this cannot be an account movement, and would lose precision in Decimal
# arithmetic and in a BIGINT column.
MAX_DIGITS = 18
NOT_PROVIDED = "NOTPROVIDED"

_PLAIN_AMOUNT = re.compile(r"\d+(?:\.\d+)?")
_SPACES = re.compile(r"[ \u00a0\u202f]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def check_currency(code: str) -> str:
    """An ISO 4217 code in upper case, or ValueError."""
    normalised = code.strip().upper()
    if len(normalised) != 3 or pycountry.currencies.get(alpha_3=normalised) is None:
        raise ValueError(f"currency {code!r} is not an ISO 4217 code")
    return normalised


def currency_exponent(currency: str) -> int:
    """Decimals of the currency's minor unit (EUR 2, JPY 0, KWD 3).

    Taken from Babel, like ``arflow.messages.render.money`` that turns minor units back into an
    amount, so a value read here is shown with the same number of decimals.
    """
    return int(get_currency_precision(check_currency(currency)))


def to_minor_units(amount: Decimal, currency: str) -> int:
    """An exact decimal amount as an integer of the currency's minor units.

    Trailing zeros beyond the exponent are fine (``1500.00`` JPY is 1500); a non-zero digit
    there is not (``12.345`` EUR raises).
    """
    if not amount.is_finite():
        raise ValueError(f"amount {amount} is not a number")
    exponent = currency_exponent(currency)
    if amount and amount.adjusted() + exponent >= MAX_DIGITS:
        raise ValueError(f"amount {amount} is too large")
    scaled = amount.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        decimals = -int(amount.normalize().as_tuple().exponent)
        raise ValueError(
            f"amount {amount} has {decimals} decimals but {currency.upper()} allows {exponent}"
        )
    return int(scaled)


def parse_decimal(
    text: str, *, decimal_separator: str = ".", thousands_separator: str = ""
) -> Decimal:
    """A decimal number written with the given separators, optionally signed.

    Accepts a leading ``+``/``-`` or a trailing ``-`` (``1.234,56-``, as some German banks
    write debits). Thousands separators must group the digits by three.
    """
    value = text.strip()
    if thousands_separator.isspace():
        value = _SPACES.sub(thousands_separator, value)
    negative = False
    if value.endswith("-"):
        negative, value = True, value[:-1].rstrip()
    elif value and value[0] in "+-":
        negative, value = value[0] == "-", value[1:].lstrip()
    whole, separator, fraction = value.partition(decimal_separator)
    if separator and not fraction.isdigit():
        raise ValueError("digits missing after the decimal separator")
    if thousands_separator and thousands_separator in whole:
        groups = whole.split(thousands_separator)
        if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
            raise ValueError(f"thousands separator {thousands_separator!r} in the wrong place")
        whole = "".join(groups)
    plain = f"{whole}.{fraction}" if separator else whole
    if not _PLAIN_AMOUNT.fullmatch(plain) or not plain.isascii():
        raise ValueError("not a number")
    amount = Decimal(plain)
    return -amount if negative else amount


def normalise_iban(text: str | None) -> str | None:
    """Upper case without spaces when the text is a valid IBAN (check digits, country length),
    else None: a plain account number or a typo is no IBAN."""
    if not text:
        return None
    compact = "".join(text.split()).upper()
    return compact if _valid_iban(compact) else None


@lru_cache(maxsize=4096)
def _valid_iban(compact: str) -> bool:
    # stdnum looks the bank up in its registry too, which is slow; customers repeat.
    return bool(stdnum_iban.is_valid(compact))


def clean_text(text: str | None) -> str:
    """Runs of whitespace (line breaks included) as single spaces, trimmed."""
    return " ".join(text.split()) if text else ""


def optional_text(text: str | None) -> str | None:
    """``clean_text``, with None for an empty result."""
    return clean_text(text) or None


def reference(text: str | None) -> str | None:
    """A reference value, None when empty or the SEPA placeholder ``NOTPROVIDED``."""
    value = optional_text(text)
    if value is None or value.upper() == NOT_PROVIDED:
        return None
    return value


def decode_text(content: bytes) -> str:
    """Text of a statement file whose encoding is not declared: UTF-16 by its byte order
    mark, else UTF-8 (a BOM dropped), else Windows-1252, which covers Latin-1 files too."""
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return content.decode("utf-16", errors="replace")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return content.decode("cp1252", errors="replace")


def physical_lines(text: str) -> list[str]:
    """Lines split at CR LF, CR or LF only (``str.splitlines`` also splits at form feeds and
    other separators, which would shift line numbers)."""
    return _LINE_BREAK.split(text)
