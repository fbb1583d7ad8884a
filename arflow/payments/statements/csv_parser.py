"""A bank's CSV export to statement lines, through a saved ``CsvMapping``.

Rows above the header (the account summary many exports start with) are skipped: the header
is the first row naming the mapping's date and amount columns. Blank rows are skipped; any
other row that cannot be read becomes a ``LineError`` with everything wrong with it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

from arflow.payments.statements.mapping import CsvMapping
from arflow.payments.statements.types import (
    LineError,
    ParsedStatement,
    StatementError,
    StatementLine,
)
from arflow.payments.statements.values import (
    check_currency,
    clean_text,
    normalise_iban,
    optional_text,
    parse_decimal,
    reference,
    to_minor_units,
)

FORMAT = "csv"


def parse_csv(content: bytes, filename: str, mapping: CsvMapping) -> ParsedStatement:
    """Every data row of a CSV export as a statement line; bad rows become errors.

    Raises:
        StatementError: the file is not in the mapping's encoding, is not CSV, or has no
            header row with the mapping's columns.
    """
    rows = _rows(_decode(content, filename, mapping), filename, mapping)
    columns = _header(rows, filename, mapping)
    lines: list[StatementLine] = []
    errors: list[LineError] = []
    for line_no, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        reader = _Row(columns, row, mapping)
        line = reader.line(line_no)
        if line is None:
            errors.append(LineError(line_no, "; ".join(reader.problems)))
        else:
            lines.append(line)
    return ParsedStatement(
        format=FORMAT, account_iban=None, statement_id=None, lines=lines, errors=errors
    )


def _decode(content: bytes, filename: str, mapping: CsvMapping) -> str:
    encoding = mapping.encoding
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # Excel writes a byte order mark
    try:
        return content.decode(encoding)
    except UnicodeDecodeError as exc:
        line_no = content[: exc.start].count(b"\n") + 1
        raise StatementError(
            f"{filename}: is not {mapping.encoding} (byte 0x{content[exc.start]:02x} on line "
            f"{line_no}); set the encoding of mapping {mapping.name!r}, e.g. cp1252"
        ) from None
    except UnicodeError:  # a codec that decodes nothing at all, e.g. "undefined"
        raise StatementError(
            f"{filename}: cannot be read as {mapping.encoding}; set the encoding of mapping "
            f"{mapping.name!r}, e.g. utf-8 or cp1252"
        ) from None


def _rows(text: str, filename: str, mapping: CsvMapping) -> Iterator[tuple[int, list[str]]]:
    """Rows with the physical line each starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=mapping.delimiter)
    next_line = 1
    try:
        for row in reader:
            yield next_line, row
            next_line = reader.line_num + 1
    except csv.Error as exc:
        raise StatementError(
            f"{filename}: is not readable as CSV at line {next_line}: {exc}"
        ) from None


@dataclass(frozen=True)
class _Columns:
    """Positions of the mapped columns in the header."""

    header: list[str]
    index: dict[str, int]

    def of(self, column: str | None) -> int | None:
        return None if column is None else self.index[_key(column)]


def _key(column: str) -> str:
    return column.strip().lstrip("\ufeff").casefold()


def _header(rows: Iterator[tuple[int, list[str]]], filename: str, mapping: CsvMapping) -> _Columns:
    wanted = {_key(mapping.date), _key(mapping.amount)}
    first: list[str] | None = None
    for _, row in rows:
        keys = [_key(cell) for cell in row]
        if first is None and any(keys):
            first = row
        if wanted <= set(keys):
            index: dict[str, int] = {}
            for position, key in enumerate(keys):
                index.setdefault(key, position)
            missing = [c for c in _mapped_columns(mapping) if _key(c) not in index]
            if missing:
                raise StatementError(
                    f"{filename}: column(s) {', '.join(repr(c) for c in missing)} of mapping "
                    f"{mapping.name!r} not in the header {row!r}"
                )
            return _Columns(row, index)
    raise StatementError(
        f"{filename}: no header row with the columns {mapping.date!r} and {mapping.amount!r} "
        f"of mapping {mapping.name!r} (first row: {first!r}; delimiter {mapping.delimiter!r})"
    )


def _mapped_columns(mapping: CsvMapping) -> list[str]:
    columns = [
        mapping.currency,
        mapping.remittance,
        mapping.counterparty_name,
        mapping.counterparty_iban,
        mapping.transaction_id,
        mapping.value_date,
        mapping.end_to_end_id,
    ]
    return [c for c in columns if c is not None]


class _Row:
    """One data row read through the mapping, collecting what is wrong with it."""

    def __init__(self, columns: _Columns, row: list[str], mapping: CsvMapping) -> None:
        self.columns = columns
        self.row = row
        self.mapping = mapping
        self.problems: list[str] = []

    def line(self, line_no: int) -> StatementLine | None:
        mapping = self.mapping
        extra = [cell for cell in self.row[len(self.columns.header) :] if cell.strip()]
        if extra:
            self.problems.append(
                f"row has {len(self.row)} fields but the header has {len(self.columns.header)}"
            )
        booking_date = self._date(mapping.date, "booking date", required=True)
        value_date = self._date(mapping.value_date, "value date", required=False)
        currency = self._currency()
        amount_minor = self._amount(currency)
        if self.problems or booking_date is None or amount_minor is None or currency is None:
            return None
        return StatementLine(
            line_no=line_no,
            amount_minor=amount_minor,
            currency=currency,
            booking_date=booking_date,
            value_date=value_date,
            bank_transaction_id=optional_text(self._cell(mapping.transaction_id)),
            counterparty_name=optional_text(self._cell(mapping.counterparty_name)),
            counterparty_iban=normalise_iban(self._cell(mapping.counterparty_iban)),
            remittance=clean_text(self._cell(mapping.remittance)),
            structured_reference=None,
            end_to_end_id=reference(self._cell(mapping.end_to_end_id)),
        )

    def _cell(self, column: str | None) -> str | None:
        """The cell's text, None when the column is not mapped or the row is too short."""
        position = self.columns.of(column)
        if position is None or position >= len(self.row):
            return None
        return self.row[position].strip()

    def _required(self, column: str, what: str) -> str | None:
        value = self._cell(column)
        if value is None:
            self.problems.append(f"{what} column {column!r} is missing from this row")
        elif not value:
            self.problems.append(f"{what} (column {column!r}) is empty")
        return value or None

    def _date(self, column: str | None, what: str, *, required: bool) -> date | None:
        if column is None:
            return None
        value = self._required(column, what) if required else self._cell(column)
        if not value:
            return None
        try:
            return datetime.strptime(value, self.mapping.date_format).date()
        except ValueError:
            self.problems.append(
                f"{what} {value!r} (column {column!r}) is not a date in the format "
                f"{self.mapping.date_format}"
            )
            return None

    def _currency(self) -> str | None:
        mapping = self.mapping
        value = self._cell(mapping.currency) or mapping.default_currency
        if mapping.currency is not None and value is None:
            return self._required(mapping.currency, "currency")
        if value is None:
            return None
        try:
            return check_currency(value)
        except ValueError as exc:
            self.problems.append(f"{exc} (column {mapping.currency!r})")
            return None

    def _amount(self, currency: str | None) -> int | None:
        mapping = self.mapping
        value = self._required(mapping.amount, "amount")
        if value is None:
            return None
        try:
            amount = parse_decimal(
                value,
                decimal_separator=mapping.decimal_separator,
                thousands_separator=mapping.thousands_separator,
            )
        except ValueError as exc:
            separators = f"decimal separator {mapping.decimal_separator!r}"
            if mapping.thousands_separator:
                separators += f" and thousands separator {mapping.thousands_separator!r}"
            self.problems.append(
                f"amount {value!r} (column {mapping.amount!r}) cannot be read with "
                f"{separators}: {exc}"
            )
            return None
        if currency is None:
            return None
        try:
            return to_minor_units(amount, currency)
        except ValueError as exc:
            self.problems.append(f"{exc} (column {mapping.amount!r})")
            return None
