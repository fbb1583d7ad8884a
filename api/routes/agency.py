"""Collection agencies: configuration (admin), an invoice's placement and its recall
(specialists), and the signed updates agencies send (no API key: the agency's signature)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import ValidationError

from api.deps import Admin, IdempotencyKey, SessionDep, SettingsDep, Specialist, TemporalDep, Viewer
from api.errors import ApiError, _describe
from api.idempotency import IdempotentRoute
from arflow.agency import service as agency
from arflow.invoices import service as services
from models.agency import (
    AgencyCreate,
    AgencyPlacementPublic,
    AgencyPublic,
    AgencyUpdateAck,
    AgencyUpdateIn,
)
from models.collection import ReasonBody
from models.invoice import InvoicePublic

router = APIRouter(prefix="/v1", tags=["agencies"], route_class=IdempotentRoute)
MAX_UPDATE_BYTES = 64 * 1024  # read before the signature is checked: keep it small


@router.post("/agencies", response_model=AgencyPublic, status_code=201)
def create_agency(body: AgencyCreate, session: SessionDep, _: Admin) -> AgencyPublic:
    """A webhook agency needs ``endpoint_url``, a file agency a ``folder``; ``secret`` signs
    what we send it and what it sends us."""
    return AgencyPublic.model_validate(agency.create_agency(session, body))


@router.get("/agencies", response_model=list[AgencyPublic])
def list_agencies(session: SessionDep, _: Viewer) -> list[AgencyPublic]:
    return [AgencyPublic.model_validate(a) for a in agency.list_agencies(session)]


@router.get("/invoices/{invoice_id}/agency", response_model=AgencyPlacementPublic)
def get_placement(invoice_id: int, session: SessionDep, _: Viewer) -> AgencyPlacementPublic:
    """The invoice's placement with an agency and the updates the agency sent; 404 if it was
    never placed."""
    return agency.placement_view(session, invoice_id)


@router.post("/invoices/{invoice_id}/agency/recall", response_model=InvoicePublic)
async def recall(
    invoice_id: int,
    body: ReasonBody,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    who: Specialist,
    key: IdempotencyKey = None,
) -> InvoicePublic:
    """Take the invoice back from its agency (the agency is told); dunning goes on in-house."""
    invoice = await agency.recall(
        session, client, settings, invoice_id, body.reason, who.actor, key
    )
    return services.public(invoice, settings)


async def _capped_body(request: Request) -> bytes:
    """The raw body, read before the signature can be checked: at most MAX_UPDATE_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPDATE_BYTES:
            raise ApiError(413, "too_large", f"an update is at most {MAX_UPDATE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


AgencyName = Annotated[str | None, Header(alias="X-Arflow-Agency")]
Timestamp = Annotated[str | None, Header(alias="X-Arflow-Timestamp")]
Signature = Annotated[str | None, Header(alias="X-Arflow-Signature")]


@router.post(
    "/agency/updates",
    response_model=AgencyUpdateAck,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": AgencyUpdateIn.model_json_schema()}},
        }
    },
)
async def agency_update(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    name: AgencyName = None,
    timestamp: Timestamp = None,
    signed: Signature = None,
) -> AgencyUpdateAck:
    """An agency's payment, commission, or closed/returned case. Signed by the agency:
    ``X-Arflow-Agency``, ``X-Arflow-Timestamp`` (unix seconds, within 5 minutes) and
    ``X-Arflow-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``. The same
    ``update_id`` again answers ``"duplicate": true`` and changes nothing."""
    raw = await _capped_body(request)
    found = agency.authenticate(session, name, timestamp, signed, raw)
    try:
        body = AgencyUpdateIn.model_validate_json(raw)
    except ValidationError as exc:
        details = _describe(json.loads(exc.json()))
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ApiError(422, "invalid", summary, details) from None
    return await agency.receive_update(session, client, settings, found, body)
