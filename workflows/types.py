"""Plain data passed into, out of and between the invoice workflow and its activities.

Only IDs, amounts, dates and keys: never names, emails or phone numbers (workflow
inputs are visible to anyone who can read workflow histories).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

OPEN = "open"
ESCALATED = "escalated"
PAID = "paid"
CANCELLED = "cancelled"
CLOSED_STATUSES = frozenset({PAID, CANCELLED})


@dataclass
class StepSpec:
    """One dunning step; ``offset``: ISO 8601 duration from the due instant (negative = before)."""

    key: str
    offset: str
    channel: str = "email"
    template: str = "reminder"


@dataclass
class PolicySpec:
    policy_id: int
    name: str
    steps: list[StepSpec]
    escalate_after: str
    send_at: str | None = "09:00"


@dataclass
class ScheduledStep:
    key: str
    channel: str
    template: str
    at: datetime


@dataclass
class NextAction:
    """What the workflow will do next if nothing changes: a reminder step or the escalation."""

    kind: str  # "reminder" or "escalation"
    at: datetime
    step_key: str | None = None
    channel: str | None = None


@dataclass
class InvoiceWorkflowInput:
    """Start input, and the carried state on continue-as-new."""

    invoice_id: int
    currency: str
    amount_minor: int
    balance_minor: int
    due_at: datetime
    timezone: str
    policy: PolicySpec
    status: str = OPEN
    sent_steps: list[str] = field(default_factory=list)
    skipped_steps: list[str] = field(default_factory=list)
    applied_payment_ids: list[int] = field(default_factory=list)
    pending_payments: list[PaymentSignal] = field(default_factory=list)


@dataclass
class PaymentSignal:
    """A payment already stored by the API (its row id), to be applied to the balance."""

    payment_id: int
    amount_minor: int
    currency: str


@dataclass
class CancelRequest:
    reason: str
    actor: str


@dataclass
class InvoiceState:
    """What the ``state`` query and every update return."""

    invoice_id: int
    status: str
    currency: str
    amount_minor: int
    balance_minor: int
    sent_steps: list[str]
    skipped_steps: list[str]
    next_action: NextAction | None


# Activity inputs -----------------------------------------------------------


@dataclass
class SendReminderInput:
    invoice_id: int
    step: ScheduledStep
    balance_minor: int
    skipped: list[str]
    next_action: NextAction | None
    escalate_at: datetime | None = None


@dataclass
class RecordPaymentInput:
    invoice_id: int
    payment_id: int
    amount_minor: int
    balance_after: int
    status_after: str
    next_action: NextAction | None


@dataclass
class EscalateInput:
    invoice_id: int
    balance_minor: int
    currency: str
    skipped: list[str]


@dataclass
class RecordClosedInput:
    invoice_id: int
    status: str
    reason: str
    actor: str
