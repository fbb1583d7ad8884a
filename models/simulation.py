"""The request of a policy simulation on past invoices (``POST /v1/policies/simulate``)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from models.policy import DunningPolicyCreate
from models.types import MAX_ID


class SimulationRequest(BaseModel):
    """A draft policy (``policy``) or a stored one (``policy_id``, ``version``: default its
    current one), and the past invoices to run it on: issued between ``issued_from`` and
    ``issued_to`` (both included, at most three years), optionally of one segment or one
    customer."""

    model_config = ConfigDict(extra="forbid")

    policy: DunningPolicyCreate | None = Field(
        default=None, description="a draft policy: the fields of a policy create"
    )
    policy_id: int | None = Field(default=None, gt=0, le=MAX_ID)
    version: int | None = Field(default=None, gt=0, le=MAX_ID)
    issued_from: date
    issued_to: date
    segment: str | None = Field(default=None, min_length=1, max_length=50)
    customer_id: int | None = Field(default=None, gt=0, le=MAX_ID)
    per_invoice: bool = Field(default=False, description="include one result per invoice")
