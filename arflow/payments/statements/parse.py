"""Which format a statement file is in, from its content, and parsing it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from arflow.payments.statements.camt import parse_camt053, refuse_unsafe_xml, xml_format
from arflow.payments.statements.csv_parser import parse_csv
from arflow.payments.statements.mapping import CsvMapping
from arflow.payments.statements.mt940_parser import looks_like_mt940, parse_mt940
from arflow.payments.statements.types import ParsedStatement, StatementError
from arflow.payments.statements.values import decode_text

FORMATS = ("camt.053", "mt940", "csv")
_PROBE = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x19\x1b-\x1f\x7f]")
_DELIMITED = re.compile(r"[;,\t|]")
_MAGIC = {
    b"%PDF-": "a PDF document; export the statement as camt.053, MT940 or CSV instead",
    b"PK\x03\x04": "a ZIP archive; unpack it and import the statement files inside",
    b"\x1f\x8b": "a gzip archive; unpack it and import the statement file inside",
}


def detect_format(content: bytes, *, filename: str = "statement") -> str:
    """``"camt.053"``, ``"mt940"`` or ``"csv"``, judged from the content alone.

    Raises:
        StatementError: empty, binary, an archive or PDF, XML other than camt.053, or text
            that is neither MT940 nor delimited.
    """
    head = content.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise StatementError(f"{filename}: the file is empty")
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise StatementError(f"{filename}: is {what}")
    if head.startswith(b"<"):
        refuse_unsafe_xml(content, filename)
        return xml_format(_root_tag(content, filename), filename)
    text = decode_text(content[:_PROBE])
    if len(_CONTROL.findall(text)) > len(text) // 100:
        raise StatementError(f"{filename}: is binary data, not a bank statement")
    if looks_like_mt940(text):
        return "mt940"
    if _DELIMITED.search(text):
        return "csv"
    raise StatementError(
        f"{filename}: is not a bank statement (camt.053 XML, MT940 or a delimited CSV export)"
    )


def parse_statement(
    content: bytes, *, filename: str = "statement", mapping: CsvMapping | None = None
) -> ParsedStatement:
    """A statement file as normalised lines, with the rows that could not be read.

    The format comes from the content; ``mapping`` is needed for CSV and ignored otherwise.

    Raises:
        StatementError: the file as a whole cannot be read (see ``detect_format``), or is CSV
            and no mapping was given.
    """
    kind = detect_format(content, filename=filename)
    if kind == "camt.053":
        return parse_camt053(content, filename)
    if kind == "mt940":
        return parse_mt940(content, filename)
    if mapping is None:
        raise StatementError(
            f"{filename}: is a CSV export; choose the column mapping for this bank to import it"
        )
    return parse_csv(content, filename, mapping)


def _root_tag(content: bytes, filename: str) -> str:
    """The root element's tag, read without parsing the whole document."""
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start",))
    try:
        for offset in range(0, len(content), _PROBE):
            parser.feed(content[offset : offset + _PROBE])
            for event in parser.read_events():
                element = event[-1]
                if isinstance(element, ET.Element):
                    return element.tag
        parser.close()
    except ET.ParseError as exc:
        raise StatementError(f"{filename}: is not well-formed XML ({exc})") from None
    except (LookupError, ValueError) as exc:  # an encoding expat cannot read
        raise StatementError(f"{filename}: XML cannot be decoded ({exc})") from None
    raise StatementError(f"{filename}: XML without a root element")
