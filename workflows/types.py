"""Plain data passed into, out of and between the invoice workflow and its activities.

Only IDs, amounts, dates and keys: never names, emails or phone numbers (workflow
inputs are visible to anyone who can read workflow histories).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

OPEN = "open"
DISPUTED = "disputed"
ESCALATED = "escalated"
PAID = "paid"
CANCELLED = "cancelled"
CREDITED = "credited"
WRITTEN_OFF = "written_off"
CLOSED_STATUSES = frozenset({PAID, CANCELLED, CREDITED, WRITTEN_OFF})

# Holds: dunning waits while one is on (a dispute waits too, as a status of its own).
PAUSED = "paused"
PROMISE = "promise"
PLAN = "plan"


@dataclass
class StepSpec:
    """One dunning step; ``offset``: ISO 8601 duration from the due instant (negative = before)."""

    key: str
    offset: str
    channel: str = "email"
    template: str = "reminder"
    fallback: list[str] = field(default_factory=list)  # channels to try when this one can't


# Kinds of escalation-ladder stage.
NOTICE = "notice"  # a formal notice (final notice, pre-legal letter) on every channel it names
AGENCY = "agency"  # hand-off to a collection agency: the invoice is escalated
LEGAL = "legal"  # legal stage: documents prepared, a legal task opened; the invoice is escalated
STAGE_KINDS = (NOTICE, AGENCY, LEGAL)


@dataclass
class LadderStage:
    """One rung of the escalation ladder after the last reminder.

    ``wait``: ISO 8601 duration after the previous stage was carried out (the first stage comes
    at the policy's ``escalate_after`` from the due date). ``skip_segments``: customers in these
    segments pass this stage (recorded as skipped)."""

    key: str
    kind: str = AGENCY
    wait: str = "P0D"
    channels: list[str] = field(default_factory=list)
    template: str = "final_notice"
    agency: str | None = None  # the agency's name; None: the default agency
    skip_segments: list[str] = field(default_factory=list)


@dataclass
class ChargeSpec:
    """What a late invoice is charged (see workflows/charges.py): fixed and percentage fees per
    stage (a reminder step or ladder stage key), simple interest per day overdue at a rate per
    annum, and a fixed compensation once per late invoice. ``preset="eu_b2b"``: interest at
    ``ecb_reference_rate_pct`` + 8 points and EUR 40 compensation (Directive 2011/7/EU)."""

    name: str = "custom"
    preset: str | None = None
    currency: str | None = None  # fixed amounts apply to invoices in this currency; None: any
    stage_fees_minor: dict[str, int] = field(default_factory=dict)
    stage_fee_pct: dict[str, str] = field(default_factory=dict)
    interest_rate_pct: str | None = None
    ecb_reference_rate_pct: str | None = None
    compensation_minor: int = 0
    interest_every: str = "P1M"  # interest is posted this often (and at every step and payment)


@dataclass
class PolicySpec:
    policy_id: int
    name: str
    steps: list[StepSpec]
    escalate_after: str
    send_at: str | None = "09:00"
    dispute_sla: str = "P14D"
    plan_grace: str = "P5D"
    plan_reminder_offset: str = "-P3D"
    max_installments: int = 12
    promise_grace: str = "P3D"
    resume_grace: str = "P7D"
    # Contact rules. Defaults here are "no rule", so inputs recorded before the rules existed
    # replay unchanged; policies stored since then carry their own values.
    contact_window: str | None = None  # "08:00-21:00" local; outside it messages wait
    skip_weekends: bool = False
    skip_holidays: bool = False  # public holidays of the customer's country
    max_messages_per_day: int = 0  # per customer, all invoices and channels; 0 = no cap
    max_calls_per_week: int = 0  # per invoice, any 7 days; 0 = no cap
    call_cooldown: str = "P0D"  # no call for this long after a conversation
    consolidate: bool = False  # one message for a customer's same-day steps on one channel
    # Escalation ladder; empty: the classic single stage (agency hand-off at escalate_after).
    ladder: list[LadderStage] = field(default_factory=list)
    charges: ChargeSpec | None = None
    # Below this open balance no reminder and no escalation: the invoice waits for a
    # specialist's decision (write off, or a payment). 0: no minimum.
    min_balance_minor: int = 0
    # The stored version of the policy this spec is (policy_versions); None in inputs recorded
    # before policies had versions.
    version: int | None = None


@dataclass
class ScheduledStep:
    key: str
    channel: str
    template: str
    at: datetime
    fallback: list[str] = field(default_factory=list)


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
    hold: str | None = None
    dispute: DisputeState | None = None
    plan: PlanState | None = None
    promise: PromiseState | None = None
    pause: PauseState | None = None
    escalate_not_before: datetime | None = None
    catch_up_note: str | None = None
    plans_agreed: int = 0
    discount_minor: int = 0  # early-payment discount, if paid by discount_until
    discount_until: datetime | None = None
    discount_taken_minor: int = 0
    segment: str = ""
    country: str | None = None  # ISO 3166 alpha-2, for public holidays
    deferred: dict[str, datetime] = field(default_factory=dict)  # capped steps: new times
    external_delivery: bool = False  # providers configured: sends run as regular activities
    search_attributes: bool = False  # set ArflowStatus/Stage/Segment (when registered)
    # The escalation ladder's progress: stages done or skipped, when the last one was done,
    # channels a notice stage went out on ("stage:channel"), and a notice held back by a cap.
    ladder_done: list[str] = field(default_factory=list)
    ladder_last_at: datetime | None = None
    ladder_sent: list[str] = field(default_factory=list)
    ladder_deferred: datetime | None = None
    stage: str = ""  # the last ladder stage reached
    # Balance movements after the due date, for interest: (ISO date, signed minor units).
    movements: list[Movement] = field(default_factory=list)
    interest_posts: int = 0  # periodic interest postings done
    # A refund or chargeback larger than what was paid so far: its payment has not arrived
    # yet (webhooks overtake each other). The next payments cancel it out first.
    parked_reversal_minor: int = 0
    # The balance fell below the policy's minimum: the small_balance task was raised (once).
    small_balance_raised: bool = False


@dataclass
class Movement:
    day: str  # ISO date, customer's zone
    amount_minor: int  # negative: paid or credited; positive: reversed


@dataclass
class DisputeState:
    dispute_id: int
    opened_at: datetime
    sla_at: datetime
    amount_minor: int | None = None
    overdue_raised: bool = False


@dataclass
class InstallmentState:
    n: int
    due_date: str  # ISO date
    due_at: datetime
    amount_minor: int
    paid_minor: int = 0
    state: str = "pending"  # pending, paid, late, missed


@dataclass
class PlanState:
    plan_id: int
    installments: list[InstallmentState]
    done_steps: list[str] = field(default_factory=list)
    seq: int = 1  # the how-manieth plan of this invoice: names its reminder steps


@dataclass
class PromiseState:
    promise_id: int
    promised_date: str
    amount_minor: int
    check_at: datetime
    paid_since_minor: int = 0


@dataclass
class PauseState:
    reason: str
    until: datetime | None = None


@dataclass
class PaymentSignal:
    """A payment already stored by the API (its row id), to be applied to the balance."""

    payment_id: int
    amount_minor: int  # always positive; ``kind`` says which way the money went
    currency: str
    kind: str = "payment"  # payment, refund or chargeback
    paid_at: datetime | None = None  # when the customer paid (early-payment discount window)


@dataclass
class CancelRequest:
    reason: str
    actor: str
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class OpenDisputeRequest:
    reason: str
    actor: str
    amount_minor: int | None = None
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class ResolveDisputeRequest:
    dispute_id: int
    outcome: str  # upheld or rejected
    note: str
    actor: str
    credit_minor: int = 0
    approved_by: str | None = None  # the second actor of a credit that needed approval
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class InstallmentRequest:
    due_date: str  # ISO date
    amount_minor: int


@dataclass
class PlanRequest:
    installments: list[InstallmentRequest]
    note: str
    actor: str
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class PromiseRequest:
    promised_date: str
    amount_minor: int
    actor: str
    note: str = ""
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class PauseRequest:
    reason: str
    actor: str
    until: str | None = None  # ISO date; dunning resumes at 00:00 local that day
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class ActorRequest:
    """An action that needs only who did it and why (resume, write-off, cancel a plan)."""

    reason: str
    actor: str
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


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
    hold: str | None = None
    dispute_id: int | None = None
    plan_id: int | None = None
    promise_id: int | None = None


# Activity inputs -----------------------------------------------------------


@dataclass
class SendReminderInput:
    invoice_id: int
    step: ScheduledStep
    balance_minor: int
    skipped: list[str]
    next_action: NextAction | None
    escalate_at: datetime | None = None
    note: str | None = None  # e.g. "dispute_rejected": the catch-up reminder says why
    kind: str = "dunning"  # dunning, plan_before, plan_late
    installment: InstallmentState | None = None
    requested_by: str | None = None  # who asked for it now (send-now), instead of its time
    now: datetime | None = None  # the workflow's clock when it decided (caps count from it)
    max_messages_per_day: int = 0  # the policy's caps, checked by the activity (see PolicySpec)
    max_calls_per_week: int = 0
    call_cooldown: str = "P0D"
    consolidate: bool = False
    first_try: bool = True  # False: a fallback channel for a step another channel could not take


SUPERSEDED = "superseded"  # a late attempt found its step recorded as skipped: nothing sent


@dataclass
class SendOutcome:
    """What became of one step on one channel.

    ``sent`` (or ``uncertain``: the provider took the request and never answered; never sent
    again), ``task`` (a call on the worklist), ``printed`` (a letter in the print batch):
    the step is done. ``blocked`` (opted out, no address) and ``failed`` (the provider refused
    it for good): the next fallback channel is tried. ``capped``: a contact cap is reached;
    the step waits until ``retry_at``.
    """

    status: str
    detail: str | None = None
    retry_at: datetime | None = None


@dataclass
class RecordPaymentInput:
    invoice_id: int
    payment_id: int
    amount_minor: int
    balance_after: int
    status_after: str
    next_action: NextAction | None
    kind: str = "payment"
    overpaid_minor: int = 0  # what the invoice could not take: becomes customer credit
    discount_minor: int = 0  # early-payment discount granted with this payment
    reopened: bool = False  # a reversal made a paid invoice open again
    parked_minor: int = 0  # of a reversal: the part its (not yet arrived) payment will cancel
    offset_minor: int = 0  # of a payment: the part that cancelled an earlier parked reversal


@dataclass
class LoadPaymentInput:
    """A payment a ``payment_received`` signal names: only its id is taken from the signal."""

    invoice_id: int
    payment_id: int


@dataclass
class LoadedPayment:
    """The stored payment to apply (amount, currency, kind and date from its row), or why the
    signal was refused (unknown id, another invoice's payment, not in a state to apply): the
    ``payment_signal_rejected`` event is recorded then."""

    payment: PaymentSignal | None = None
    reason: str | None = None


@dataclass
class CustomerChangeRequest:
    """The customer's details changed (``customer_changed`` update). Nothing in it is taken on
    trust: the workflow loads the customer's time zone and country itself by invoice id
    (``load_customer_zone``), as it loads a signalled payment."""

    actor: str
    reason: str = "customer details changed"


@dataclass
class LoadCustomerZoneInput:
    invoice_id: int


@dataclass
class CustomerZone:
    """The stored customer's zone and country (for the contact window, "today", holidays)."""

    timezone: str
    country: str | None = None


@dataclass
class CheckCommandInput:
    """An update the workflow is about to apply: recorded by the domain first, or refused."""

    invoice_id: int
    name: str
    command_id: int | None
    fingerprint: str
    key: str  # this application's: a command is applied once (a retry of it has the same key)


@dataclass
class CommandCheck:
    reason: str | None = None  # None: the recorded request; else why it was refused


@dataclass
class EscalateInput:
    invoice_id: int
    balance_minor: int
    currency: str
    skipped: list[str]
    stage: str = "agency"  # the ladder stage that places it
    agency: str | None = None  # the agency's name; None: the default agency


@dataclass
class LegalInput:
    """Open the legal stage: documents, a legal task, the record."""

    invoice_id: int
    balance_minor: int
    currency: str
    stage: str
    skipped: list[str] = field(default_factory=list)


@dataclass
class AgencyEndRequest:
    """The agency no longer works the invoice: ``recalled`` by us, or ``returned``/``closed``
    by the agency. The invoice is back in-house and the ladder goes on."""

    outcome: str  # recalled, returned, closed
    reason: str
    actor: str
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class EndPlacementInput:
    invoice_id: int
    outcome: str
    reason: str
    actor: str
    notify: bool  # tell the agency (a recall); False when the agency told us


@dataclass
class PostChargesInput:
    """Post what the policy charges now: fees of ``stage`` (if any), the compensation once
    overdue, interest up to ``until`` (ISO date, inclusive). Idempotent per charge."""

    invoice_id: int
    currency: str
    charges: ChargeSpec
    due_date: str  # ISO date, customer's zone
    opening_minor: int  # the balance on the due date
    movements: list[Movement] = field(default_factory=list)
    until: str | None = None
    stage: str | None = None
    stage_balance_minor: int = 0


@dataclass
class SegmentMove:
    """A payment moved the customer to another segment (``record_payment``'s result): their
    open invoices' workflows switch to ``policy_name`` (SegmentSwitchWorkflow)."""

    customer_id: int
    segment: str
    previous: str
    policy_name: str
    invoice_ids: list[int] = field(default_factory=list)
    event_id: int = 0  # the customer's segment_changed event: names the switch workflow

    @property
    def workflow_id(self) -> str:
        return segment_switch_id(self.customer_id, self.event_id)


def segment_switch_id(customer_id: int, event_id: int) -> str:
    """The SegmentSwitchWorkflow of one move: one per customer and segment_changed event."""
    return f"segment-switch-{customer_id}-{event_id}"


@dataclass
class RecordClosedInput:
    invoice_id: int
    status: str
    reason: str
    actor: str


@dataclass
class EventSpec:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChangeSet:
    """One recorded change of collection state: events plus the workflow's view of the invoice,
    and the row of the dispute, plan, promise or task it concerns. Written in one transaction;
    ``dedupe_key`` (of the first event) makes a retry a no-op."""

    invoice_id: int
    actor: str
    dedupe_key: str
    events: list[EventSpec]
    status: str
    hold: str | None
    balance_minor: int
    next_action: NextAction | None
    dispute: DisputeRecord | None = None
    plan: PlanRecord | None = None
    promise: PromiseRecord | None = None
    task: TaskRecord | None = None
    customer_counter: str | None = None  # broken_promises or broken_plans, incremented
    due_at: datetime | None = None  # a corrected due date (``change_due_date``) ...
    due_date: str | None = None  # ... and its ISO date in the customer's zone


class Rows(TypedDict, total=False):
    """The rows a recorded change concerns besides the invoice (``ChangeSet``'s last fields)."""

    dispute: DisputeRecord | None
    plan: PlanRecord | None
    promise: PromiseRecord | None
    task: TaskRecord | None
    customer_counter: str | None
    due_at: datetime | None
    due_date: str | None


@dataclass
class DisputeRecord:
    dispute_id: int | None  # None: a new dispute
    status: str  # open, upheld, rejected, closed
    reason: str = ""
    amount_minor: int | None = None
    sla_at: datetime | None = None
    outcome_note: str | None = None
    credit_minor: int = 0


@dataclass
class PlanRecord:
    plan_id: int | None
    status: str  # active, completed, broken, cancelled
    installments: list[InstallmentState] = field(default_factory=list)
    note: str = ""


@dataclass
class PromiseRecord:
    promise_id: int | None
    status: str  # open, kept, broken
    promised_date: str = ""
    amount_minor: int = 0


@dataclass
class TaskRecord:
    kind: str
    due_at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChangeResult:
    dispute_id: int | None = None
    plan_id: int | None = None
    promise_id: int | None = None
    moved: SegmentMove | None = None  # the change moved the customer to another segment


@dataclass
class InboxFile:
    name: str
    outcome: str  # imported or failed
    import_id: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class InboxResult:
    files: list[InboxFile] = field(default_factory=list)
    redelivered: int = 0


@dataclass
class StatementRun:
    at: datetime | None = None  # the run's instant; None: the workflow's now
    # Monthly statements: the instant of this pass (a later pass of the same run sends the
    # statements deferred to their contact window); None: ``at``.
    now: datetime | None = None


@dataclass
class StatementPass:
    """One pass of the monthly statement run: how many statements went each way, and when
    the earliest one deferred to its customer's contact window may go (None: none was)."""

    counts: dict[str, int] = field(default_factory=dict)
    next_at: datetime | None = None


@dataclass
class CreditNoteRequest:
    """A credit note lowers the open balance by ``amount_minor`` (``credit_notes`` row)."""

    credit_note_id: int
    amount_minor: int
    reason: str
    actor: str
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class DueDateRequest:
    """The invoice's due date was corrected: the schedule is recomputed from it."""

    due_date: str  # ISO date; due at the end of that day in the customer's zone
    actor: str
    reason: str = ""
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)


@dataclass
class PolicyChangeRequest:
    """Switch an invoice to another policy from its next step on (a segment change)."""

    policy: PolicySpec
    actor: str
    reason: str = ""
    segment: str | None = None  # the customer's new segment (ladder stages skip by segment)
    command_id: int | None = None  # the domain's record of the request (workflows/trust.py)
