"""Champion / challenger experiments: a segment's new invoices split by a stable hash of the
customer between its own policy (the champion) and a challenger policy version."""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from models.types import MAX_ID, UTCDateTime, utcnow

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
Arm = Literal["champion", "challenger"]
ARMS: tuple[Arm, Arm] = ("champion", "challenger")


class Experiment(SQLModel, table=True):
    """One experiment of a segment, from its start to its end (promoted or stopped). The
    segment row names the running one (``segments.experiment_id``); invoices assigned while it
    ran name it too (``invoices.experiment_id``), so two experiments never mix in a report."""

    __tablename__ = "experiments"

    id: int | None = Field(default=None, primary_key=True)
    segment: str = Field(max_length=50, index=True)
    champion_policy: str = Field(max_length=100)
    champion_version: int | None = Field(default=None, description="current when started")
    challenger_policy: str = Field(max_length=100)
    challenger_version: int
    share_pct: int
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_by: str = Field(max_length=100)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_by: str | None = Field(default=None, max_length=100)
    outcome: str | None = Field(default=None, max_length=20, description="promoted, stopped")
    promoted_version: int | None = Field(
        default=None, description="the champion's version published from the challenger"
    )
    switch_job_id: int | None = Field(default=None, description="the policy_switch job")


class ExperimentSet(SQLModel):
    """Start (or change) the segment's experiment."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    challenger_policy: str = Field(min_length=1, max_length=100, description="a policy name")
    challenger_version: int = Field(ge=1, le=MAX_ID, description="that policy's version")
    share_pct: int = Field(ge=1, le=99, description="percent of customers on the challenger")


class ExperimentPublic(SQLModel):
    id: int
    segment: str
    champion_policy: str
    champion_version: int | None
    challenger_policy: str
    challenger_version: int
    share_pct: int
    started_at: datetime
    started_by: str
    ended_at: datetime | None
    ended_by: str | None
    outcome: str | None
    promoted_version: int | None
    switch_job_id: int | None
    running: bool = Field(description="the segment's current experiment")


class PromoteResult(SQLModel):
    experiment: ExperimentPublic
    policy: str = Field(description="the champion policy, now at the promoted version")
    version: int = Field(description="its new version: the challenger version's content")
    switch_job_id: int | None = Field(
        description="the job moving the champion's running invoices to it at their next step"
    )
