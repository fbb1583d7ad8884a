"""MT940 (SWIFT customer statement) to statement lines, with the ``mt-940`` library.

``mt-940`` (import name ``mt940``) reads each ``:61:`` statement line (value date, entry date
across a year end, the C/D/RC/RD mark, funds code, comma amount, bank reference) and the
German ``:86:`` sub-fields (``?20``-``?29`` remittance with the SEPA keywords EREF+/SVWZ+,
``?31`` IBAN, ``?32``/``?33`` name). Around it this module:

- splits the file into fields itself, to know each ``:61:``'s line number, and hands the
  library one ``:61:`` with its ``:86:`` at a time, so a malformed line costs that line only
  (the library stops at the first bad line of a file);
- never calls ``mt940.parse`` on the upload: it reads a ``str`` or ``bytes`` argument that
  names an existing file as that file;
- takes the currency from the statement's balances and checks the amount against it.

Sub-fields ``?20``-``?29`` are joined without a separator, as banks cut the text into 27
character pieces wherever the limit falls (``Rechnung INV-2026-00`` + ``42``). A plain
``:86:`` keeps its text as remittance, line breaks as spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import mt940

from arflow.payments.statements.types import (
    AccountStatement,
    LineError,
    ParsedStatement,
    StatementError,
    StatementLine,
    file_statement,
)
from arflow.payments.statements.values import (
    clean_text,
    decode_text,
    normalise_iban,
    optional_text,
    physical_lines,
    reference,
    to_minor_units,
)

FORMAT = "mt940"
_FIELD = re.compile(r":(?P<tag>\d{2}[A-Z]?|NS):(?P<value>.*)")
_BALANCE_TAGS = ("60F", "60M", "60", "62F", "62M", "62", "64", "65")
_BALANCE_CURRENCY = re.compile(r"[CD]\d{6}(?P<currency>[A-Z]{3})")
_AMOUNT = re.compile(r"\d+(?:,\d*)?")
_NO_REFERENCE = "NONREF"
# Every fix the library offers over its 5.0.0 behaviour: RC signed as a debit, ?31 as the
# IBAN (not glued to the name), details of any length, lower-case marks.
_OPTIONS = mt940.Options.all()
_STATEMENT_LINE = mt940.tags.Tags.STATEMENT.value


@dataclass(frozen=True)
class _Field:
    line_no: int
    tag: str
    value: str


@dataclass(frozen=True)
class _Statement:
    fields: list[_Field]

    def first(self, *tags: str) -> _Field | None:
        for tag in tags:
            for found in self.fields:
                if found.tag == tag:
                    return found
        return None

    def currency(self) -> str | None:
        for balance in (self.first(tag) for tag in _BALANCE_TAGS):
            match = _BALANCE_CURRENCY.match(balance.value) if balance else None
            if match:
                return match.group("currency")
        return None


def looks_like_mt940(text: str) -> bool:
    """An account identification and a balance or statement line, each at a line start."""
    tags = {m.group("tag") for line in physical_lines(text) if (m := _FIELD.match(line))}
    return "25" in tags and bool(tags & {"60F", "60M", "61", "62F"})


def parse_mt940(content: bytes, filename: str) -> ParsedStatement:
    """Every ``:61:`` of an MT940 file as a statement line; bad ones become errors. A file
    may hold several statements, of several accounts (a multi-account export): each keeps its
    own account (its ``:25:``; a statement without one continues the one before).

    Raises:
        StatementError: no account (``:25:``) field.
    """
    statements = _statements(_fields(decode_text(content)))
    if not any(s.first("25") for s in statements):
        raise StatementError(f"{filename}: MT940 without an account (:25:) field")
    parts: list[AccountStatement] = []
    account = ""
    for statement in statements:
        found = statement.first("25")
        account = found.value.strip() if found else account
        parts.append(_account_statement(statement, account))
    return file_statement(FORMAT, parts)


def _account_statement(statement: _Statement, account: str) -> AccountStatement:
    lines: list[StatementLine] = []
    errors: list[LineError] = []
    currency = statement.currency()
    for field, details in _statement_lines(statement):
        try:
            if currency is None:
                raise ValueError("no currency: the statement has no :60F: or :62F: balance")
            lines.append(_line(field, details, currency))
        except ValueError as exc:
            errors.append(LineError(field.line_no, str(exc)))
    number = statement.first("28C", "28") or statement.first("20")
    return AccountStatement(
        account_iban=_account_iban(account),
        account_id=account or None,
        statement_id=number.value.strip() if number else None,
        lines=lines,
        errors=errors,
    )


def _fields(text: str) -> list[_Field]:
    """Tags with their (possibly multi-line) values; SWIFT block headers and the ``-``
    message trailer end a field and are dropped."""
    fields: list[_Field] = []
    current: _Field | None = None
    for line_no, line in enumerate(physical_lines(text), start=1):
        line = line.strip("\x01\x03\x1a")  # SOH/ETX framing, DOS end-of-file
        match = _FIELD.match(line)
        if match:
            current = _Field(line_no, match.group("tag"), match.group("value"))
            fields.append(current)
        elif line.strip() in ("-", "-}") or line.startswith(("{", "}")):
            current = None
        elif current is not None and line.strip():
            current = _Field(current.line_no, current.tag, f"{current.value}\n{line}")
            fields[-1] = current
    return fields


def _statements(fields: list[_Field]) -> list[_Statement]:
    """Fields grouped into statements, each opened by a ``:20:``."""
    groups: list[list[_Field]] = [[]]
    for field in fields:
        if field.tag == "20" and groups[-1]:
            groups.append([])
        groups[-1].append(field)
    return [_Statement(group) for group in groups if group]


def _statement_lines(statement: _Statement) -> list[tuple[_Field, _Field | None]]:
    """Each ``:61:`` with the ``:86:`` right after it, if any."""
    pairs: list[tuple[_Field, _Field | None]] = []
    previous: _Field | None = None
    for field in statement.fields:
        if field.tag == "61":
            pairs.append((field, None))
        elif field.tag == "86" and previous is not None and previous.tag == "61":
            pairs[-1] = (previous, field)
        previous = field
    return pairs


def _line(field: _Field, details: _Field | None, currency: str) -> StatementLine:
    data = _library_parse(field, details)
    amount = data["amount"].amount  # signed by the library: D and RC are debits
    value_date = _plain_date(data["date"])
    entry_date = data.get("entry_date")
    text = _Details.of(data) if details is not None else _Details("", None, None, None)
    bank_reference = reference(data.get("bank_reference"))
    return StatementLine(
        line_no=field.line_no,
        amount_minor=to_minor_units(amount, currency),
        currency=currency,
        booking_date=_plain_date(entry_date) if entry_date else value_date,
        value_date=value_date,
        bank_transaction_id=None if bank_reference == _NO_REFERENCE else bank_reference,
        counterparty_name=text.name,
        counterparty_iban=text.iban,
        remittance=text.remittance,
        structured_reference=None,
        end_to_end_id=text.end_to_end_id,
    )


def _library_parse(field: _Field, details: _Field | None) -> dict[str, Any]:
    layout = _STATEMENT_LINE.re.match(field.value)
    if layout is None:
        raise ValueError(
            f":61: {field.value!r} does not follow the layout YYMMDD[MMDD] C/D/RC/RD amount "
            "type reference[//bank reference]"
        )
    if not _AMOUNT.fullmatch(layout.group("amount")):
        raise ValueError(f":61: amount {layout.group('amount')!r} is not a number like 1250,00")
    source = f":61:{field.value}\n"
    if details is not None:
        source += f":86:{details.value}\n"
    try:
        parsed = mt940.models.Transactions(options=_OPTIONS).parse(source)
    except Exception as exc:  # whatever the library trips over costs this line, not the file
        raise ValueError(f":61: {field.value!r} cannot be read: {exc}") from None
    if len(parsed) != 1:
        raise ValueError(f":61: {field.value!r} cannot be read")
    return dict(parsed[0].data)


@dataclass(frozen=True)
class _Details:
    """What the ``:86:`` says: remittance, and for the German layout name, IBAN, EREF."""

    remittance: str
    name: str | None
    iban: str | None
    end_to_end_id: str | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> _Details:
        plain = data.get("transaction_details")
        if plain is not None:  # the library only keeps the raw text when it has no ?-fields
            return cls(clean_text(plain), None, None, None)
        purpose = [data.get("purpose"), data.get("additional_purpose")]
        remittance = clean_text(" ".join(p for p in purpose if p))
        return cls(
            remittance=remittance or clean_text(data.get("posting_text")),
            name=optional_text(data.get("applicant_name")),
            iban=normalise_iban(data.get("applicant_iban")),
            end_to_end_id=reference(data.get("end_to_end_reference")),
        )


def _plain_date(value: date) -> date:
    return date(value.year, value.month, value.day)


def _account_iban(account: str) -> str | None:
    """The IBAN in a ``:25:``, also written ``/IBAN`` or ``IBANEUR``; None for a
    ``BLZ/account number`` or other local form."""
    value = account.strip().lstrip("/")
    candidates = [value]
    if len(value) > 3 and value[-3:].isalpha():
        candidates.append(value[:-3])
    for candidate in candidates:
        iban = normalise_iban(candidate)
        if iban:
            return iban
    return None
