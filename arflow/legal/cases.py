"""Legal cases: the claim summary's file name, writing it safely, and finding an invoice's case."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from sqlmodel import Session, select

from models import LegalCase

log = logging.getLogger("arflow.legal")

OPENED_KEY = "legal:opened"  # one legal case per invoice, so it opens once
LEGAL_TASK = "legal_review"
GENERATED = "generated"
# Outbox statuses of a message that went out (or was put in the print batch).
WENT_OUT = ("sent", "delivered", "printed", "uncertain", "consolidated")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def claim_summary_name(invoice_number: str) -> str:
    """``claim-summary-2026-0042.pdf``: the document's name and file name (characters a file
    name cannot safely hold become ``-``)."""
    return f"claim-summary-{_UNSAFE.sub('-', invoice_number).strip('-.') or 'invoice'}.pdf"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)


def legal_case_of(session: Session, invoice_id: int) -> LegalCase | None:
    return session.exec(select(LegalCase).where(LegalCase.invoice_id == invoice_id)).first()
