"""The customer portal's own records: requests for a fresh portal link (sent by email)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow


class PortalLinkRequest(SQLModel, table=True):
    """A fresh portal link asked for on the page of an expired, revoked or unknown link. Sent
    once by ``PortalLinkWorkflow`` to the address on file: queued → sending → sent, or
    blocked / failed / uncertain with the reason in ``detail``."""

    __tablename__ = "portal_link_requests"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    reason: str = Field(max_length=20)  # expired, revoked, unknown
    status: str = Field(default="queued", max_length=20)
    detail: str | None = Field(default=None, max_length=500)
    provider_id: str | None = Field(default=None, max_length=200)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
