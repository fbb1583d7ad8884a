"""What one dunning step would send to an invoice's customer now, rendered without sending.

The context comes from ``arflow.messages.context.message_context``, the same function the send
activity uses, so the preview is the message the workflow would send for that step, with the
invoice's charges not waived. ``step`` is a reminder step key or the key of a notice stage of
the policy's escalation ladder (e.g. a pre-legal notice): a stage is previewed at its earliest
instant (each stage's wait after the one before, from the escalation instant), naming the next
stage's instant as the deadline, as the workflow's notice would.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from jinja2 import TemplateError
from pydantic import BaseModel, Field
from sqlmodel import Session

from arflow.config import Settings
from arflow.errors import Conflict, unprocessable
from arflow.invoices.service import get_invoice
from arflow.messages.context import charges_not_waived, message_context
from arflow.messages.render import render_message
from models import Customer, DunningPolicy
from workflows.schedule import build_schedule, contact_allowed, escalation_at, shift
from workflows.types import NOTICE, PolicySpec, ScheduledStep

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
        raise Conflict(f"invoice {invoice_id} lacks its customer or policy")
    spec = policy.spec()
    escalate_at = escalation_at(spec, invoice.due_at, customer.timezone)
    schedule = build_schedule(spec, invoice.due_at, customer.timezone)
    notices = ladder_notices(spec, escalate_at, customer.timezone)
    step = next((s for s in schedule if s.key == step_key), None)
    deadline: datetime | None = escalate_at
    if step is None and step_key in notices:
        step, deadline = notices[step_key]
    if step is None:
        keys = [s.key for s in schedule] + list(notices)
        raise unprocessable(
            f"policy {policy.name!r} has no step {step_key!r}; its steps: {', '.join(keys)}",
            {"steps": keys},
        )
    chosen = channel or step.channel
    assert invoice.id is not None
    context = message_context(
        invoice,
        customer,
        step_key=step.key,
        step_at=step.at,
        balance_minor=invoice.balance_minor,
        pay_url=settings.pay_url,
        escalate_at=deadline,
        charges=charges_not_waived(session, invoice.id),
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


def ladder_notices(
    spec: PolicySpec, escalate_at: datetime, timezone: str
) -> dict[str, tuple[ScheduledStep, datetime | None]]:
    """The notice stages of the policy's ladder by key: each as a step on its first channel at
    its earliest instant, with the instant of the stage after it (None for the last)."""
    found: dict[str, tuple[ScheduledStep, datetime | None]] = {}
    at = escalate_at
    pending: ScheduledStep | None = None
    for stage in spec.ladder:
        if stage.wait not in ("P0D", "PT0S"):
            at = shift(at, stage.wait, timezone, None)
        if pending is not None:
            found[pending.key] = (pending, at)
            pending = None
        if stage.kind == NOTICE and stage.channels:
            when = contact_allowed(at, spec, timezone)
            pending = ScheduledStep(stage.key, stage.channels[0], stage.template, when)
            at = when
    if pending is not None:
        found[pending.key] = (pending, None)
    return found
