"""Customer profiles: behaviour and risk, the profile and its segment, the customer's timeline,
unbilled orders and credit checks; the segments themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from api.deps import Admin, OptionalTemporalDep, SessionDep, SettingsDep, Specialist, Viewer
from arflow.customers import credit, profiles, segments
from arflow.customers.changes import shown_to
from arflow.customers.events import customer_events
from arflow.customers.profiles import BehaviourView, ProfileResult, ProfileView, get_customer
from arflow.invoices.service import switch_policies
from models import Segment, UnbilledOrder
from models.profile import (
    CreditCheckRequest,
    CreditCheckResult,
    CustomerEventPublic,
    OrderCreate,
    OrderPublic,
    ProfileUpdate,
)
from models.segment import SegmentCreate, SegmentPublic, SegmentUpdate
from models.types import utcnow

router = APIRouter(tags=["customer profiles"])


def now_utc() -> datetime:
    """The instant figures are computed at (tests override it)."""
    return utcnow()


Now = Annotated[datetime, Depends(now_utc)]


@router.get("/v1/customers/{customer_id}/behaviour", response_model=BehaviourView)
def get_behaviour(customer_id: int, session: SessionDep, _: Viewer, now: Now) -> BehaviourView:
    """Payment behaviour and the risk score, computed on read (always current)."""
    return profiles.behaviour_view(session, customer_id, now)


@router.get("/v1/customers/{customer_id}/profile", response_model=ProfileView)
def get_profile(customer_id: int, session: SessionDep, _: Viewer, now: Now) -> ProfileView:
    return profiles.profile_view(session, customer_id, now)


@router.put("/v1/customers/{customer_id}/profile", response_model=ProfileResult)
async def put_profile(
    customer_id: int,
    body: ProfileUpdate,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    who: Specialist,
    now: Now,
) -> ProfileResult:
    """Set profile attributes or pin a segment (``segment: null`` unpins); the segment and the
    credit hold are re-evaluated and every change is recorded on the customer's timeline.
    When the segment changes, the customer's open invoices switch to its policy from their
    next step on (``policy_changed`` on each timeline). Raising the credit limit (or
    clearing it) needs an admin; a specialist may lower it."""
    result = profiles.update_profile(session, customer_id, body, who, now)
    await follow_segment(result, session, settings, client, who.actor)
    return result


async def follow_segment(
    result: ProfileResult,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    actor: str,
) -> None:
    """A customer who changed segment: their open invoices follow its policy."""
    if not (result.segment_changed and result.policy_change_invoice_ids):
        return
    if client is None:
        result.policy_switch_failed = dict.fromkeys(
            result.policy_change_invoice_ids, "Temporal is not connected"
        )
        return
    result.policy_switch_failed = await switch_policies(
        session,
        client,
        settings,
        result.policy_change_invoice_ids,
        result.policy_name,
        actor,
        f"segment {result.previous_segment} -> {result.segment}",
        result.segment,
    )


@router.get("/v1/customers/{customer_id}/events", response_model=list[CustomerEventPublic])
def get_events(
    customer_id: int,
    session: SessionDep,
    who: Viewer,
    kind: str | None = Query(None, max_length=50),
    limit: int = Query(200, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[CustomerEventPublic]:
    # Oldest first. Personal data in customer_changed events is masked for viewers (a comment,
    # not a docstring: the operation's saved description stays as it is).
    get_customer(session, customer_id)
    return [shown_to(e, who) for e in customer_events(session, customer_id, kind, limit, offset)]


@router.post("/v1/customers/{customer_id}/orders", status_code=201, response_model=OrderPublic)
def post_order(
    customer_id: int,
    body: OrderCreate,
    session: SessionDep,
    who: Specialist,
    response: Response,
    now: Now,
) -> UnbilledOrder:
    """An order not invoiced yet: it counts in the exposure until deleted. The same external
    id again with the same data answers 200 with the stored order."""
    customer = get_customer(session, customer_id)
    order, created = credit.add_order(session, customer, body, who.actor, now)
    if not created:
        response.status_code = 200
    return order


@router.get("/v1/customers/{customer_id}/orders", response_model=list[OrderPublic])
def get_orders(customer_id: int, session: SessionDep, _: Viewer) -> list[UnbilledOrder]:
    get_customer(session, customer_id)
    return credit.list_orders(session, customer_id)


@router.delete("/v1/customers/{customer_id}/orders/{external_id}", status_code=204)
def delete_order(
    customer_id: int, external_id: str, session: SessionDep, who: Specialist, now: Now
) -> Response:
    """The order is invoiced (or cancelled): it leaves the exposure."""
    customer = get_customer(session, customer_id)
    credit.delete_order(session, customer, external_id, who.actor, now)
    return Response(status_code=204)


@router.post("/v1/customers/{customer_id}/credit-check", response_model=CreditCheckResult)
def post_credit_check(
    customer_id: int, body: CreditCheckRequest, session: SessionDep, who: Specialist, now: Now
) -> CreditCheckResult:
    """Approve or decline more credit; a credit hold (reassessed first) declines."""
    return credit.credit_check(session, get_customer(session, customer_id), body, who.actor, now)


# -- segments ---------------------------------------------------------------------------


@router.get("/v1/segments", response_model=list[SegmentPublic], tags=["segments"])
def list_segments(session: SessionDep, _: Viewer) -> list[Segment]:
    """In evaluation order."""
    return segments.load_segments(session)


@router.post("/v1/segments", status_code=201, response_model=SegmentPublic, tags=["segments"])
def create_segment(body: SegmentCreate, session: SessionDep, _: Admin) -> Segment:
    return segments.create_segment(session, body)


@router.put("/v1/segments/{name}", response_model=SegmentPublic, tags=["segments"])
def update_segment(name: str, body: SegmentUpdate, session: SessionDep, _: Admin) -> Segment:
    """Replace a segment's rules and settings (customers move on their next re-evaluation, or
    at once with ``POST /v1/segments/reevaluate``)."""
    return segments.update_segment(session, name, body)


@router.post("/v1/segments/reevaluate", response_model=list[ProfileResult], tags=["segments"])
async def reevaluate_all(
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    who: Admin,
    now: Now,
    limit: int = Query(1000, ge=1, le=10_000),
    offset: int = Query(0, ge=0),
) -> list[ProfileResult]:
    """Re-evaluate customers (by id, a page at a time): their segment and credit hold; the
    open invoices of those who moved switch to the new segment's policy. Answers those whose
    segment or hold changed. (The worker's daily review does the same for every customer with
    open invoices.)"""
    results = profiles.reevaluate_customers(session, who.actor, now, limit, offset)
    for result in results:
        await follow_segment(result, session, settings, client, who.actor)
    return results
