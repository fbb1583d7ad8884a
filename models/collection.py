"""What specialists agree with customers: disputes, payment plans, promises; worklist tasks."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictInt, field_validator
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
    """An item on the specialists' worklist (an overdue dispute, later: calls)."""

    __tablename__ = "tasks"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    kind: str = Field(max_length=50)
    status: str = Field(default="open", max_length=20, index=True)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


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
