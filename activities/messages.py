"""What a reminder says: the template context of one step for one invoice, in the customer's
locale. Shared by the send activity and the preview endpoint, so a preview is exactly what
would be sent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from activities.render import DEFAULT_LOCALE, format_percent, formatting_locale, local_date, money
from models import Customer, Invoice
from models.reference import payment_reference
from workflows.types import InstallmentState


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
    default_locale: str = DEFAULT_LOCALE,
) -> dict[str, Any]:
    """The variables of a reminder template. ``locale`` is the resolved one: the customer's,
    unless no templates speak its language (then ``default_locale``), so money and dates are
    formatted for the language the message is written in."""
    assert invoice.id is not None
    loc, tz = formatting_locale(customer.locale, default_locale), customer.timezone
    context: dict[str, Any] = {
        "invoice": invoice,
        "customer": customer,
        "locale": loc,
        "amount": money(invoice.amount_minor, invoice.currency, loc),
        "balance": money(balance_minor, invoice.currency, loc),
        "due_date": local_date(invoice.due_date, tz, loc),
        "escalation_date": local_date(escalate_at, tz, loc) if escalate_at else "",
        "step": step_key,
        "note": note,
        "pay_url": pay_url(invoice.id, invoice.number, invoice.external_id),
        "payment_reference": payment_reference(invoice.id),
        "discount": None,
        "others": [],  # other invoices the same message covers (consolidation)
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
