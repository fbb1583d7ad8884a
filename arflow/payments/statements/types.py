"""What every statement parser returns: normalised lines, row errors, the statement around them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


class StatementError(ValueError):
    """The whole file cannot be read: empty, not a statement, unknown format, no CSV mapping.

    The message starts with the file name and says what is wrong.
    """


@dataclass(frozen=True)
class StatementLine:
    """One booked transaction as the bank reported it.

    ``amount_minor`` is signed (money in is positive) in minor units of ``currency``.
    ``line_no`` is the physical line for CSV (header included) and the ``:61:`` line for MT940;
    for camt.053 it is the ordinal of the Ntry/TxDtls in the file (a batched Ntry counts once
    per TxDtls).
    """

    line_no: int
    amount_minor: int
    currency: str
    booking_date: date
    value_date: date | None
    bank_transaction_id: str | None
    counterparty_name: str | None
    counterparty_iban: str | None
    remittance: str
    structured_reference: str | None
    end_to_end_id: str | None
    document_numbers: tuple[str, ...] = field(default=())
    """Invoice or credit note numbers the payer listed in structured remittance
    (camt ``Strd/RfrdDocInf/Nb``); empty for MT940 and CSV."""


@dataclass(frozen=True)
class LineError:
    """A row that could not be read; the other rows of the file are still parsed."""

    line_no: int
    reason: str


@dataclass(frozen=True)
class ParsedStatement:
    """A statement file turned into lines, plus the rows that could not be read."""

    format: str
    account_iban: str | None
    statement_id: str | None
    lines: list[StatementLine]
    errors: list[LineError]
    account_id: str | None = None
    """The account as the file names it (camt ``Acct/Id/IBAN`` or ``Othr/Id``, MT940 ``:25:``),
    also when it is not an IBAN, such as a German ``BLZ/account number``."""
