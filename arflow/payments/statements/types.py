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
class AccountStatement:
    """One statement of one account inside a file (an MT940 message from ``:20:``, a camt.053
    ``Stmt``): a file may hold several, of several accounts."""

    account_iban: str | None
    account_id: str | None
    statement_id: str | None
    lines: list[StatementLine]
    errors: list[LineError]


@dataclass(frozen=True)
class ParsedStatement:
    """A statement file turned into lines, plus the rows that could not be read.

    ``lines`` and ``errors`` are those of the whole file; ``statements`` the same lines per
    statement and account. ``account_iban``, ``account_id`` and ``statement_id`` are the
    file's when it holds one account, else None (the statements carry theirs).
    """

    format: str
    account_iban: str | None
    statement_id: str | None
    lines: list[StatementLine]
    errors: list[LineError]
    account_id: str | None = None
    """The account as the file names it (camt ``Acct/Id/IBAN`` or ``Othr/Id``, MT940 ``:25:``),
    also when it is not an IBAN, such as a German ``BLZ/account number``."""
    statements: list[AccountStatement] = field(default_factory=list, compare=False, repr=False)
    """The same lines per statement (not compared: a view of ``lines`` and ``errors``)."""

    def per_statement(self) -> list[AccountStatement]:
        """The statements of the file; one for a format without (CSV)."""
        if self.statements:
            return self.statements
        return [
            AccountStatement(
                self.account_iban, self.account_id, self.statement_id, self.lines, self.errors
            )
        ]

    @property
    def accounts(self) -> list[str]:
        """The accounts the file holds statements of, in file order."""
        seen = [s.account_iban or s.account_id or "" for s in self.per_statement()]
        return list(dict.fromkeys(seen))


def file_statement(
    fmt: str, statements: list[AccountStatement], *, statement_id: str | None = None
) -> ParsedStatement:
    """The file's ``ParsedStatement`` of its ``statements`` (at least one)."""
    accounts = {(s.account_iban, s.account_id) for s in statements}
    iban, account_id = next(iter(accounts)) if len(accounts) == 1 else (None, None)
    return ParsedStatement(
        format=fmt,
        account_iban=iban,
        statement_id=statement_id if statement_id is not None else statements[0].statement_id,
        lines=[line for s in statements for line in s.lines],
        errors=[error for s in statements for error in s.errors],
        account_id=account_id,
        statements=statements,
    )
