"""Dunning policies: ordered reminder steps relative to the due instant, and the escalation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, model_validator
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from models.types import IsoDuration, NonNegativeIsoDuration, TimeOfDay, UTCDateTime, utcnow
from workflows.schedule import parse_window, shift
from workflows.types import PolicySpec, StepSpec

Channel = Literal["email", "sms", "call", "letter"]
TEMPLATES = ("reminder_before_due", "reminder_overdue", "final_notice", "reminder")


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

    @model_validator(mode="after")
    def _window(self) -> DunningPolicyBase:
        if self.contact_window is not None:
            parse_window(self.contact_window)
        return self


class DunningPolicyCreate(DunningPolicyBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    steps: list[ReminderStep] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _ordered_and_before_escalation(self) -> DunningPolicyCreate:
        keys = [s.key for s in self.steps]
        if len(set(keys)) != len(keys):
            raise ValueError("step keys must be unique")
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
    steps: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    def spec(self) -> PolicySpec:
        assert self.id is not None
        return PolicySpec(
            policy_id=self.id,
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
        )


class DunningPolicyPublic(DunningPolicyBase):
    id: int
    steps: list[ReminderStep]
    created_at: datetime


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
