from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError

from api.deps import SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError, _describe
from api.ratelimit import limit_webhooks
from arflow.errors import DomainError, Unavailable
from arflow.observability import WEBHOOK_REJECTS
from arflow.payments import service as payments
from arflow.payments import signatures
from models.payment import PaymentAck, PaymentWebhook

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(limit_webhooks)])


@router.post(
    "/payments",
    response_model=PaymentAck,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PaymentWebhook.model_json_schema()}},
        }
    },
)
async def payment_webhook(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    arflow_signature: str | None = Header(default=None),
) -> PaymentAck:
    """A payment provider's event. Signed: ``Arflow-Signature: t=<unix>,v1=<hmac>``."""
    raw = await request.body()
    try:
        signatures.verify_signature(
            settings.webhook_secret, arflow_signature, raw, settings.webhook_tolerance_seconds
        )
    except DomainError:
        WEBHOOK_REJECTS.labels("bad_signature").inc()
        raise
    try:
        body = PaymentWebhook.model_validate_json(raw)
    except ValidationError as exc:
        WEBHOOK_REJECTS.labels("invalid_body").inc()
        details = _describe(json.loads(exc.json()))
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ApiError(422, "invalid", summary, details) from None
    try:
        return await payments.receive_webhook(session, client, settings, body)
    except DomainError as exc:
        # an unknown invoice, an event id reused with other data
        if not isinstance(exc, Unavailable):
            WEBHOOK_REJECTS.labels("refused").inc()
        raise
