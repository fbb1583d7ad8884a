"""Collection agencies we hand invoices to, what they tell us back, and the legal stage."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, StrictInt, field_validator, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import MAX_ID, CurrencyCode, UTCDateTime, utcnow

#: names travel in the ``X-Arflow-Agency`` header: printable ASCII only
AGENCY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 .&'_-]*$"


class Agency(SQLModel, table=True):
    """A collection agency: placements go to its webhook or into its drop folder; its updates
    come in signed with ``secret`` (HMAC-SHA256)."""

    __tablename__ = "agencies"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    delivery: str = Field(default="file", max_length=20, description="webhook or file")
    endpoint_url: str | None = Field(default=None, max_length=500)
    folder: str | None = Field(default=None, max_length=500)
    file_format: str = Field(default="json", max_length=10, description="json or csv")
    secret: str = Field(max_length=200)
    commission_pct: str = Field(default="0", max_length=20)
    is_default: bool = Field(default=False)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AgencyUpdate(SQLModel, table=True):
    """One update received from an agency (payment collected, commission, closed, returned);
    ``update_id`` (the agency's) makes a redelivery a no-op."""

    __tablename__ = "agency_updates"
    __table_args__ = (UniqueConstraint("agency_id", "update_id", name="uq_agency_update"),)

    id: int | None = Field(default=None, primary_key=True)
    agency_id: int = Field(foreign_key="agencies.id", index=True)
    update_id: str = Field(max_length=200)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    kind: str = Field(max_length=20, description="payment, commission, closed, returned")
    amount_minor: int = Field(default=0, sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    payment_id: int | None = Field(default=None, foreign_key="payments.id")
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LegalCase(SQLModel, table=True):
    """The legal stage of an invoice, with its documents (generated and added by hand)."""

    __tablename__ = "legal_cases"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", unique=True)
    stage: str = Field(max_length=50)
    status: str = Field(default="open", max_length=20, description="open, closed")
    amount_minor: int = Field(sa_type=BigInteger, description="claimed: the balance then")
    currency: str = Field(max_length=3)
    documents: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="[{name, kind, reference, added_at, added_by}]",
    )
    opened_by: str = Field(max_length=100)
    opened_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# -- request and response bodies ------------------------------------------------------------


class AgencyCreate(BaseModel):
    """``POST /v1/agencies``: where placements go (a webhook or a drop folder) and the secret
    that signs what we send it and what it sends us."""

    model_config = ConfigDict(extra="forbid")

    name: str = PydanticField(min_length=1, max_length=100, pattern=AGENCY_NAME_PATTERN)
    delivery: Literal["webhook", "file"]
    endpoint_url: str | None = PydanticField(
        default=None, max_length=500, description="webhook: where placements are POSTed"
    )
    folder: str | None = PydanticField(
        default=None,
        min_length=1,
        max_length=500,
        description="file: the drop folder (on the worker's machine)",
    )
    file_format: Literal["json", "csv"] = PydanticField(
        default="json", description="file: the placement files' format (webhooks send JSON)"
    )
    secret: str = PydanticField(min_length=16, max_length=200)
    commission_pct: str = PydanticField(
        default="0",
        max_length=20,
        description='the agency fee in percent, a decimal string: "15.5"',
    )
    is_default: bool = PydanticField(
        default=False, description="placements whose ladder stage names no agency go here"
    )

    @field_validator("commission_pct")
    @classmethod
    def _percentage(cls, value: str) -> str:
        try:
            pct = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f'{value!r} is not a decimal number such as "15.5"') from None
        if not pct.is_finite() or not Decimal(0) <= pct <= Decimal(100):
            raise ValueError("must be between 0 and 100")
        if -pct.as_tuple().exponent > 4:  # type: ignore[operator]
            raise ValueError("at most 4 decimal places")
        return format(pct, "f")

    @model_validator(mode="after")
    def _delivery(self) -> AgencyCreate:
        if self.delivery == "webhook":
            if self.endpoint_url is None:
                raise ValueError("a webhook agency needs an endpoint_url")
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("endpoint_url must be an http(s) URL such as https://host/path")
            if self.folder is not None:
                raise ValueError("a webhook agency has no folder")
            if self.file_format != "json":
                raise ValueError(
                    "a webhook agency receives JSON: file_format csv needs delivery file"
                )
        else:
            if self.folder is None or not self.folder.strip() or "\x00" in self.folder:
                raise ValueError("a file agency needs a folder")
            if self.endpoint_url is not None:
                raise ValueError("a file agency has no endpoint_url")
        return self


class AgencyPublic(BaseModel):
    """An agency as the API shows it: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    delivery: str
    endpoint_url: str | None
    folder: str | None
    file_format: str
    commission_pct: str
    is_default: bool
    active: bool
    created_at: datetime


class AgencyUpdateIn(BaseModel):
    """``POST /v1/agency/updates``: what an agency tells us about an invoice placed with it.
    ``update_id`` is the agency's own: the same id again is a redelivery."""

    model_config = ConfigDict(extra="forbid")

    update_id: str = PydanticField(min_length=1, max_length=200)
    invoice_id: StrictInt = PydanticField(gt=0, le=MAX_ID)
    kind: Literal["payment", "commission", "closed", "returned"]
    amount_minor: StrictInt = PydanticField(
        default=0, ge=0, le=10**15, description="payment, commission: minor units, > 0"
    )
    currency: CurrencyCode | None = None
    occurred_at: datetime
    note: str | None = PydanticField(default=None, max_length=500)

    @model_validator(mode="after")
    def _consistent(self) -> AgencyUpdateIn:
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be an RFC 3339 instant with a UTC offset")
        if self.kind in ("payment", "commission"):
            if self.amount_minor <= 0:
                raise ValueError(f"a {self.kind} needs amount_minor > 0")
            if self.currency is None:
                raise ValueError(f"a {self.kind} needs a currency")
        elif self.amount_minor:
            raise ValueError(
                f"a {self.kind} update carries no amount: send payments and commission "
                "as their own updates"
            )
        return self


class AgencyUpdatePublic(BaseModel):
    update_id: str
    kind: str
    amount_minor: int
    currency: str | None
    payment_id: int | None
    occurred_at: datetime | None
    note: str | None
    received_at: datetime


class AgencyPlacementPublic(BaseModel):
    """``GET /v1/invoices/{id}/agency``: the placement and what the agency told us since."""

    invoice_id: int
    agency: str
    stage: str
    status: str = PydanticField(description="placed, recalled, returned or closed")
    amount_minor: int = PydanticField(description="the balance when placed")
    currency: str
    reference: str
    placed_at: datetime
    collected_minor: int
    commission_minor: int
    ended_at: datetime | None
    end_reason: str | None
    updates: list[AgencyUpdatePublic]


class AgencyUpdateAck(BaseModel):
    duplicate: bool = PydanticField(description="true: this update_id was received before")
    update_id: str
    invoice_id: int
    kind: str
    payment_id: int | None = None
    placement_status: str
