"""Customer segments: ordered rules on a customer's attributes and behaviour, each naming the
dunning policy, the contact channels and the statement schedule its customers get."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import ConfigDict, model_validator
from sqlalchemy import JSON, Column, Integer
from sqlmodel import Field, SQLModel

from models.policy import Channel
from models.types import UTCDateTime, utcnow

# What a rule can look at: the profile's attributes and the behaviour figures
# (arflow/customers/behaviour.py, arflow/customers/risk.py). Booleans take eq/ne only; a figure
# that is not known (no annual revenue given, no invoice paid yet) never satisfies a rule.
BOOL_FIELDS = ("key_account",)
NUMBER_FIELDS = (
    "annual_revenue_minor",
    "risk_score",
    "max_days_late",
    "max_days_overdue",
    "weighted_days_late",
    "avg_days_late",
    "paid_on_time_pct",
    "broken_promises",
    "broken_plans",
    "rejected_disputes",
    "invoice_count",
)
RULE_FIELDS = BOOL_FIELDS + NUMBER_FIELDS
Op = Literal["eq", "ne", "gt", "gte", "lt", "lte"]
OP_SYMBOLS: dict[str, str] = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
DEFAULT_HOLD_OVERDUE_DAYS = 60


class SegmentRule(SQLModel):
    """``field op value``, e.g. ``{"field": "risk_score", "op": "gte", "value": 60}``."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    field: str
    op: Op = "eq"
    value: bool | Decimal

    @model_validator(mode="before")
    @classmethod
    def _number(cls, data: Any) -> Any:
        """Numbers are Decimals (exact), whether sent as 60, 12.5 or "12.5"."""
        if isinstance(data, dict) and data.get("field") in NUMBER_FIELDS:
            value = data.get("value")
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                try:
                    return {**data, "value": Decimal(str(value))}
                except ArithmeticError:
                    return data
        return data

    @model_validator(mode="after")
    def _typed(self) -> SegmentRule:
        if self.field not in RULE_FIELDS:
            raise ValueError(f"unknown rule field {self.field!r}; known: {', '.join(RULE_FIELDS)}")
        if self.field in BOOL_FIELDS:
            if not isinstance(self.value, bool):
                raise ValueError(f"{self.field} takes true or false")
            if self.op not in ("eq", "ne"):
                raise ValueError(f"{self.field} takes the operators eq and ne only")
        elif isinstance(self.value, bool):
            raise ValueError(f"{self.field} takes a number")
        return self

    def stored(self) -> dict[str, Any]:
        """As kept in the JSON column: whole numbers as numbers, fractions as exact strings."""
        value: bool | int | str = (
            self.value
            if isinstance(self.value, bool)
            else (
                int(self.value) if self.value == self.value.to_integral_value() else str(self.value)
            )
        )
        return {"field": self.field, "op": self.op, "value": value}

    def text(self) -> str:
        value = str(self.value).lower() if isinstance(self.value, bool) else str(self.value)
        return f"{self.field} {OP_SYMBOLS[self.op]} {value}"


class SegmentBase(SQLModel):
    position: int = Field(
        default=100, ge=0, le=10_000, description="evaluation order, lowest first"
    )
    description: str = Field(default="", max_length=500)
    statement_day: int | None = Field(
        default=None,
        ge=1,
        le=28,
        description="monthly statement of account on this day; null: none",
    )
    hold_overdue_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description=f"credit hold when an invoice is overdue more than this many days "
        f"(null: {DEFAULT_HOLD_OVERDUE_DAYS})",
    )


class SegmentUpdate(SegmentBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    match: Literal["all", "any"] = Field(
        default="all", description="all rules must hold, or any one; no rules: every customer"
    )
    policy_name: str = Field(min_length=1, max_length=100, description="the dunning policy")
    channels: list[Channel] = Field(
        default_factory=lambda: ["email", "letter"],
        max_length=4,
        description="channels this segment's customers may be contacted on",
    )
    sender: Literal["team", "collector"] = Field(
        default="team", description="collector: emails come personally from the assigned collector"
    )
    rules: list[SegmentRule] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _distinct_channels(self) -> SegmentUpdate:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must not repeat")
        return self


class SegmentCreate(SegmentUpdate):
    name: str = Field(min_length=1, max_length=50, schema_extra={"pattern": r"^[a-z0-9_\-]+$"})


class Segment(SegmentBase, table=True):
    __tablename__ = "segments"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50, unique=True)
    policy_name: str = Field(max_length=100)
    match: str = Field(default="all", max_length=3)
    channels: list[str] = Field(sa_column=Column(JSON, nullable=False))
    sender: str = Field(default="team", max_length=20)
    rules: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The running champion / challenger experiment (models/experiment.py), if any: new
    # invoices of customers hashed below the share run this policy version instead.
    challenger_policy: str | None = Field(default=None, max_length=100)
    challenger_version: int | None = Field(default=None)
    challenger_share_pct: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    experiment_id: int | None = Field(default=None, description="experiments.id")

    def parsed_rules(self) -> list[SegmentRule]:
        return [SegmentRule.model_validate(r) for r in self.rules]


class SegmentPublic(SegmentBase):
    id: int
    name: str
    policy_name: str
    match: str
    channels: list[str]
    sender: str
    rules: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
