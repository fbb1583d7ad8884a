"""Our payment reference: an ISO 11649 creditor reference (``RF`` + check digits + body).

The body is ``AR`` and the invoice id, so a reference found in a bank transfer's remittance
text names exactly one invoice, and a typo fails the check digits instead of paying the wrong
invoice.
"""

from __future__ import annotations

import re

from stdnum import iso11649
from stdnum.iso7064 import mod_97_10

PREFIX = "AR"
_WORD = re.compile(r"[0-9A-Z]+")
_START = re.compile(r"RF\d\d")


def payment_reference(invoice_id: int) -> str:
    """``RF..AR<id>`` for an invoice, compact (print it in groups of four for people)."""
    body = f"{PREFIX}{invoice_id}"
    return f"RF{mod_97_10.calc_check_digits(body + 'RF')}{body}"


def invoice_id_of(reference: str) -> int | None:
    """The invoice id in one of our references, or None (not ours, or bad check digits)."""
    try:
        compact = iso11649.validate(reference)
    except Exception:  # stdnum raises its own ValidationError subclasses
        return None
    body = compact[4:]
    if not body.startswith(PREFIX) or not body[len(PREFIX) :].isdigit():
        return None
    return int(body[len(PREFIX) :])


def references_in(text: str) -> list[int]:
    """Invoice ids of every valid reference of ours in a free text.

    A reference may be printed in groups (``RF73 AR42``): from each word starting with ``RF``
    and two digits, the longest run of following words that is valid wins. Words are never
    cut, so ``RF73AR421`` (a typo) is not read as ``RF73AR42``.
    """
    words = _WORD.findall(text.upper())
    found: list[int] = []
    for i, word in enumerate(words):
        if not _START.match(word):
            continue
        for end in range(min(len(words), i + 6), i, -1):
            invoice_id = invoice_id_of("".join(words[i:end]))
            if invoice_id is not None:
                if invoice_id not in found:
                    found.append(invoice_id)
                break
    return found
