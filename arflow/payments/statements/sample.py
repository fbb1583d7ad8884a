"""Writing small camt.053 statements: for the demo data and for tests, which pay invoices
whose ids and numbers exist only at run time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from xml.sax.saxutils import escape

ACCOUNT = "DE02120300000000202051"


@dataclass
class Entry:
    amount_minor: int  # signed: money in is positive
    text: str = ""
    ref: str | None = None  # ISO 11649 structured reference
    name: str | None = None
    iban: str | None = None
    tx_id: str | None = None
    currency: str = "EUR"
    booked: date = date(2026, 11, 20)


def camt053(entries: list[Entry], statement_id: str = "STMT-1", account: str = ACCOUNT) -> bytes:
    return camt053_accounts([(account, statement_id, entries)])


def camt053_accounts(statements: list[tuple[str, str, list[Entry]]]) -> bytes:
    """One file with a Stmt per ``(account IBAN, statement id, entries)``."""
    body = "".join(
        f"""
    <Stmt>
      <Id>{statement_id}</Id>
      <CreDtTm>2026-11-21T06:00:00</CreDtTm>
      <Acct><Id><IBAN>{account}</IBAN></Id><Ccy>EUR</Ccy></Acct>
      {"".join(_entry(e) for e in entries)}
    </Stmt>"""
        for account, statement_id, entries in statements
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>{statements[0][1]}</MsgId><CreDtTm>2026-11-21T06:00:00</CreDtTm></GrpHdr>{body}
  </BkToCstmrStmt>
</Document>
""".encode()


def _entry(e: Entry) -> str:
    amount = Decimal(abs(e.amount_minor)).scaleb(-2)
    direction = "CRDT" if e.amount_minor > 0 else "DBIT"
    party = ""
    if e.name or e.iban:
        role, account = ("Dbtr", "DbtrAcct") if e.amount_minor > 0 else ("Cdtr", "CdtrAcct")
        party = "<RltdPties>"
        if e.name:
            party += f"<{role}><Nm>{escape(e.name)}</Nm></{role}>"
        if e.iban:
            party += f"<{account}><Id><IBAN>{e.iban}</IBAN></Id></{account}>"
        party += "</RltdPties>"
    remittance = ""
    if e.text:
        remittance += f"<Ustrd>{escape(e.text)}</Ustrd>"
    if e.ref:
        remittance += (
            "<Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry></Tp>"
            f"<Ref>{e.ref}</Ref></CdtrRefInf></Strd>"
        )
    refs = f"<Refs><AcctSvcrRef>{e.tx_id}</AcctSvcrRef></Refs>" if e.tx_id else ""
    return f"""
      <Ntry>
        <Amt Ccy="{e.currency}">{amount}</Amt>
        <CdtDbtInd>{direction}</CdtDbtInd>
        <Sts>BOOK</Sts>
        <BookgDt><Dt>{e.booked.isoformat()}</Dt></BookgDt>
        <ValDt><Dt>{e.booked.isoformat()}</Dt></ValDt>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>
        <NtryDtls><TxDtls>
          {refs}
          <AmtDtls><TxAmt><Amt Ccy="{e.currency}">{amount}</Amt></TxAmt></AmtDtls>
          {party}
          <RmtInf>{remittance}</RmtInf>
        </TxDtls></NtryDtls>
      </Ntry>"""
