"""Email and SMS provider webhooks, and the contact blocks they create.

- ``POST /v1/webhooks/sendgrid``: SendGrid's event webhook (ECDSA signature).
- ``POST /v1/webhooks/sendgrid/inbound``: SendGrid Inbound Parse, a customer's email reply
  (ECDSA signature of the parse setting's security policy).
- ``POST /v1/webhooks/twilio/status``: Twilio's status callback of one message.
- ``POST /v1/webhooks/twilio/inbound``: an SMS to our number (STOP, START, any other text is a
  customer's reply).
- ``GET /v1/customers/{id}/contact-blocks``, ``POST`` (a customer's own opt-out or
  cease-contact request) and ``DELETE .../{channel}``.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, SettingsDep, Specialist, Viewer
from api.errors import ApiError, DomainError, not_found, unprocessable
from api.limits import max_body
from api.ratelimit import limit_webhooks
from arflow.config import Settings
from arflow.customers import contacts
from arflow.messages import provider_events, replies
from arflow.observability import INBOUND_REPLIES
from models import ContactBlock, Customer
from models.contact import ContactBlockPublic, ContactBlockRequest

log = logging.getLogger("arflow.providers")

#: An Inbound Parse post carries the whole email, attachments included.
INBOUND_MAX_BODY = 5 * 1024 * 1024

router = APIRouter()


@router.post("/v1/webhooks/sendgrid", tags=["webhooks"], dependencies=[Depends(limit_webhooks)])
async def sendgrid_events(
    request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, int]:
    """SendGrid's event webhook: delivered, bounce, dropped, spam reports, unsubscribes."""
    raw = await request.body()
    provider_events.verify_sendgrid(
        settings.sendgrid_webhook_public_key,
        raw,
        request.headers.get(provider_events.SENDGRID_SIGNATURE),
        request.headers.get(provider_events.SENDGRID_TIMESTAMP),
        settings.webhook_tolerance_seconds,
    )
    try:
        events = json.loads(raw)
    except ValueError:
        raise unprocessable("the body is not JSON") from None
    if not isinstance(events, list):
        raise unprocessable("the body must be a JSON array of events")

    def apply() -> provider_events.EventCounts:
        counts = provider_events.apply_sendgrid_events(session, events)
        session.commit()
        return counts

    counts = await run_in_threadpool(apply)
    return {"applied": counts.applied, "ignored": counts.ignored}


@router.post(
    "/v1/webhooks/sendgrid/inbound", tags=["webhooks"], dependencies=[Depends(limit_webhooks)]
)
@max_body(INBOUND_MAX_BODY)
async def sendgrid_inbound(
    request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, str]:
    """SendGrid Inbound Parse: an email to our reply address, on the sender's timeline.

    Answered 200 for an unknown sender too (logged and counted; SendGrid would retry for days
    otherwise); ``outcome`` says what became of it: ``invoice``, ``customer``, ``duplicate``
    or ``unknown_sender``.
    """
    raw = await request.body()
    try:
        provider_events.verify_sendgrid(
            settings.sendgrid_inbound_public_key,
            raw,
            request.headers.get(provider_events.SENDGRID_SIGNATURE),
            request.headers.get(provider_events.SENDGRID_TIMESTAMP),
            settings.webhook_tolerance_seconds,
            webhook="SendGrid Inbound Parse",
        )
        fields, files = replies.multipart_fields(raw, request.headers.get("content-type", ""))
    except DomainError as exc:
        INBOUND_REPLIES.labels("email", "rejected").inc()
        log.warning("inbound email refused: %s", exc.message)
        raise

    def apply() -> replies.ReplyOutcome:
        outcome = replies.record_reply(session, replies.email_reply(fields, files))
        session.commit()
        return outcome

    outcome = await run_in_threadpool(apply)
    return {"outcome": outcome.outcome}


async def _twilio_form(request: Request, settings: Settings) -> dict[str, str]:
    """The form fields of a Twilio request whose signature checks out (else 401).

    Twilio signs the URL it called, which is our public URL, not the one this process sees
    behind a proxy: ``public_url`` + path + query.
    """
    form = await request.form()
    params = {key: str(value) for key, value in form.multi_items()}
    query = request.url.query
    url = settings.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")
    provider_events.verify_twilio(
        settings.twilio_auth_token,
        url,
        params,
        request.headers.get(provider_events.TWILIO_SIGNATURE),
    )
    return params


@router.post(
    "/v1/webhooks/twilio/status",
    status_code=204,
    tags=["webhooks"],
    dependencies=[Depends(limit_webhooks)],
)
async def twilio_status(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Twilio's status callback for one message (``?outbox_id=`` names the row)."""
    params = await _twilio_form(request, settings)
    outbox_id = request.query_params.get("outbox_id")

    def apply() -> None:
        provider_events.apply_twilio_status(session, outbox_id, params)
        session.commit()

    await run_in_threadpool(apply)
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/twilio/inbound", tags=["webhooks"], dependencies=[Depends(limit_webhooks)]
)
async def twilio_inbound(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """An SMS to our number: STOP and its synonyms block SMS, START lifts the block."""
    # Any other text is a customer's reply (arflow.messages.replies). The docstring above is
    # the operation's description in the saved OpenAPI document: it stays as it was.
    params = await _twilio_form(request, settings)

    def apply() -> None:
        if provider_events.apply_twilio_inbound(session, params) is None:
            replies.record_reply(session, replies.sms_reply(params))
        session.commit()

    await run_in_threadpool(apply)
    # Empty TwiML: Twilio itself answers the STOP/START keywords on the carrier's terms.
    return Response(provider_events.EMPTY_TWIML, media_type="application/xml")


@router.get(
    "/v1/customers/{customer_id}/contact-blocks",
    response_model=list[ContactBlockPublic],
    tags=["customers"],
)
def list_contact_blocks(customer_id: int, session: SessionDep, _: Viewer) -> list[ContactBlock]:
    """The channels this customer is not reached on, and why."""
    if session.get(Customer, customer_id) is None:
        raise not_found("customer", customer_id)
    return contacts.list_blocks(session, customer_id)


@router.post(
    "/v1/customers/{customer_id}/contact-blocks",
    status_code=201,
    response_model=list[ContactBlockPublic],
    tags=["customers"],
)
def request_contact_block(
    customer_id: int, body: ContactBlockRequest, session: SessionDep, principal: Specialist
) -> list[ContactBlock]:
    """A customer's own opt-out (one channel) or cease-contact request (every channel), as
    told to a specialist; 409 when it is blocked already. Returns the blocks it made or
    changed."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    made = contacts.request_block(
        session, customer, body.channel, body.reason, body.note, principal.actor
    )
    session.commit()
    log.info(
        "contact block requested",
        extra={
            "customer_id": customer_id,
            "channels": [b.channel for b in made],
            "reason": body.reason,
            "actor": principal.actor,
        },
    )
    return made


@router.delete(
    "/v1/customers/{customer_id}/contact-blocks/{channel}", status_code=204, tags=["customers"]
)
def remove_contact_block(
    customer_id: int, channel: str, session: SessionDep, principal: Specialist
) -> Response:
    """Use the channel again (e.g. the customer gave a new address)."""
    if session.get(Customer, customer_id) is None:
        raise not_found("customer", customer_id)
    if not provider_events.lift_block(session, customer_id, channel, principal.actor):
        raise ApiError(404, "not_found", f"no {channel} block for customer {customer_id}")
    session.commit()
    log.info(
        "contact block removed",
        extra={"customer_id": customer_id, "channel": channel, "actor": principal.actor},
    )
    return Response(status_code=204)
