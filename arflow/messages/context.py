"""What a reminder says: the template context of one step for one invoice, in the customer's
locale. Shared by the send activity and the preview endpoint, so a preview is exactly what
would be sent.

Late charges (``invoice_charges``) the invoice carries and that were not waived are listed
in ``charges`` with their total and ``total_due`` (the open balance plus those charges); with
none, ``charges`` is empty, ``total_due`` is the balance and the templates say nothing of
charges."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlmodel import Session

from arflow.charges.service import not_waived
from arflow.messages.render import (
    DEFAULT_LOCALE,
    format_percent,
    formatting_locale,
    local_date,
    money,
)
from models import Customer, Invoice, InvoiceCharge
from models.reference import payment_reference
from workflows.types import InstallmentState


def charges_not_waived(session: Session, invoice_id: int) -> list[InvoiceCharge]:
    """The invoice's charges a message states: not waived and not paid, oldest first."""
    return [row for row in not_waived(session, invoice_id) if row.settled_minor < row.amount_minor]


def _rate(basis: dict[str, Any], locale: str) -> str:
    """The interest rate per annum of a charge's basis ("12.5" -> "12.5%"); "" when it had
    several rates or none."""
    text = str(basis.get("rate_pct") or "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return ""
    return format_percent(value.scaleb(2), locale) if value.is_finite() else ""


def charge_lines(
    charges: Iterable[InvoiceCharge], currency: str, timezone: str, locale: str
) -> list[dict[str, Any]]:
    """Charges as the templates list them: kind, amount, stage, and for interest its rate and
    the days it covers (``period_from`` is the last day before them, so the first shown is
    the day after)."""
    lines = []
    for charge in charges:
        if charge.currency != currency:
            raise ValueError(f"charge in {charge.currency} on an invoice in {currency}")
        first = charge.period_from + timedelta(days=1) if charge.period_from else None
        lines.append(
            {
                "kind": charge.kind,
                "amount": money(charge.amount_minor, currency, locale),
                "amount_minor": charge.amount_minor,
                "stage": charge.stage,
                "rate": _rate(charge.basis, locale) if charge.kind == "interest" else "",
                "period_from": local_date(first, timezone, locale) if first else "",
                "period_to": (
                    local_date(charge.period_to, timezone, locale) if charge.period_to else ""
                ),
            }
        )
    return lines


def message_context(
    invoice: Invoice,
    customer: Customer,
    *,
    step_key: str,
    step_at: datetime,
    balance_minor: int,
    pay_url: Callable[[int, str, str], str],
    escalate_at: datetime | None = None,
    note: str | None = None,
    installment: InstallmentState | None = None,
    charges: Iterable[InvoiceCharge] = (),
    default_locale: str = DEFAULT_LOCALE,
    next_stage: str = "agency",
) -> dict[str, Any]:
    """The variables of a reminder template. ``locale`` is the resolved one: the customer's,
    unless no templates speak its language (then ``default_locale``), so money and dates are
    formatted for the language the message is written in. ``charges``: the invoice's charges
    (``charges_not_waived``; waived ones are left out here too). ``next_stage``: the kind of
    escalation stage the deadline leads to (agency, legal or notice): what a final notice
    announces."""
    assert invoice.id is not None
    loc, tz = formatting_locale(customer.locale, default_locale), customer.timezone
    kept = [c for c in charges if c.waived_at is None]
    charged_minor = sum(c.amount_minor for c in kept)
    context: dict[str, Any] = {
        "invoice": invoice,
        "customer": customer,
        "locale": loc,
        "amount": money(invoice.amount_minor, invoice.currency, loc),
        "balance": money(balance_minor, invoice.currency, loc),
        "due_date": local_date(invoice.due_date, tz, loc),
        "escalation_date": local_date(escalate_at, tz, loc) if escalate_at else "",
        "next_stage": next_stage,
        "step": step_key,
        "note": note,
        "pay_url": pay_url(invoice.id, invoice.number, invoice.external_id),
        "payment_reference": payment_reference(invoice.id),
        "discount": None,
        "others": [],  # other invoices the same message covers (consolidation)
        "charges": charge_lines(kept, invoice.currency, tz, loc),
        "charges_minor": charged_minor,
        "charges_total": money(charged_minor, invoice.currency, loc),
        "total_due_minor": balance_minor + charged_minor,
        "total_due": money(balance_minor + charged_minor, invoice.currency, loc),
    }
    # The discount is offered while it still holds when the step was due.
    if invoice.discount_minor and invoice.discount_until and invoice.discount_until > step_at:
        left = invoice.discount_minor - invoice.discount_taken_minor
        context["discount"] = {
            "percent": format_percent(invoice.discount_bp or 0, loc),
            "amount": money(invoice.discount_minor, invoice.currency, loc),
            "pay": money(balance_minor - left, invoice.currency, loc),
            "last_day": local_date(invoice.discount_until, tz, loc),
        }
    if installment is not None:
        context |= {
            "installment": installment,
            "installment_due": local_date(date.fromisoformat(installment.due_date), tz, loc),
            "installment_amount": money(installment.amount_minor, invoice.currency, loc),
            "installment_open": money(
                installment.amount_minor - installment.paid_minor, invoice.currency, loc
            ),
        }
    return context
