"""Four eyes on a dispute credit: a specialist's credit above the policy's threshold is stored
here, pending, until an admin or another specialist approves or declines it."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict
from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow

APPROVAL_STATUSES = ("pending", "approved", "declined")


class CreditApproval(SQLModel, table=True):
    """A dispute resolution with a credit that waits for a second actor."""

    __tablename__ = "credit_approvals"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    dispute_id: int = Field(foreign_key="disputes.id", index=True)
    credit_minor: int = Field(sa_type=BigInteger)
    outcome: str = Field(max_length=20)
    note: str = Field(max_length=2000)
    requested_by: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: str = Field(default="pending", max_length=20, index=True)
    decided_by: str | None = Field(default=None, max_length=100)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_note: str | None = Field(default=None, max_length=2000)
    task_id: int | None = Field(default=None, foreign_key="tasks.id")


class CreditApprovalPublic(SQLModel):
    id: int
    invoice_id: int
    dispute_id: int
    credit_minor: int
    outcome: str
    note: str
    requested_by: str
    created_at: datetime
    status: str = Field(description="pending, approved or declined")
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    task_id: int | None


class ApprovalDecision(SQLModel):
    """An optional word from the approver (why a credit is declined, say)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    note: str = Field(default="", max_length=2000)
