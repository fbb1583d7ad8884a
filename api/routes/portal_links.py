"""A customer's portal links, for specialists: make one to send by hand, or revoke them all
(a link forwarded to the wrong person). Every message to the customer carries a fresh link
anyway; links expire after ``ARFLOW_PORTAL_LINK_DAYS``."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SessionDep, SettingsDep, Specialist
from arflow.portal import links

router = APIRouter(prefix="/v1/customers/{customer_id}/portal-links", tags=["customers"])


class PortalLink(BaseModel):
    url: str
    expires_at: datetime


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


class Revoked(BaseModel):
    customer_id: int
    links_valid_from: datetime = Field(description="links made before this are refused")


@router.post("", status_code=201, response_model=PortalLink)
def make_link(
    customer_id: int, session: SessionDep, settings: SettingsDep, who: Specialist
) -> PortalLink:
    """A new portal link for the customer (recorded as ``portal_link_made``), to send by hand."""
    url, expires_at = links.make_link(session, settings, customer_id, who.actor)
    return PortalLink(url=url, expires_at=expires_at)


@router.post("/revoke", response_model=Revoked)
def revoke_links(
    customer_id: int, body: RevokeBody, session: SessionDep, who: Specialist
) -> Revoked:
    """End every portal link of the customer made until now (recorded as
    ``portal_links_revoked``). The next message carries a new one."""
    customer = links.revoke(session, customer_id, who.actor, body.reason)
    assert customer.portal_links_from is not None
    return Revoked(customer_id=customer_id, links_valid_from=customer.portal_links_from)
