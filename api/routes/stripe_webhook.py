"""Stripe's webhook: card payments from the customer portal (``arflow/portal/stripe_pay.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request

from api.deps import OptionalTemporalDep, SessionDep, SettingsDep
from api.errors import ApiError
from api.ratelimit import limit_webhooks
from arflow.errors import BadRequest, DomainError, Unavailable
from arflow.observability import WEBHOOK_REJECTS
from arflow.portal import stripe_pay
from models.checkout import StripeAck

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(limit_webhooks)])

_EVENT_SCHEMA = {
    "type": "object",
    "description": "a Stripe event (https://docs.stripe.com/api/events/object); acted on: "
    "checkout.session.completed, charge.refunded, charge.dispute.created",
    "required": ["id", "type", "data"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "created": {"type": "integer"},
        "data": {"type": "object"},
    },
}


@router.post(
    "/stripe",
    response_model=StripeAck,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _EVENT_SCHEMA}},
        }
    },
)
async def stripe_webhook(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    stripe_signature: str | None = Header(default=None),
) -> StripeAck:
    """A Stripe event. Signed by Stripe: ``Stripe-Signature: t=<unix>,v1=<hmac>``, checked
    against ``ARFLOW_STRIPE_WEBHOOK_SECRET``; 404 while Stripe is not configured."""
    if not settings.stripe_enabled:
        raise ApiError(404, "not_found", "card payments (Stripe) are not configured")
    if client is None:
        raise ApiError(503, "unavailable", "Temporal is not connected")
    raw = await request.body()
    try:
        return await stripe_pay.receive_event(session, client, settings, raw, stripe_signature)
    except DomainError as exc:
        if isinstance(exc, BadRequest):
            WEBHOOK_REJECTS.labels("bad_signature").inc()
        elif not isinstance(exc, Unavailable):
            WEBHOOK_REJECTS.labels("refused").inc()
        raise
