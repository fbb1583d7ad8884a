"""Bank statement files (camt.053, MT940, CSV exports) as normalised statement lines.

Pure parsing: no database, no network. ``parse_statement`` is the entry point; the format is
taken from the content, and a CSV export needs the ``CsvMapping`` saved for its bank.
"""

from __future__ import annotations

from arflow.statements.mapping import CsvMapping
from arflow.statements.parse import FORMATS, detect_format, parse_statement
from arflow.statements.types import LineError, ParsedStatement, StatementError, StatementLine
from arflow.statements.values import currency_exponent, to_minor_units

__all__ = [
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
