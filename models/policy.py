"""Dunning policies: ordered reminder steps relative to the due instant, and the escalation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, model_validator
from sqlalchemy import JSON, BigInteger, Column, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import IsoDuration, NonNegativeIsoDuration, TimeOfDay, UTCDateTime, utcnow
from workflows.charges import parse_rate
from workflows.schedule import nth_period, parse_window, shift
from workflows.types import (
    AGENCY,
    LEGAL,
    NOTICE,
    ChargeSpec,
    LadderStage,
    PolicySpec,
    StepSpec,
)

Channel = Literal["email", "sms", "call", "letter"]
TEMPLATES = ("reminder_before_due", "reminder_overdue", "final_notice", "pre_legal", "reminder")
StageKind = Literal["notice", "agency", "legal"]
KEY_PATTERN = r"^[a-z0-9_\-]+$"


class ReminderStep(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    key: str = Field(min_length=1, max_length=50, schema_extra={"pattern": r"^[a-z0-9_\-]+$"})
    offset: IsoDuration
    channel: Channel = "email"
    template: str = Field(default="reminder", max_length=50)
    fallback: list[Channel] = Field(
        default_factory=list,
        max_length=3,
        description="channels to try, in order, when this one is opted out or fails",
    )

    @model_validator(mode="after")
    def _known_template(self) -> ReminderStep:
        if self.channel in self.fallback or len(set(self.fallback)) != len(self.fallback):
            raise ValueError("fallback channels must differ from the step's channel and each other")
        if self.template not in TEMPLATES:
            raise ValueError(
                f"unknown template {self.template!r}; available: {', '.join(TEMPLATES)}"
            )
        return self


class LadderStageIn(SQLModel):
    """A rung of the escalation ladder (see ``workflows.types.LadderStage``)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    key: str = Field(min_length=1, max_length=50, schema_extra={"pattern": KEY_PATTERN})
    kind: StageKind
    wait: NonNegativeIsoDuration = Field(
        default="P0D",
        description="after the previous stage (the first stage: at escalate_after)",
    )
    channels: list[Channel] = Field(
        default_factory=list,
        max_length=4,
        description="notice: every channel it goes out on, e.g. letter and email",
    )
    template: str = Field(default="final_notice", max_length=50)
    agency: str | None = Field(
        default=None, max_length=100, description="agency stage: the agency's name (null: default)"
    )
    skip_segments: list[str] = Field(
        default_factory=list, max_length=20, description="customers in these segments skip it"
    )

    @model_validator(mode="after")
    def _consistent(self) -> LadderStageIn:
        if self.kind == NOTICE:
            if not self.channels:
                raise ValueError(f"notice stage {self.key!r} needs at least one channel")
            if len(set(self.channels)) != len(self.channels):
                raise ValueError(f"notice stage {self.key!r}: channels must not repeat")
            if self.template not in TEMPLATES:
                raise ValueError(
                    f"unknown template {self.template!r}; available: {', '.join(TEMPLATES)}"
                )
        elif self.channels:
            raise ValueError(f"{self.kind} stage {self.key!r} sends nothing: no channels")
        if self.agency is not None and self.kind != AGENCY:
            raise ValueError(f"stage {self.key!r}: only an agency stage names an agency")
        return self


class ChargesIn(SQLModel):
    """Late fees and interest (see ``workflows.charges``); amounts in minor units, rates and
    percentages as decimal strings."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    preset: Literal["eu_b2b"] | None = Field(
        default=None,
        description="eu_b2b: interest = ECB reference rate + 8 points, EUR 40 compensation",
    )
    currency: str | None = Field(
        default=None,
        min_length=3,
        max_length=3,
        description="fixed amounts are charged on invoices in this currency (null: any)",
    )
    stage_fees_minor: dict[str, int] = Field(
        default_factory=dict, description="step or stage key -> fixed fee"
    )
    stage_fee_pct: dict[str, str] = Field(
        default_factory=dict, description="step or stage key -> percent of the open balance"
    )
    interest_rate_pct: str | None = Field(default=None, description="per annum, simple, ACT/365")
    ecb_reference_rate_pct: str | None = Field(default=None, description="eu_b2b: ECB rate")
    compensation_minor: int = Field(default=0, ge=0, description="once per late invoice")
    interest_every: NonNegativeIsoDuration = Field(
        default="P1M", description="how often interest is posted"
    )

    @model_validator(mode="after")
    def _valid(self) -> ChargesIn:
        for key, fee in self.stage_fees_minor.items():
            if fee < 0:
                raise ValueError(f"stage fee for {key!r} must be >= 0")
        rates = [*self.stage_fee_pct.values(), self.interest_rate_pct, self.ecb_reference_rate_pct]
        for text in rates:
            if text is not None:
                parse_rate(text)
        if self.preset == "eu_b2b":
            if self.ecb_reference_rate_pct is None:
                raise ValueError("the eu_b2b preset needs ecb_reference_rate_pct")
            if self.interest_rate_pct is not None:
                raise ValueError("the eu_b2b preset sets the interest rate; leave it out")
        ref = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
        if nth_period(ref, self.interest_every, 1, "UTC") <= ref:  # P0D, PT0S, P0M alike
            raise ValueError("interest_every must be longer than zero")
        return self

    def spec(self) -> ChargeSpec:
        return ChargeSpec(
            name=self.preset or "custom",
            preset=self.preset,
            currency="EUR" if self.preset == "eu_b2b" and self.currency is None else self.currency,
            stage_fees_minor=dict(self.stage_fees_minor),
            stage_fee_pct=dict(self.stage_fee_pct),
            interest_rate_pct=self.interest_rate_pct,
            ecb_reference_rate_pct=self.ecb_reference_rate_pct,
            compensation_minor=self.compensation_minor,
            interest_every=self.interest_every,
        )


class DunningPolicyBase(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    send_at: TimeOfDay | None = Field(
        default="09:00", description="local time of day to send; null sends at the exact instant"
    )
    escalate_after: NonNegativeIsoDuration = Field(
        description="ISO 8601 duration after the due instant"
    )
    dispute_sla: NonNegativeIsoDuration = Field(
        default="P14D", description="time to resolve a dispute before it is flagged overdue"
    )
    plan_grace: NonNegativeIsoDuration = Field(
        default="P5D", description="after an instalment's due date, when the plan is broken"
    )
    plan_reminder_offset: IsoDuration = Field(
        default="-P3D", description="reminder before each instalment, relative to its due date"
    )
    max_installments: int = Field(default=12, ge=1, le=120)
    promise_grace: NonNegativeIsoDuration = Field(
        default="P3D", description="after a promised date, when an unkept promise is broken"
    )
    resume_grace: NonNegativeIsoDuration = Field(
        default="P7D",
        description="after dunning resumes (pause, dispute, broken promise or plan), the "
        "earliest escalation",
    )
    contact_window: str | None = Field(
        default="08:00-21:00",
        description="local hours in which customers may be contacted (HH:MM-HH:MM); a message "
        "due outside waits for the next allowed minute; null: any time",
    )
    skip_weekends: bool = Field(default=False, description="no contact on Saturday and Sunday")
    skip_holidays: bool = Field(
        default=False, description="no contact on public holidays of the customer's country"
    )
    max_messages_per_day: int = Field(
        default=3, ge=0, le=50, description="per customer, all invoices and channels; 0: no cap"
    )
    max_calls_per_week: int = Field(
        default=7, ge=0, le=50, description="call attempts per invoice in any 7 days (Reg F)"
    )
    call_cooldown: NonNegativeIsoDuration = Field(
        default="P7D", description="no call for this long after a conversation (Reg F)"
    )
    consolidate: bool = Field(
        default=True,
        description="one message for a customer's steps due the same day on the same channel",
    )
    min_balance_minor: int = Field(
        default=0,
        ge=0,
        le=10**15,
        description="below this open balance (minor units of the invoice's currency) no "
        "reminder and no escalation: the invoice waits on the worklist for a write-off "
        "decision (a small_balance task); 0: no minimum",
    )
    dispute_credit_approval_minor: int | None = Field(
        default=0,
        ge=0,
        le=10**15,
        description="a dispute credit above this amount (minor units of the invoice's currency) "
        "needs an admin or a second specialist; 0: every credit does; null: no approval needed",
    )

    portal_plan_max_installments: int = Field(
        default=6,
        ge=1,
        le=120,
        description="customer portal: a proposed plan with at most this many instalments is "
        "agreed at once (more: the owner decides)",
    )
    portal_plan_first_within: NonNegativeIsoDuration = Field(
        default="P30D",
        description="customer portal: the first instalment no later than this after today",
    )
    portal_plan_max_span: NonNegativeIsoDuration = Field(
        default="P180D",
        description="customer portal: the last instalment within this of today",
    )
    portal_plan_min_installment_minor: int = Field(
        default=1000,
        ge=0,
        le=10**15,
        description="customer portal: the smallest instalment agreed at once (minor units)",
    )
    portal_promise_max: NonNegativeIsoDuration = Field(
        default="P30D",
        description="customer portal: a promised date at most this far ahead of today",
    )

    @model_validator(mode="after")
    def _window(self) -> DunningPolicyBase:
        if self.contact_window is not None:
            parse_window(self.contact_window)
        return self


class DunningPolicyCreate(DunningPolicyBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    steps: list[ReminderStep] = Field(min_length=1, max_length=50)
    ladder: list[LadderStageIn] = Field(
        default_factory=list,
        max_length=10,
        description="escalation after the last reminder, in order: notices, then at most one "
        "agency stage, then at most one legal stage; empty: agency hand-off at escalate_after",
    )
    charges: ChargesIn | None = Field(default=None, description="late fees and interest")

    @model_validator(mode="after")
    def _ordered_and_before_escalation(self) -> DunningPolicyCreate:
        keys = [s.key for s in self.steps]
        if len(set(keys)) != len(keys):
            raise ValueError("step keys must be unique")
        stage_keys = [s.key for s in self.ladder]
        if len(set(stage_keys)) != len(stage_keys):
            raise ValueError("ladder stage keys must be unique")
        if shared := sorted(set(stage_keys) & set(keys)):
            raise ValueError(f"ladder stage keys must differ from step keys: {shared}")
        kinds: list[str] = [s.kind for s in self.ladder]
        order = {NOTICE: 0, AGENCY: 1, LEGAL: 2}
        if kinds != sorted(kinds, key=order.__getitem__):
            raise ValueError("ladder order: notices first, then the agency, then legal")
        if kinds.count(AGENCY) > 1 or kinds.count(LEGAL) > 1:
            raise ValueError("a ladder has at most one agency stage and one legal stage")
        # Compare instants against a reference due date: offsets with months and days only
        # have an order once placed on a calendar.
        ref = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
        instants = [shift(ref, s.offset, "UTC", self.send_at) for s in self.steps]
        if any(b < a for a, b in zip(instants, instants[1:], strict=False)):
            raise ValueError("steps must be ordered by offset, earliest first")
        esc = shift(ref, self.escalate_after, "UTC", self.send_at)
        if instants and instants[-1] >= esc:
            raise ValueError("every step must come before escalate_after")
        return self


class DunningPolicy(DunningPolicyBase, table=True):
    __tablename__ = "dunning_policies"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    send_at: str | None = Field(default=None, max_length=5)  # the create schema defaults 09:00
    escalate_after: str = Field(max_length=40)
    dispute_sla: str = Field(default="P14D", max_length=40)
    plan_grace: str = Field(default="P5D", max_length=40)
    plan_reminder_offset: str = Field(default="-P3D", max_length=40)
    max_installments: int = Field(default=12)
    promise_grace: str = Field(default="P3D", max_length=40)
    resume_grace: str = Field(default="P7D", max_length=40)
    contact_window: str | None = Field(default=None, max_length=11)
    skip_weekends: bool = Field(default=False)
    skip_holidays: bool = Field(default=False)
    max_messages_per_day: int = Field(default=0)
    max_calls_per_week: int = Field(default=0)
    call_cooldown: str = Field(default="P0D", max_length=40)
    consolidate: bool = Field(default=False)
    min_balance_minor: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    # Policies stored before this column existed get 0 (migration 0014): every credit by a
    # specialist needs a second pair of eyes until an admin sets a threshold.
    # No column default: the ORM would write it over an explicit null ("no threshold").
    dispute_credit_approval_minor: int | None = Field(
        default=0, sa_column=Column(BigInteger, nullable=True)
    )
    portal_plan_max_installments: int = Field(
        default=6, sa_column=Column(Integer, nullable=False, server_default="6")
    )
    portal_plan_first_within: str = Field(
        default="P30D", sa_column=Column(String(40), nullable=False, server_default="P30D")
    )
    portal_plan_max_span: str = Field(
        default="P180D", sa_column=Column(String(40), nullable=False, server_default="P180D")
    )
    portal_plan_min_installment_minor: int = Field(
        default=1000, sa_column=Column(BigInteger, nullable=False, server_default="1000")
    )
    portal_promise_max: str = Field(
        default="P30D", sa_column=Column(String(40), nullable=False, server_default="P30D")
    )
    steps: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    ladder: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    charges: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The current version (policy_versions): this row always holds that version's content.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    def spec(self) -> PolicySpec:
        assert self.id is not None
        return PolicySpec(
            policy_id=self.id,
            version=self.version,
            name=self.name,
            steps=[StepSpec(**s) for s in self.steps],
            escalate_after=self.escalate_after,
            send_at=self.send_at,
            dispute_sla=self.dispute_sla,
            plan_grace=self.plan_grace,
            plan_reminder_offset=self.plan_reminder_offset,
            max_installments=self.max_installments,
            promise_grace=self.promise_grace,
            resume_grace=self.resume_grace,
            contact_window=self.contact_window,
            skip_weekends=self.skip_weekends,
            skip_holidays=self.skip_holidays,
            max_messages_per_day=self.max_messages_per_day,
            max_calls_per_week=self.max_calls_per_week,
            call_cooldown=self.call_cooldown,
            consolidate=self.consolidate,
            min_balance_minor=self.min_balance_minor,
            ladder=[LadderStage(**s) for s in self.ladder],
            charges=ChargesIn.model_validate(self.charges).spec() if self.charges else None,
        )


class DunningPolicyPublic(DunningPolicyBase):
    id: int
    steps: list[ReminderStep]
    ladder: list[LadderStageIn]
    charges: ChargesIn | None
    version: int = Field(default=1, description="the current version (see /versions)")
    created_at: datetime


class PolicyVersion(SQLModel, table=True):
    """One immutable version of a policy: its whole content as created or published
    (``DunningPolicyCreate``'s fields), who published it and when."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("policy_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    policy_id: int = Field(foreign_key="dunning_policies.id", index=True)
    version: int
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_by: str = Field(max_length=100)
    note: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


RunningChoice = Literal["stay", "switch"]


class PolicyPublish(DunningPolicyCreate):
    """``PUT /v1/policies/{id}``: the whole new content (as for a create; the name cannot
    change: segments name the policy), what happens to running invoices, and a note."""

    running: RunningChoice = Field(
        default="stay",
        description="stay: running invoices keep the version they run; switch: each open "
        "invoice on an older version follows this one from its next step (passed steps are "
        "recorded as skipped, nothing is sent again), as a job",
    )
    note: str = Field(default="", max_length=500, description="why: shown in the versions list")

    def content(self) -> DunningPolicyCreate:
        return DunningPolicyCreate.model_validate(self.model_dump(exclude={"running", "note"}))


class PolicyVersionPublic(SQLModel):
    policy_id: int
    version: int
    current: bool
    created_by: str
    created_at: datetime
    note: str
    policy: DunningPolicyCreate = Field(description="the version's whole content")


class FieldChange(SQLModel):
    field: str = Field(description="a dotted path, e.g. steps.late_7.offset or contact_window")
    change: Literal["added", "removed", "changed"]
    before: Any = None
    after: Any = None


class PolicyDiff(SQLModel):
    policy_id: int
    from_version: int
    to_version: int
    changes: list[FieldChange]


class PolicyPublished(SQLModel):
    version: PolicyVersionPublic
    switch_job_id: int | None = Field(
        default=None, description="running: switch: the job moving the running invoices"
    )
    running_invoices: int = Field(description="open invoices on an older version of the policy")


DEFAULT_POLICY_NAME = "default"
DEFAULT_POLICY = DunningPolicyCreate(
    name=DEFAULT_POLICY_NAME,
    send_at="09:00",
    escalate_after="P45D",
    steps=[
        ReminderStep(key="before_due", offset="-P3D", template="reminder_before_due"),
        ReminderStep(key="first_late_day", offset="P1D", template="reminder_overdue"),
        ReminderStep(key="late_7", offset="P7D", template="reminder_overdue"),
        ReminderStep(key="late_14", offset="P14D", template="reminder_overdue"),
        ReminderStep(key="final_notice", offset="P30D", template="final_notice"),
    ],
)
