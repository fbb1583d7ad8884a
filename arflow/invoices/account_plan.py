"""One payment plan across several invoices of one customer: how its instalments are shared.

A pure function (no I/O, no clock): given the invoices the plan covers (each with its due date,
open balance and its policy's ``max_installments``) and the instalments agreed with the
customer, it says which invoice each instalment pays, oldest invoice first:

- the invoices are ordered by due date, then id;
- each instalment pays the oldest invoice that still owes something; an instalment larger
  than what that invoice still owes is split, the rest going to the next invoice (on the same
  date), and so on;
- each invoice gets its own instalments, dates strictly increasing, summing to its balance.

Money is integer minor units, so nothing is rounded: the parts of an instalment always add up
to it. Bad input raises ``Invalid`` naming what is wrong (the API answers 422).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from arflow.errors import unprocessable


@dataclass(frozen=True)
class Owing:
    """One invoice the plan covers, as the allocation needs it."""

    invoice_id: int
    due_date: date
    balance_minor: int
    max_installments: int


@dataclass(frozen=True)
class Instalment:
    due_date: date
    amount_minor: int


@dataclass
class Share:
    """One invoice's part of the plan: its own instalments, in date order."""

    invoice_id: int
    installments: list[Instalment] = field(default_factory=list)

    @property
    def total_minor(self) -> int:
        return sum(i.amount_minor for i in self.installments)


def allocate(invoices: Sequence[Owing], installments: Sequence[Instalment]) -> list[Share]:
    """Share ``installments`` among ``invoices``, oldest invoice first (see the module).

    Returns one ``Share`` per invoice, in the order they are paid (due date, then id).

    Raises:
        Invalid: no invoice or no instalment; an invoice that owes nothing; an instalment of
            0 or less; dates not strictly increasing; instalments not summing to the total
            open balance (both figures in the message); an invoice that would get more
            instalments than its policy's ``max_installments`` (named in the message).
    """
    if not invoices:
        raise unprocessable("a plan needs at least one invoice")
    if not installments:
        raise unprocessable("a plan needs at least one instalment")
    ids = [i.invoice_id for i in invoices]
    if len(set(ids)) != len(ids):
        raise unprocessable("invoice_ids: each invoice may be named once")
    for inv in invoices:
        if inv.balance_minor <= 0:
            raise unprocessable(
                f"invoice {inv.invoice_id} owes nothing", {"invoice_id": inv.invoice_id}
            )
    if any(i.amount_minor <= 0 for i in installments):
        raise unprocessable("installments: every instalment amount must be greater than 0")
    dates = [i.due_date for i in installments]
    if any(b <= a for a, b in zip(dates, dates[1:], strict=False)):
        raise unprocessable("installments: due dates must be strictly increasing")
    total = sum(i.balance_minor for i in invoices)
    planned = sum(i.amount_minor for i in installments)
    if planned != total:
        raise unprocessable(
            f"installments sum to {planned}, the invoices' open balance is {total}",
            {"installments_minor": planned, "open_balance_minor": total},
        )

    ordered = sorted(invoices, key=lambda i: (i.due_date, i.invoice_id))
    shares = [Share(inv.invoice_id) for inv in ordered]
    owing = [inv.balance_minor for inv in ordered]
    k = 0  # the oldest invoice still owing
    for item in installments:
        left = item.amount_minor
        while left > 0:  # the sums match, so an invoice still owes while money is left
            part = min(left, owing[k])
            shares[k].installments.append(Instalment(item.due_date, part))
            owing[k] -= part
            left -= part
            if owing[k] == 0:
                k += 1
    for inv, share in zip(ordered, shares, strict=True):
        if len(share.installments) > inv.max_installments:
            raise unprocessable(
                f"invoice {inv.invoice_id} would get {len(share.installments)} instalments; "
                f"its policy allows at most {inv.max_installments}",
                {"invoice_id": inv.invoice_id, "max_installments": inv.max_installments},
            )
    return shares
