"""Bank statement parsers: every field of every sample file, row errors, whole-file errors."""

from __future__ import annotations

import json
import random
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from arflow.payments.statements import (
    CsvMapping,
    LineError,
    ParsedStatement,
    StatementError,
    StatementLine,
    currency_exponent,
    detect_format,
    parse_statement,
    to_minor_units,
)
from arflow.payments.statements.values import parse_decimal

DATA = Path(__file__).parent / "data" / "statements"
OUR_IBAN = "DE89370400440532013000"
ACME_IBAN = "GB82WEST12345698765432"
MUELLER_IBAN = "DE44500105175407324931"
NORDWIND_IBAN = "CH6904830123456789012"
LUMEN_IBAN = "FR1420041010050500013M02606"
HOFFMANN_IBAN = "DE77100100100123456789"
UTILITY_IBAN = "DE34200505501234567890"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture(scope="module")
def mapping() -> CsvMapping:
    return CsvMapping.from_dict(json.loads((DATA / "bank_export.mapping.json").read_text()))


def line(
    line_no: int,
    amount_minor: int,
    booking_date: date,
    value_date: date | None,
    bank_transaction_id: str | None,
    counterparty_name: str | None = None,
    counterparty_iban: str | None = None,
    remittance: str = "",
    structured_reference: str | None = None,
    end_to_end_id: str | None = None,
    document_numbers: tuple[str, ...] = (),
    currency: str = "EUR",
) -> StatementLine:
    return StatementLine(
        line_no=line_no,
        amount_minor=amount_minor,
        currency=currency,
        booking_date=booking_date,
        value_date=value_date,
        bank_transaction_id=bank_transaction_id,
        counterparty_name=counterparty_name,
        counterparty_iban=counterparty_iban,
        remittance=remittance,
        structured_reference=structured_reference,
        end_to_end_id=end_to_end_id,
        document_numbers=document_numbers,
    )


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("camt053_structured.xml", "camt.053"),
        ("camt053_unstructured.xml", "camt.053"),
        ("mt940_sample.sta", "mt940"),
        ("bank_export.csv", "csv"),
        ("bad_rows.csv", "csv"),
    ],
)
def test_detect_format_from_content(name: str, expected: str) -> None:
    assert detect_format(read(name)) == expected


def test_detection_ignores_the_file_name(mapping: CsvMapping) -> None:
    parsed = parse_statement(read("mt940_sample.sta"), filename="export.csv", mapping=mapping)
    assert parsed.format == "mt940"
    parsed = parse_statement(read("camt053_structured.xml"), filename="x.sta", mapping=mapping)
    assert parsed.format == "camt.053"


def test_detects_mt940_in_utf16_and_with_a_bom() -> None:
    text = read("mt940_sample.sta").decode("ascii")
    assert detect_format(text.encode("utf-16")) == "mt940"
    assert detect_format(b"\xef\xbb\xbf" + text.encode()) == "mt940"
    assert (
        parse_statement(text.encode("utf-16")).lines
        == parse_statement(read("mt940_sample.sta")).lines
    )


# --- camt.053 -------------------------------------------------------------------------------


def test_camt053_structured_every_field() -> None:
    parsed = parse_statement(read("camt053_structured.xml"), filename="camt053_structured.xml")
    assert parsed == ParsedStatement(
        format="camt.053",
        account_iban=OUR_IBAN,
        statement_id="STMT-2026-03-14-0042",
        account_id=OUR_IBAN,
        errors=[],
        lines=[
            line(
                1,
                125000,
                date(2026, 3, 13),
                date(2026, 3, 13),
                "2026031300001234",  # Ntry/AcctSvcrRef: one TxDtls without its own
                "Acme Industrial Supplies Ltd",
                ACME_IBAN,
                structured_reference="RF73AR42",
                end_to_end_id="E2E-ACME-4711",
            ),
            line(
                2,
                48050,
                date(2026, 3, 14),  # from BookgDt/DtTm
                date(2026, 3, 14),
                "2026031400000815-01",  # TxDtls/Refs/AcctSvcrRef wins over the entry's
                "Bäckerei Müller GmbH",
                MUELLER_IBAN,
                remittance="Rechnung 2026-0043 Skonto 2% abgezogen",
                structured_reference="RF46AR43",
                end_to_end_id=None,  # NOTPROVIDED
                document_numbers=("INV-2026-0043",),
            ),
            line(
                3,
                299000,
                date(2026, 3, 14),
                date(2026, 3, 16),
                "TXID-NW-7781",
                "Nordwind Logistik AG",
                NORDWIND_IBAN,
                structured_reference="RF24AR51",
                end_to_end_id="NW-PAY-2026-031",
            ),
            line(
                4,
                100000,
                date(2026, 3, 14),
                date(2026, 3, 16),
                "20260314-0003/2",  # batch without per-transaction id: NtryRef and position
                "Studio Lumen SARL",
                LUMEN_IBAN,
                structured_reference="RF94AR52",
            ),
            line(
                5,
                -3570,
                date(2026, 3, 14),
                date(2026, 3, 14),
                "2026031400000999",
                "Druckerei Hansen OHG",  # the creditor of a debit, from Cdtr/Pty/Nm
                UTILITY_IBAN,
                structured_reference="RF18539007547034",
                end_to_end_id="PAY-SUPPLIER-2026-0311",
            ),
        ],
    )


def test_camt053_unstructured_every_field() -> None:
    parsed = parse_statement(read("camt053_unstructured.xml"))
    assert parsed == ParsedStatement(
        format="camt.053",
        account_iban=OUR_IBAN,
        statement_id="053D2026033105121234-1",
        account_id=OUR_IBAN,
        errors=[],
        lines=[
            line(
                1,
                150000,  # the only TxDtls has no amount: the Ntry amount
                date(2026, 3, 16),
                date(2026, 3, 16),
                "0316A0000001",
                "Acme Industrial Supplies Ltd",
                ACME_IBAN,
                remittance="Invoice INV-2026-0042 and inv 2026/0043",
                end_to_end_id="ACME-2026-0316",
            ),
            line(
                2,
                120000,
                date(2026, 3, 17),
                date(2026, 3, 17),
                "SCT-0317-000451",
                "Bäckerei Müller GmbH",
                MUELLER_IBAN,
                remittance="INV-2026-0044",
            ),
            line(
                3,
                93525,  # AmtDtls/TxAmt, not the CHF InstdAmt
                date(2026, 3, 17),
                date(2026, 3, 17),
                "0317B0000002-02",
                "Nordwind Logistik AG",
                NORDWIND_IBAN,
                remittance="Rechnung 2026-0045 Kd-Nr 10017",
                end_to_end_id="PO-88123",
            ),
            line(
                4,
                60000,
                date(2026, 3, 17),
                date(2026, 3, 17),
                "0317B0000002/3",
                "Studio Lumen SARL",
                LUMEN_IBAN,
                remittance="inv. 2026/0046 less 2% discount",
                end_to_end_id="E2E-LUMEN-77",
            ),
            line(
                5,
                -25000,
                date(2026, 3, 18),
                date(2026, 3, 18),
                "0318D0000003",
                "Hoffmann & Söhne KG",  # the creditor, not our own name in Dbtr
                HOFFMANN_IBAN,
                remittance="Refund credit note CN-2026-0007",
                end_to_end_id="REFUND-CN-2026-0007",
            ),
            line(
                6,
                -48050,  # CRDT with RvslInd=true: money out
                date(2026, 3, 19),
                date(2026, 3, 19),
                "0319R0000005",
                "Hoffmann & Söhne KG",
                HOFFMANN_IBAN,
                remittance="Storno Gutschrift INV-2026-0047",
                end_to_end_id="E2E-HS-2026-0099",
            ),
            line(
                7,
                -1290,
                date(2026, 3, 31),
                date(2026, 3, 31),
                "0331F0000004",
                remittance="Kontofuehrungsentgelt 03/2026",  # AddtlNtryInf, no TxDtls
            ),
        ],
    )


def camt(entries: str, version: str = "08", account: str = OUR_IBAN) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version}">
 <BkToCstmrStmt><GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-03-15T06:00:00</CreDtTm></GrpHdr>
  <Stmt><Id>S1</Id><Acct><Id><IBAN>{account}</IBAN></Id></Acct>{entries}</Stmt>
 </BkToCstmrStmt>
</Document>""".encode()


def entry(
    amount: str = '<Amt Ccy="EUR">10.00</Amt>',
    indicator: str = "<CdtDbtInd>CRDT</CdtDbtInd>",
    booking: str = "<BookgDt><Dt>2026-03-13</Dt></BookgDt>",
    extra: str = "",
    details: str = "",
) -> str:
    return (
        f"<Ntry>{amount}{indicator}<Sts><Cd>BOOK</Cd></Sts>{booking}{extra}"
        f"<AcctSvcrRef>R1</AcctSvcrRef>{details}</Ntry>"
    )


@pytest.mark.parametrize(
    ("ntry", "reason"),
    [
        (
            entry(amount='<Amt Ccy="EUR">12,50</Amt>'),
            "Ntry 1: Amt '12,50' is not a decimal amount such as 1250.00",
        ),
        (
            entry(amount='<Amt Ccy="EUR">12.345</Amt>'),
            "Ntry 1: amount 12.345 has 3 decimals but EUR allows 2",
        ),
        (
            entry(amount='<Amt Ccy="JPY">1500.5</Amt>'),
            "Ntry 1: amount 1500.5 has 1 decimals but JPY allows 0",
        ),
        (
            entry(amount='<Amt Ccy="EURO">1.00</Amt>'),
            "Ntry 1: currency 'EURO' is not an ISO 4217 code",
        ),
        (entry(amount="<Amt>1.00</Amt>"), "Ntry 1: Amt has no Ccy"),
        (entry(indicator=""), "Ntry 1: CdtDbtInd None is not CRDT or DBIT"),
        (
            entry(indicator="<CdtDbtInd>CREDIT</CdtDbtInd>"),
            "Ntry 1: CdtDbtInd 'CREDIT' is not CRDT or DBIT",
        ),
        (
            entry(booking="<BookgDt><Dt>2026-02-30</Dt></BookgDt>"),
            "Ntry 1: BookgDt/Dt '2026-02-30' is not a date (YYYY-MM-DD)",
        ),
        (
            entry(booking="<BookgDt><DtTm>yesterday</DtTm></BookgDt>"),
            "Ntry 1: BookgDt/DtTm 'yesterday' is not an ISO date and time",
        ),
        (entry(booking=""), "Ntry 1: BookgDt is missing"),
        (
            entry().replace("<Cd>BOOK</Cd>", "<Cd>PDNG</Cd>"),
            "Ntry 1: status PDNG: only booked (BOOK) entries are imported",
        ),
    ],
)
def test_camt053_bad_entry_is_a_line_error(ntry: str, reason: str) -> None:
    good = entry(amount='<Amt Ccy="EUR">7.00</Amt>')
    parsed = parse_statement(camt(ntry + good))
    assert parsed.errors == [LineError(1, reason)]
    assert [(x.line_no, x.amount_minor) for x in parsed.lines] == [(2, 700)]


def test_camt053_batch_keeps_ordinals_when_one_transaction_is_bad() -> None:
    tx_ok = '<TxDtls><Refs><TxId>T1</TxId></Refs><Amt Ccy="EUR">4.00</Amt></TxDtls>'
    tx_no_amount = "<TxDtls><Refs><TxId>T2</TxId></Refs></TxDtls>"
    tx_debit = '<TxDtls><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>DBIT</CdtDbtInd></TxDtls>'
    batch = entry(details=f"<NtryDtls>{tx_ok}{tx_no_amount}{tx_debit}</NtryDtls>")
    parsed = parse_statement(camt(batch + entry()))
    assert parsed.errors == [
        LineError(
            2, "Ntry 1, TxDtls 2 of 3: no amount: a batched TxDtls needs Amt or AmtDtls/TxAmt/Amt"
        )
    ]
    assert [(x.line_no, x.amount_minor, x.bank_transaction_id) for x in parsed.lines] == [
        (1, 400, "T1"),
        (3, -100, "R1/3"),  # a TxDtls may carry its own CdtDbtInd
        (4, 1000, "R1"),
    ]


def test_camt053_minor_units_follow_the_currency() -> None:
    entries = (
        entry(amount='<Amt Ccy="JPY">150000</Amt>')
        + entry(amount='<Amt Ccy="KWD">12.345</Amt>', indicator="<CdtDbtInd>DBIT</CdtDbtInd>")
        + entry(amount='<Amt Ccy="EUR">0.10</Amt>')
        + entry(amount='<Amt Ccy="JPY">1500.00</Amt>')  # zeros past the exponent are exact
    )
    parsed = parse_statement(camt(entries))
    assert parsed.errors == []
    assert [(x.amount_minor, x.currency) for x in parsed.lines] == [
        (150000, "JPY"),
        (-12345, "KWD"),
        (10, "EUR"),
        (1500, "JPY"),
    ]


def test_camt053_reversed_debit_is_money_in_and_names_the_creditor() -> None:
    tx = (
        "<TxDtls><RltdPties><Dbtr><Nm>Arflow Demo GmbH</Nm></Dbtr>"
        "<Cdtr><Nm>Druckerei Hansen OHG</Nm></Cdtr>"
        f"<CdtrAcct><Id><IBAN>{UTILITY_IBAN[:4]} {UTILITY_IBAN[4:]}</IBAN></Id></CdtrAcct>"
        "</RltdPties></TxDtls>"
    )
    reversal = entry(
        indicator="<CdtDbtInd>DBIT</CdtDbtInd><RvslInd>true</RvslInd>",
        details=f"<NtryDtls>{tx}</NtryDtls>",
    )
    (parsed,) = parse_statement(camt(reversal, version="02")).lines
    assert (parsed.amount_minor, parsed.counterparty_name, parsed.counterparty_iban) == (
        1000,
        "Druckerei Hansen OHG",
        UTILITY_IBAN,
    )


def test_camt053_counterparty_iban_must_be_valid() -> None:
    tx = (
        "<TxDtls><RltdPties><DbtrAcct><Id><IBAN>DE00123</IBAN></Id></DbtrAcct></RltdPties></TxDtls>"
    )
    (parsed,) = parse_statement(camt(entry(details=f"<NtryDtls>{tx}</NtryDtls>"))).lines
    assert parsed.counterparty_iban is None


def test_camt053_account_without_iban() -> None:
    content = camt(entry()).replace(
        f"<IBAN>{OUR_IBAN}</IBAN>".encode(), b"<Othr><Id>0532013000</Id></Othr>"
    )
    parsed = parse_statement(content)
    assert (parsed.account_iban, parsed.account_id) == (None, "0532013000")


# --- MT940 ----------------------------------------------------------------------------------


def test_mt940_every_field() -> None:
    parsed = parse_statement(read("mt940_sample.sta"), filename="mt940_sample.sta")
    assert parsed == ParsedStatement(
        format="mt940",
        account_iban=OUR_IBAN,
        statement_id="00042/001",
        account_id=OUR_IBAN,
        errors=[],
        lines=[
            line(
                6,
                125000,
                date(2026, 3, 13),
                date(2026, 3, 13),
                "260313A0001",
                "Acme Industrial Supplies Ltd",  # ?32 + ?33, cut mid-word by the bank
                ACME_IBAN,  # ?31
                remittance="Rechnung INV-2026-0042 vom 02.03.2026",  # SVWZ+ over ?21/?22
                end_to_end_id="E2E-ACME-4711",  # EREF+
            ),
            line(
                11,
                48050,
                date(2026, 3, 14),
                date(2026, 3, 14),
                "260314A0002",
                "Baeckerei Mueller GmbH",
                MUELLER_IBAN,
                remittance="RF46AR43 Baeckerei Mueller Kd 10017",
            ),
            line(
                13,
                -8990,
                date(2026, 3, 16),
                date(2026, 3, 16),
                "260316B0003",
                "Stadtwerke Koeln GmbH",
                UTILITY_IBAN,
                remittance="Strom Maerz 2026 Vertragskonto 4711",
                end_to_end_id="STW-2026-03-554",
            ),
            line(
                17,
                250000,
                date(2026, 3, 17),
                date(2026, 3, 17),
                "260317C0004",
                remittance=(  # a plain :86: over two lines
                    "PAYMENT FROM NORDWIND LOGISTIK AG INVOICE INV-2026-0051 AND INV-2026-0052"
                ),
            ),
            line(
                20,
                -48050,  # RC: reversal of a credit
                date(2026, 3, 18),
                date(2026, 3, 18),
                "260318R0005",
                "Baeckerei Mueller GmbH",
                MUELLER_IBAN,
                remittance="Storno Gutschrift vom 14.03.2026",
            ),
            line(22, 8990, date(2026, 3, 19), date(2026, 3, 19), None),  # RD, no :86:
            line(
                30,  # second statement of the same file
                9900,
                date(2026, 3, 23),  # entry date 0323
                date(2026, 3, 20),  # value date 260320
                "260323A0007",
                remittance="Zahlung Kd 10023 Rechnung INV-2026-0060",
            ),
        ],
    )


def mt940(*lines: str, opening: str = ":60F:C260312EUR1000,00", account: str = OUR_IBAN) -> bytes:
    head = [":20:STARTUMSE", f":25:{account}", ":28C:1/1", opening]
    return "\r\n".join([*head, *lines, "-"]).encode()


@pytest.mark.parametrize(
    ("statement_line", "reason"),
    [
        (
            ":61:2603130313X12,00NTRFNONREF",
            ":61: '2603130313X12,00NTRFNONREF' does not follow the layout YYMMDD[MMDD] "
            "C/D/RC/RD amount type reference[//bank reference]",
        ),
        (
            ":61:2603130313C12,50,00NTRFNONREF",
            ":61: amount '12,50,00' is not a number like 1250,00",
        ),
        (
            ":61:2613130313C12,00NTRFNONREF",
            ":61: '2613130313C12,00NTRFNONREF' cannot be read: month must be in 1..12",
        ),
        (":61:2603130313C12,001NTRFNONREF", "amount 12.001 has 3 decimals but EUR allows 2"),
    ],
)
def test_mt940_bad_statement_line_is_a_line_error(statement_line: str, reason: str) -> None:
    content = mt940(":61:2603120312C5,00NTRFNONREF", ":86:ok", statement_line, ":86:Rechnung 1")
    parsed = parse_statement(content)
    assert parsed.errors == [LineError(7, reason)]
    assert [(x.line_no, x.amount_minor, x.remittance) for x in parsed.lines] == [(5, 500, "ok")]


def test_mt940_currency_exponent_and_year_end() -> None:
    content = mt940(
        ":61:2512310102C1500,NTRFNONREF//JP1",
        ":61:2512310102D1500,5NTRFNONREF",
        opening=":60F:C251230JPY100000,",
    )
    parsed = parse_statement(content)
    assert [(x.amount_minor, x.currency, x.booking_date, x.value_date) for x in parsed.lines] == [
        (1500, "JPY", date(2026, 1, 2), date(2025, 12, 31))
    ]
    assert parsed.errors == [LineError(6, "amount -1500.5 has 1 decimals but JPY allows 0")]


def test_mt940_without_balance_has_no_currency() -> None:
    parsed = parse_statement(mt940(":61:2603130313C5,00NTRFNONREF", opening=":28:1"))
    assert parsed.lines == []
    assert parsed.errors == [
        LineError(5, "no currency: the statement has no :60F: or :62F: balance")
    ]


@pytest.mark.parametrize(
    ("account", "iban"),
    [
        (f"{OUR_IBAN}EUR", OUR_IBAN),
        (f"/{OUR_IBAN}", OUR_IBAN),
        ("37040044/0532013000", None),  # BLZ/account number: not turned into an IBAN
    ],
)
def test_mt940_account_identification(account: str, iban: str | None) -> None:
    parsed = parse_statement(mt940(":61:2603130313C5,00NTRFNONREF", account=account))
    assert (parsed.account_iban, parsed.account_id) == (iban, account)


def test_mt940_structured_details_without_purpose_fall_back_to_posting_text() -> None:
    content = mt940(":61:2603310331D4,50NCHGNONREF", ":86:805?00ENTGELTABSCHLUSS?109300?31123456")
    (parsed,) = parse_statement(content).lines
    assert (parsed.remittance, parsed.counterparty_iban, parsed.amount_minor) == (
        "ENTGELTABSCHLUSS",
        None,  # ?31 holds an account number, not an IBAN
        -450,
    )


# --- CSV ------------------------------------------------------------------------------------


def test_csv_bank_export_every_field(mapping: CsvMapping) -> None:
    parsed = parse_statement(read("bank_export.csv"), filename="bank_export.csv", mapping=mapping)
    assert parsed == ParsedStatement(
        format="csv",
        account_iban=None,
        statement_id=None,
        account_id=None,
        errors=[],
        lines=[
            line(
                6,  # physical line: three summary rows, a blank line, the header
                125000,
                date(2026, 3, 13),
                date(2026, 3, 13),
                "2026031300001",
                "Acme Industrial Supplies Ltd",
                ACME_IBAN,  # written in groups of four
                remittance="Rechnung INV-2026-0042 vom 02.03.2026",
                end_to_end_id="E2E-ACME-4711",
            ),
            line(
                7,
                48050,
                date(2026, 3, 14),
                date(2026, 3, 14),
                "2026031400002",
                "Bäckerei Müller GmbH",
                MUELLER_IBAN,
                remittance="RF46 AR43; Skonto 2%",  # a quoted delimiter
                end_to_end_id=None,  # NOTPROVIDED
            ),
            line(
                8,
                -8990,
                date(2026, 3, 16),
                date(2026, 3, 16),
                "2026031600003",
                "Stadtwerke Köln GmbH",
                UTILITY_IBAN,
                remittance="Strom März 2026",
                end_to_end_id="STW-2026-03-554",
            ),
            line(
                9,  # a quoted cell over two lines: the row starts on line 9
                1234567,
                date(2026, 3, 17),
                date(2026, 3, 17),
                "2026031700004",
                "Nordwind Logistik AG",
                NORDWIND_IBAN,  # lower case in the file
                remittance="Sammelzahlung INV-2026-0051 und INV-2026-0052",
            ),
            line(
                11,
                60000,
                date(2026, 3, 18),
                None,  # empty value date
                "2026031800005",
                "Studio Lumen SARL",
                None,  # "FR76 0000" is no IBAN
                remittance="Facture 2026/0046",
            ),
        ],
    )


def test_csv_bad_rows(mapping: CsvMapping) -> None:
    parsed = parse_statement(read("bad_rows.csv"), filename="bad_rows.csv", mapping=mapping)
    assert [(x.line_no, x.amount_minor, x.bank_transaction_id) for x in parsed.lines] == [
        (2, 125000, "B-1"),
        (10, 200000, "B-8"),
    ]
    assert parsed.errors == [
        LineError(
            3,
            "amount 'zwölf Euro' (column 'Betrag (EUR)') cannot be read with decimal separator "
            "',' and thousands separator '.': not a number",
        ),
        LineError(
            4,
            "booking date '31.02.2026' (column 'Buchungstag') is not a date in the format %d.%m.%Y",
        ),
        LineError(5, "amount column 'Betrag (EUR)' is missing from this row"),
        LineError(6, "amount 10.005 has 3 decimals but EUR allows 2 (column 'Betrag (EUR)')"),
        LineError(
            7,
            "amount '1.23,00' (column 'Betrag (EUR)') cannot be read with decimal separator ',' "
            "and thousands separator '.': thousands separator '.' in the wrong place",
        ),
        LineError(
            8,
            "value date '2026-03-18' (column 'Wertstellung') is not a date in the format "
            "%d.%m.%Y; amount (column 'Betrag (EUR)') is empty",
        ),
        LineError(11, "row has 10 fields but the header has 9"),
    ]


CURRENCY_MAPPING = CsvMapping(
    name="multi-currency",
    date="date",
    amount="amount",
    currency="currency",
    default_currency="EUR",
    remittance="text",
)


def test_csv_currency_column_and_minor_units() -> None:
    content = (
        b"date,amount,currency,text\n"
        b"2026-03-13,150000,JPY,yen\n"
        b"2026-03-13,-12.345,kwd,dinar\n"
        b"2026-03-13,0.5,,empty cell uses the default\n"
        b"2026-03-13,1500.50,JPY,too many decimals\n"
        b"2026-03-13,1.00,XYZ,unknown currency\n"
    )
    parsed = parse_statement(content, mapping=CURRENCY_MAPPING)
    assert [(x.line_no, x.amount_minor, x.currency) for x in parsed.lines] == [
        (2, 150000, "JPY"),
        (3, -12345, "KWD"),
        (4, 50, "EUR"),
    ]
    assert parsed.errors == [
        LineError(5, "amount 1500.50 has 1 decimals but JPY allows 0 (column 'amount')"),
        LineError(6, "currency 'XYZ' is not an ISO 4217 code (column 'currency')"),
    ]


def test_csv_in_cp1252_needs_the_mapping_encoding(mapping: CsvMapping) -> None:
    content = read("bank_export.csv").decode("utf-8").encode("cp1252")
    with pytest.raises(StatementError) as raised:
        parse_statement(content, filename="export.csv", mapping=mapping)
    assert str(raised.value) == (
        "export.csv: is not utf-8 (byte 0xe4 on line 5); set the encoding of mapping "
        "'Musterbank Girokonto (CSV)', e.g. cp1252"
    )
    cp1252 = CsvMapping.from_dict({**mapping.to_dict(), "encoding": "cp1252"})
    parsed = parse_statement(content, mapping=cp1252)
    assert parsed.lines == parse_statement(read("bank_export.csv"), mapping=mapping).lines


@pytest.mark.parametrize(
    ("text", "decimal_separator", "thousands_separator", "expected"),
    [
        ("1.234.567,89", ",", ".", Decimal("1234567.89")),
        ("1,234.50", ".", ",", Decimal("1234.50")),
        ("1 234,50", ",", " ", Decimal("1234.50")),
        ("1\u00a0234,50", ",", " ", Decimal("1234.50")),
        ("1'234.50", ".", "'", Decimal("1234.50")),
        ("234,50", ",", ".", Decimal("234.50")),
        ("-89,90", ",", "", Decimal("-89.90")),
        ("89,90-", ",", "", Decimal("-89.90")),
        ("+5", ".", "", Decimal("5")),
        (" 12 ", ".", "", Decimal("12")),
    ],
)
def test_parse_decimal(
    text: str, decimal_separator: str, thousands_separator: str, expected: Decimal
) -> None:
    value = parse_decimal(
        text, decimal_separator=decimal_separator, thousands_separator=thousands_separator
    )
    assert value == expected
    assert str(value) == str(expected)


@pytest.mark.parametrize(
    ("text", "thousands_separator", "message"),
    [
        ("1.23,00", ".", "thousands separator '.' in the wrong place"),
        ("1234.567,00", ".", "thousands separator '.' in the wrong place"),
        ("1.234,56", "", "not a number"),  # thousands separator not configured
        ("12,", "", "digits missing after the decimal separator"),
        ("1e5", "", "not a number"),
        ("NaN", "", "not a number"),
        ("١٢", "", "not a number"),
        ("--5", "", "not a number"),
        ("", "", "not a number"),
    ],
)
def test_parse_decimal_rejects(text: str, thousands_separator: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_decimal(text, decimal_separator=",", thousands_separator=thousands_separator)
    assert str(raised.value) == message


# --- minor units ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("1250.00", "EUR", 125000),
        ("0.01", "eur", 1),
        ("-89.9", "EUR", -8990),
        ("1500", "JPY", 1500),
        ("1500.000", "JPY", 1500),
        ("12.345", "KWD", 12345),
        ("0.001", "BHD", 1),
        ("999999999999.99", "EUR", 99999999999999),
    ],
)
def test_to_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor_units(Decimal(amount), currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("12.345", "EUR", "amount 12.345 has 3 decimals but EUR allows 2"),
        ("1500.5", "JPY", "amount 1500.5 has 1 decimals but JPY allows 0"),
        ("1.2345", "KWD", "amount 1.2345 has 4 decimals but KWD allows 3"),
        ("1.00", "EURO", "currency 'EURO' is not an ISO 4217 code"),
        ("1.00", "ABC", "currency 'ABC' is not an ISO 4217 code"),
        ("1e30", "EUR", "amount 1E+30 is too large"),
        ("NaN", "EUR", "amount NaN is not a number"),
    ],
)
def test_to_minor_units_rejects(amount: str, currency: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        to_minor_units(Decimal(amount), currency)
    assert str(raised.value) == message


def test_currency_exponents() -> None:
    assert [currency_exponent(c) for c in ("EUR", "JPY", "KWD", "CHF", "CLF")] == [2, 0, 3, 2, 4]


# --- mappings -------------------------------------------------------------------------------


def test_mapping_round_trips_through_its_stored_form(mapping: CsvMapping) -> None:
    stored = json.loads(json.dumps(mapping.to_dict()))
    assert stored["delimiter"] == ";"
    assert stored["end_to_end_id"] == "Kundenreferenz"
    assert CsvMapping.from_dict(stored) == mapping


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"default_currency": None}, "give a currency column or a default_currency"),
        ({"default_currency": "EURO"}, "default_currency: currency 'EURO' is not an ISO 4217 code"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"date": None}, "date: Input should be a valid string"),
        ({"name": " "}, "name: must not be empty"),
        ({"remittance": ""}, "remittance: must be a column name or null, not empty"),
        (
            {"date_format": "%Y"},
            "date_format: '%Y' is not a strptime date format with day, month and year, "
            "e.g. %d.%m.%Y",
        ),
        ({"encoding": "klingon"}, "encoding: unknown encoding 'klingon', e.g. utf-8 or cp1252"),
        ({"delimiter": ";;"}, "delimiter: must be one character such as ';' or ',', got ';;'"),
        (
            {"decimal_separator": ""},
            "decimal_separator: must be one character such as '.' or ',', got ''",
        ),
        ({"thousands_separator": ","}, "thousands_separator and decimal_separator must differ"),
    ],
)
def test_mapping_from_dict_rejects(
    mapping: CsvMapping, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        CsvMapping.from_dict({**mapping.to_dict(), **changes})
    assert str(raised.value) == f"invalid CSV mapping: {message}"


def test_mapping_from_dict_requires_the_columns() -> None:
    with pytest.raises(ValueError) as raised:
        CsvMapping.from_dict({"name": "x", "currency": "Währung"})
    assert str(raised.value) == "invalid CSV mapping: date: required; amount: required"


# --- whole-file errors ----------------------------------------------------------------------


NAMESPACED = '<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:{}"/>'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "f: the file is empty"),
        (b" \r\n\t", "f: the file is empty"),
        (read("not_a_statement.bin"), "f: is binary data, not a bank statement"),
        (
            read("truncated.xml"),
            "f: is not well-formed XML (no element found: line 157, column 35); "
            "the file may be truncated",
        ),
        (
            b"%PDF-1.7\n...",
            "f: is a PDF document; export the statement as camt.053, MT940 or CSV instead",
        ),
        (
            b"PK\x03\x04\x14\x00",
            "f: is a ZIP archive; unpack it and import the statement files inside",
        ),
        (
            NAMESPACED.format("camt.054.001.08").encode(),
            "f: is an ISO 20022 camt.054 message, not a camt.053 statement",
        ),
        (
            NAMESPACED.format("pain.001.001.09").encode(),
            "f: is an ISO 20022 pain.001 message, not a camt.053 statement",
        ),
        (
            b'<Document xmlns="urn:example:statement"/>',
            "f: XML with root '{urn:example:statement}Document' is not a camt.053 statement "
            "(expected a Document in a urn:iso:std:iso:20022:tech:xsd:camt.053.001.NN namespace)",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><Document/>',
            "f: XML with a DOCTYPE, or not in UTF-8, is refused; a camt.053 file has neither",
        ),
        (
            b'<?xml version="1.0" encoding="UTF-99"?><Document/>',
            "f: XML cannot be decoded (unknown encoding: UTF-99)",
        ),
        (
            b"Dear customer\nthank you for your order\n",
            "f: is not a bank statement (camt.053 XML, MT940 or a delimited CSV export)",
        ),
        (
            read("bank_export.csv"),
            "f: is a CSV export; choose the column mapping for this bank to import it",
        ),
    ],
)
def test_unreadable_file_raises_statement_error(content: bytes, message: str) -> None:
    with pytest.raises(StatementError) as raised:
        parse_statement(content, filename="f")
    assert str(raised.value) == message


def test_csv_whose_header_does_not_fit_the_mapping(mapping: CsvMapping) -> None:
    with pytest.raises(StatementError) as raised:
        parse_statement(b"Datum,Betrag\n01.03.2026,5\n", filename="other.csv", mapping=mapping)
    assert str(raised.value) == (
        "other.csv: no header row with the columns 'Buchungstag' and 'Betrag (EUR)' of mapping "
        "'Musterbank Girokonto (CSV)' (first row: ['Datum,Betrag']; delimiter ';')"
    )
    partial = b"Buchungstag;Betrag (EUR);IBAN\n01.03.2026;5,00;\n"
    with pytest.raises(StatementError) as raised:
        parse_statement(partial, filename="other.csv", mapping=mapping)
    assert str(raised.value) == (
        "other.csv: column(s) 'Verwendungszweck', 'Auftraggeber / Empfänger', 'Buchungsreferenz', "
        "'Wertstellung', 'Kundenreferenz' of mapping 'Musterbank Girokonto (CSV)' not in the "
        "header ['Buchungstag', 'Betrag (EUR)', 'IBAN']"
    )


SAMPLES = [
    "camt053_structured.xml",
    "camt053_unstructured.xml",
    "mt940_sample.sta",
    "bank_export.csv",
    "bad_rows.csv",
]


@pytest.mark.parametrize("name", SAMPLES)
def test_damaged_files_never_crash(name: str, mapping: CsvMapping) -> None:
    """Truncated at every length, bytes flipped, inserted and dropped, re-encoded: each attempt
    either parses or raises StatementError."""
    original = read(name)
    rng = random.Random(name)
    damaged = [original] + [original[:cut] for cut in range(0, len(original), 5)]
    for _ in range(300):
        mutated = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(mutated))
            roll = rng.random()
            if roll < 0.4:
                mutated[at] = rng.randrange(256)
            elif roll < 0.7:
                mutated[at:at] = rng.choice(
                    [b"0", b",", b".", b";", b":", b"?2", b"<", b"\n", b'"']
                )
            else:
                del mutated[at : at + rng.randint(1, 20)]
        damaged.append(bytes(mutated))
    text = original.decode("utf-8")
    damaged += [text.encode(e, errors="replace") for e in ("utf-16", "utf-32", "cp1252", "cp850")]
    outcomes = {"parsed": 0, "refused": 0}
    for data in damaged:
        try:
            parse_statement(data, filename=name, mapping=mapping)
            outcomes["parsed"] += 1
        except StatementError:
            outcomes["refused"] += 1
    assert outcomes["parsed"] > 0
    assert outcomes["refused"] > 0


# --- files with statements of several accounts ----------------------------------------------


def test_camt_with_statements_of_two_accounts_keeps_each_account() -> None:
    content = camt(
        entry()
        + "</Stmt><Stmt><Id>S2</Id><Acct><Id><IBAN>"
        + ACME_IBAN
        + "</IBAN></Id></Acct>"
        + entry(amount='<Amt Ccy="EUR">7.00</Amt>')
        + entry(amount='<Amt Ccy="EUR">8.00</Amt>')
    )
    parsed = parse_statement(content, filename="f")
    assert (parsed.account_iban, parsed.statement_id) == (None, "S1")
    assert parsed.accounts == [OUR_IBAN, ACME_IBAN]
    assert [
        (s.account_iban, s.statement_id, [x.amount_minor for x in s.lines])
        for s in parsed.statements
    ] == [(OUR_IBAN, "S1", [1000]), (ACME_IBAN, "S2", [700, 800])]
    assert [x.line_no for x in parsed.lines] == [1, 2, 3]


def test_mt940_with_twenty_accounts_and_two_statements_of_one() -> None:
    ibans = [_iban(i) for i in range(20)]
    messages = [
        mt940(f":61:2603130313C{i + 1},00NTRFNONREF", account=a) for i, a in enumerate(ibans)
    ]
    messages.append(mt940(":61:2603140314C99,00NTRFNONREF", account=ibans[0]))
    parsed = parse_statement(b"\r\n".join(messages), filename="f")
    assert parsed.errors == []
    assert parsed.accounts == ibans
    assert len(parsed.statements) == 21
    assert [(s.account_iban, [x.amount_minor for x in s.lines]) for s in parsed.statements] == [
        *((a, [(i + 1) * 100]) for i, a in enumerate(ibans)),
        (ibans[0], [9900]),
    ]
    assert parsed.account_iban is None and len(parsed.lines) == 21


def test_mt940_statement_without_an_account_continues_the_one_before() -> None:
    second = b"\r\n".join(
        line
        for line in mt940(":61:2603140314C2,00NTRFNONREF").split(b"\r\n")
        if b":25:" not in line
    )
    parsed = parse_statement(mt940(":61:2603130313C1,00NTRFNONREF") + b"\r\n" + second)
    assert parsed.account_iban == OUR_IBAN
    assert [s.account_iban for s in parsed.statements] == [OUR_IBAN, OUR_IBAN]


def _iban(n: int) -> str:
    """A valid German IBAN for account number ``n`` (check digits computed)."""
    bban = f"37040044{n:010d}"
    digits = int(bban + "131400")  # D=13, E=14, then 00
    return f"DE{98 - digits % 97:02d}{bban}"
