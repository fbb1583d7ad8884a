"""Bank statement files (camt.053, MT940, CSV exports) as normalised statement lines.

Pure parsing: no database, no network. ``parse_statement`` is the entry point; the format is
taken from the content, and a CSV export needs the ``CsvMapping`` saved for its bank.
"""

from __future__ import annotations

from arflow.payments.statements.mapping import CsvMapping
from arflow.payments.statements.parse import FORMATS, detect_format, parse_statement
from arflow.payments.statements.types import (
    AccountStatement,
    LineError,
    ParsedStatement,
    StatementError,
    StatementLine,
)
from arflow.payments.statements.values import currency_exponent, to_minor_units

__all__ = [
    "AccountStatement",
    "FORMATS",
    "CsvMapping",
    "LineError",
    "ParsedStatement",
    "StatementError",
    "StatementLine",
    "currency_exponent",
    "detect_format",
    "parse_statement",
    "to_minor_units",
]
