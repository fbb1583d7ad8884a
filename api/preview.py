"""What one dunning step would send to an invoice's customer now, rendered without sending.

The context comes from ``activities.messages.message_context``, the same function the send
activity uses, so the preview is the message the workflow would send for that step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from jinja2 import TemplateError
from pydantic import BaseModel, Field
from sqlmodel import Session

from activities.messages import message_context
from activities.render import render_message
from api.errors import ApiError, unprocessable
from api.services import get_invoice
from arflow.config import Settings
from models import Customer, DunningPolicy
from workflows.schedule import build_schedule, escalation_at

PreviewChannel = Literal["email", "sms", "letter", "call"]


class MessagePreview(BaseModel):
    step: str
    channel: str
    template: str
    scheduled_for: datetime = Field(description="when the policy schedules the step")
    locale_used: str = Field(description="the template language used (after fallback)")
    subject: str
    text: str
    html: str
    sms: str
    recipient: str | None = Field(description="where this channel would send it; null: unknown")


def recipient(customer: Customer, channel: str) -> str | None:
    """The customer's address on ``channel``: email, phone (sms, call) or postal address."""
    if channel == "letter":
        return f"{customer.name}\n{customer.address}" if customer.address else None
    return customer.email if channel == "email" else customer.phone


def preview(
    session: Session,
    settings: Settings,
    invoice_id: int,
    step_key: str,
    channel: PreviewChannel | None = None,
) -> MessagePreview:
    """Render the policy step ``step_key`` for the invoice's current balance; 404 for an
    unknown invoice, 422 for a step the invoice's policy does not have."""
    invoice = get_invoice(session, invoice_id)
    customer = session.get(Customer, invoice.customer_id)
    policy = session.get(DunningPolicy, invoice.policy_id)
    if customer is None or policy is None:  # foreign keys make this unreachable
        raise ApiError(409, "conflict", f"invoice {invoice_id} lacks its customer or policy")
    spec = policy.spec()
    schedule = build_schedule(spec, invoice.due_at, customer.timezone)
    step = next((s for s in schedule if s.key == step_key), None)
    if step is None:
        keys = [s.key for s in schedule]
        raise unprocessable(
            f"policy {policy.name!r} has no step {step_key!r}; its steps: {', '.join(keys)}",
            {"steps": keys},
        )
    chosen = channel or step.channel
    context = message_context(
        invoice,
        customer,
        step_key=step.key,
        step_at=step.at,
        balance_minor=invoice.balance_minor,
        pay_url=settings.pay_url,
        escalate_at=escalation_at(spec, invoice.due_at, customer.timezone),
        default_locale=settings.default_locale,
    )
    try:
        rendered = render_message(
            step.template, context["locale"], context, default_locale=settings.default_locale
        )
    except TemplateError as exc:  # a template a stored policy names that no longer renders
        raise unprocessable(f"step {step_key!r} cannot be rendered: {exc}") from exc
    return MessagePreview(
        step=step.key,
        channel=chosen,
        template=step.template,
        scheduled_for=step.at,
        locale_used=rendered.locale_used,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        sms=rendered.sms,
        recipient=recipient(customer, chosen),
    )
