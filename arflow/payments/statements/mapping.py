"""A saved column mapping for one bank's CSV export.

A pydantic dataclass, so it validates on construction, loads from the JSON it is stored as
(``CsvMapping.from_dict``) and can be a FastAPI request body as it is.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from arflow.payments.statements.values import check_currency

_SAMPLE_DAY = date(2026, 12, 31)
_MESSAGES = {
    "unexpected_keyword_argument": "unknown field",
    "extra_forbidden": "unknown field",
    "missing": "required",
    "missing_argument": "required",
}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CsvMapping:
    """Which column holds what, and how numbers and dates are written.

    Column names are matched against the header row with surrounding spaces and case ignored;
    rows above the header (an export's account summary) are skipped.
    """

    name: str
    date: str
    amount: str
    currency: str | None = None
    default_currency: str | None = None
    remittance: str | None = None
    counterparty_name: str | None = None
    counterparty_iban: str | None = None
    transaction_id: str | None = None
    value_date: str | None = None
    date_format: str = "%Y-%m-%d"
    decimal_separator: str = "."
    thousands_separator: str = ""
    delimiter: str = ","
    encoding: str = "utf-8"
    end_to_end_id: str | None = None

    @field_validator("name", "date", "amount")
    @classmethod
    def _required_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator(
        "currency",
        "remittance",
        "counterparty_name",
        "counterparty_iban",
        "transaction_id",
        "value_date",
        "end_to_end_id",
    )
    @classmethod
    def _optional_column(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a column name or null, not empty")
        return value

    @field_validator("default_currency")
    @classmethod
    def _currency_code(cls, value: str | None) -> str | None:
        return None if value is None else check_currency(value)

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, value: str) -> str:
        try:
            round_trip = datetime.strptime(_SAMPLE_DAY.strftime(value), value).date()
        except ValueError:
            round_trip = None
        if round_trip != _SAMPLE_DAY:
            raise ValueError(
                f"{value!r} is not a strptime date format with day, month and year, e.g. %d.%m.%Y"
            )
        return value

    @field_validator("decimal_separator")
    @classmethod
    def _decimal_separator(cls, value: str) -> str:
        if len(value) != 1 or value.isdigit() or value in "+-" or value.isspace():
            raise ValueError(f"must be one character such as '.' or ',', got {value!r}")
        return value

    @field_validator("thousands_separator")
    @classmethod
    def _thousands_separator(cls, value: str) -> str:
        if len(value) > 1 or value.isdigit() or (value and value in "+-"):
            raise ValueError(f"must be empty or one character such as '.', got {value!r}")
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if len(value) != 1 or value in '"\r\n':
            raise ValueError(f"must be one character such as ';' or ',', got {value!r}")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}, e.g. utf-8 or cp1252") from None
        # Bytes-to-bytes codecs (zlib_codec, base64_codec, ...) are found too, but cannot
        # decode a file to text: the import failed later with a 500.
        if not info._is_text_encoding:
            raise ValueError(f"{value!r} is not a text encoding; use e.g. utf-8 or cp1252")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CsvMapping:
        if self.currency is None and self.default_currency is None:
            raise ValueError("give a currency column or a default_currency")
        if self.thousands_separator == self.decimal_separator:
            raise ValueError("thousands_separator and decimal_separator must differ")
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CsvMapping:
        """A mapping from its stored JSON form.

        Raises:
            ValueError: naming each wrong or unknown field and what is wrong with it.
        """
        try:
            return _ADAPTER.validate_python(data)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                message = _MESSAGES.get(error["type"], error["msg"].removeprefix("Value error, "))
                problems.append(f"{where}: {message}" if where else message)
            raise ValueError(f"invalid CSV mapping: {'; '.join(problems)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that ``from_dict`` reads back."""
        return _ADAPTER.dump_python(self)


_ADAPTER: TypeAdapter[CsvMapping] = TypeAdapter(CsvMapping)
