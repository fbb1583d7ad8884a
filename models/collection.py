"""What specialists agree with customers: disputes, payment plans, promises; worklist tasks."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictInt, field_validator, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class Dispute(SQLModel, table=True):
    __tablename__ = "disputes"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    status: str = Field(max_length=20, description="open, upheld, rejected, closed")
    reason: str = Field(max_length=1000)
    amount_minor: int | None = Field(default=None, sa_type=BigInteger)
    opened_by: str = Field(max_length=100)
    opened_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sla_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_by: str | None = Field(default=None, max_length=100)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    outcome_note: str | None = Field(default=None, max_length=2000)
    credit_minor: int = Field(default=0, sa_type=BigInteger)


class PaymentPlan(SQLModel, table=True):
    __tablename__ = "payment_plans"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    status: str = Field(max_length=20, description="active, completed, broken, cancelled")
    installments: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    note: str = Field(default="", max_length=2000)
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Promise(SQLModel, table=True):
    __tablename__ = "promises"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    status: str = Field(max_length=20, description="open, kept, broken, superseded")
    promised_date: date
    amount_minor: int = Field(sa_type=BigInteger)
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Task(SQLModel, table=True):
    """An item on the specialists' worklist (an overdue dispute, a call to make, ...).

    Created through ``arflow.invoices.tasks.new_task`` (which gives it its default owner).
    ``status`` is ``open`` or ``done``; an open task with ``snoozed_until`` in the future is
    *snoozed* (hidden from the open worklist until then). A closed task has ``closed_at``,
    ``closed_by`` and an ``outcome``: one of ``TASK_OUTCOMES`` when a specialist closed it,
    ``cause_ended`` when its cause went away (the reason in ``note``), a call's outcome for a
    call task, an approval's decision for a credit approval."""

    __tablename__ = "tasks"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    kind: str = Field(max_length=50)
    status: str = Field(default="open", max_length=20, index=True)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    assignee: str | None = Field(default=None, max_length=100, index=True)
    snoozed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_by: str | None = Field(default=None, max_length=100)
    outcome: str | None = Field(default=None, max_length=50)
    note: str | None = Field(default=None, max_length=2000)


# -- request bodies -------------------------------------------------------------------


class _Body(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class DisputeCreate(_Body):
    reason: str = Field(min_length=1, max_length=1000)
    amount_minor: StrictInt | None = Field(default=None, gt=0, le=10**15)


class DisputeResolve(_Body):
    outcome: Literal["upheld", "rejected"]
    credit_minor: StrictInt = Field(default=0, ge=0, le=10**15)
    note: str = Field(min_length=1, max_length=2000)


class InstallmentIn(_Body):
    due_date: date
    amount_minor: StrictInt = Field(gt=0, le=10**15)


class PlanCreate(_Body):
    installments: list[InstallmentIn] = Field(min_length=1, max_length=120)
    note: str = Field(default="", max_length=2000)


class PromiseCreate(_Body):
    promised_date: date
    amount_minor: StrictInt = Field(gt=0, le=10**15)
    note: str = Field(default="", max_length=2000)


class PauseBody(_Body):
    until: date | None = None
    reason: str = Field(min_length=1, max_length=500)


class ReasonBody(_Body):
    reason: str = Field(min_length=1, max_length=500)


class OptionalReason(_Body):
    reason: str = Field(default="", max_length=500)


class AssignBody(_Body):
    collector: str = Field(min_length=1, max_length=100)

    @field_validator("collector")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("collector must not be blank")
        return value


#: What a specialist may answer when closing a task by hand (``PATCH /v1/tasks/{id}``).
TASK_OUTCOMES = ("resolved", "no_action_needed", "escalated", "duplicate", "other")
TaskOutcome = Literal["resolved", "no_action_needed", "escalated", "duplicate", "other"]
#: A task closed because its cause went away (the reason is its note).
CAUSE_ENDED = "cause_ended"
#: How far ahead a task may be snoozed.
MAX_SNOOZE_DAYS = 365


class TaskUpdate(_Body):
    """Assign, snooze or close a task; at least one field. ``assignee: null`` unassigns,
    ``snoozed_until: null`` wakes it; ``status: "done"`` needs an ``outcome`` (and may carry
    a ``note``). A task once done is not reopened."""

    assignee: str | None = Field(default=None, min_length=1, max_length=100)
    snoozed_until: datetime | None = Field(
        default=None,
        description="UTC (an instant without a zone is taken as UTC); future, "
        f"at most {MAX_SNOOZE_DAYS} days ahead",
    )
    status: Literal["done"] | None = None
    outcome: TaskOutcome | None = Field(default=None, description="with status done only")
    note: str | None = Field(default=None, max_length=2000, description="with status done only")

    @field_validator("assignee")
    @classmethod
    def _strip_assignee(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("assignee must not be blank (null unassigns)")
        return value

    @field_validator("snoozed_until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> TaskUpdate:
        given = self.model_fields_set
        if not given:
            raise ValueError("give at least one of assignee, snoozed_until, status")
        if "status" in given and self.status is None:
            raise ValueError("status can only be set to done (a task is not reopened)")
        if self.status == "done" and self.outcome is None:
            raise ValueError(f"closing a task needs an outcome: one of {', '.join(TASK_OUTCOMES)}")
        if self.status != "done" and ({"outcome", "note"} & given):
            raise ValueError('outcome and note go with status "done" only')
        return self


class NoteBody(_Body):
    text: str = Field(min_length=1, max_length=5000)


# -- responses --------------------------------------------------------------------------


class DisputePublic(SQLModel):
    id: int
    invoice_id: int
    status: str
    reason: str
    amount_minor: int | None
    opened_by: str
    opened_at: datetime
    sla_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    outcome_note: str | None
    credit_minor: int


class PlanPublic(SQLModel):
    id: int
    invoice_id: int
    status: str
    installments: list[dict[str, Any]]
    note: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class TaskPublic(SQLModel):
    id: int
    invoice_id: int
    kind: str
    status: str
    due_at: datetime | None
    data: dict[str, Any]
    created_at: datetime


class TaskPriority(BaseModel):
    """Why a task stands where it does on the worklist (``arflow/invoices/priority.py``)."""

    expected_minor: int = PydanticField(description="open balance x probability of payment")
    balance_minor: int
    currency: str
    probability: Decimal = PydanticField(description="of payment, 0 to 1")
    why: str


class CallWindow(BaseModel):
    """For a call task: the customer's local time and whether a call may be placed now."""

    customer_local_time: str
    allowed_now: bool
    why: str | None = PydanticField(description="contact hours or Reg F's limits, when not allowed")
    allowed_from: datetime | None


class TaskItem(SQLModel):
    """One row of ``GET /v1/tasks``: the task with its invoice's number and its customer, so
    a worklist row needs no other lookup. ``status`` is ``open``, ``snoozed`` (open, with
    ``snoozed_until`` in the future) or ``done``."""

    id: int
    invoice_id: int
    invoice_number: str
    customer_id: int
    customer_name: str
    kind: str
    status: str
    due_at: datetime | None
    assignee: str | None
    snoozed_until: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    outcome: str | None
    note: str | None
    data: dict[str, Any]
    created_at: datetime
    priority: TaskPriority | None = None
    call: CallWindow | None = None


class TaskPage(BaseModel):
    items: list[TaskItem]
    total: int
    limit: int
    offset: int


# -- call tasks ---------------------------------------------------------------------------

CallOutcomeKind = Literal["reached", "no_answer", "left_voicemail", "wrong_number"]


class PromiseOnCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    promised_date: date
    amount_minor: StrictInt = PydanticField(gt=0, le=10**15)


class CallOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: CallOutcomeKind
    note: str = PydanticField(default="", max_length=2000)
    promise: PromiseOnCall | None = PydanticField(
        default=None, description="only with outcome reached: applied to the invoice's workflow"
    )


class CallResult(BaseModel):
    task: TaskPublic
    invoice_status: str
    hold: str | None
