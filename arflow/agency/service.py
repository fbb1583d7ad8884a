"""Collection agencies: their configuration, an invoice's placement, a recall, and the signed
updates agencies send us (payments they collected, their commission, a case closed or
returned).

An agency's payment is money in like any other: stored once as a ``Payment`` and delivered to
the invoice's workflow through ``api.payments``. A case the agency closes or returns, and a
recall, go to the workflow as the ``agency_ended`` update; the workflow takes the invoice back
and its ``end_placement`` activity records the end. Only when the invoice is already closed
(paid in full, say) and has no workflow any more is the end recorded here, with the same
function the activity uses.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from datetime import UTC
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.agency.placement import (
    BUILTIN_AGENCY,
    PLACED,
    SIGNATURE_VERSION,
    placement_of,
    record_end,
    signature,
)
from arflow.agency.targets import UnsafeTarget, check_endpoint_url, confined_folder
from arflow.config import Settings
from arflow.errors import (
    DomainError,
    Unauthenticated,
    Unavailable,
    conflict,
    not_found,
    unprocessable,
)
from arflow.invoices.service import get_invoice, run_update
from arflow.invoices.timeline import add_event
from arflow.payments import service as payments
from models import Agency, AgencyPlacement, AgencyUpdate, Invoice, Payment
from models.agency import (
    AgencyCreate,
    AgencyPlacementPublic,
    AgencyUpdateAck,
    AgencyUpdateIn,
    AgencyUpdatePublic,
)
from workflows.types import CLOSED_STATUSES, AgencyEndRequest

log = logging.getLogger("arflow.agency")
#: how far an update's ``X-Arflow-Timestamp`` may be from our clock
UPDATE_TOLERANCE_SECONDS = 300


# -- configuration --------------------------------------------------------------------------


def create_agency(session: Session, settings: Settings, body: AgencyCreate) -> Agency:
    """Store a new agency; a new default agency takes over from the previous one. 422 for a
    webhook that is not https (outside development and test) or whose host resolves to an
    address that is not public, and for a drop folder outside the data folder (see
    ``targets``: the worker checks both again before each use)."""
    if body.name.casefold() == BUILTIN_AGENCY:
        raise unprocessable(f"the name {BUILTIN_AGENCY!r} is the built-in drop folder's")
    try:
        if body.endpoint_url is not None:
            check_endpoint_url(
                body.endpoint_url,
                require_https=not settings.is_development,
                allow_loopback=settings.agency_loopback_allowed,
            )
        if body.folder is not None:
            confined_folder(body.folder, settings.data_dir)
    except UnsafeTarget as exc:
        field = "endpoint_url" if body.endpoint_url is not None else "folder"
        raise unprocessable(str(exc), [{"field": field, "message": str(exc)}]) from None
    if body.is_default:
        session.exec(update(Agency).values(is_default=False))
    agency = Agency.model_validate(body.model_dump())
    session.add(agency)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(f"an agency named {body.name!r} already exists") from None
    session.refresh(agency)
    return agency


def list_agencies(session: Session) -> list[Agency]:
    return list(session.exec(select(Agency).order_by(col(Agency.id))).all())


# -- an invoice's placement ---------------------------------------------------------------


def placement_view(session: Session, invoice_id: int) -> AgencyPlacementPublic:
    get_invoice(session, invoice_id)
    placement = placement_of(session, invoice_id)
    if placement is None:
        raise not_found("agency placement of invoice", invoice_id)
    rows = session.exec(
        select(AgencyUpdate)
        .where(AgencyUpdate.invoice_id == invoice_id)
        .order_by(col(AgencyUpdate.received_at), col(AgencyUpdate.id))
    ).all()
    updates = [
        AgencyUpdatePublic(
            update_id=row.update_id,
            kind=row.kind,
            amount_minor=row.amount_minor,
            currency=row.currency,
            payment_id=row.payment_id,
            occurred_at=row.payload.get("occurred_at"),
            note=row.payload.get("note"),
            received_at=row.received_at,
        )
        for row in rows
    ]
    data = placement.model_dump(exclude={"id"})
    return AgencyPlacementPublic(**data, updates=updates)


async def recall(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    reason: str,
    actor: str,
    idempotency_key: str | None,
) -> Invoice:
    """Take the invoice back from its agency: the workflow brings it back in-house and tells
    the agency. 409 when it is not with an agency."""
    get_invoice(session, invoice_id)
    placement = placement_of(session, invoice_id)
    if placement is None:
        raise conflict(f"invoice {invoice_id} was never placed with an agency")
    if placement.status != PLACED:
        raise conflict(f"the placement of invoice {invoice_id} is already {placement.status}")
    request = AgencyEndRequest(outcome="recalled", reason=reason, actor=actor)
    invoice, _ = await run_update(
        session, client, settings, invoice_id, "agency_ended", request, idempotency_key
    )
    return invoice


# -- updates from agencies ------------------------------------------------------------------


def _unauthorized(message: str) -> Unauthenticated:
    return Unauthenticated(message)


def authenticate(
    session: Session,
    name: str | None,
    timestamp: str | None,
    signed: str | None,
    raw: bytes,
    now: float | None = None,
) -> Agency:
    """The agency that signed ``raw``; 401 unless ``X-Arflow-Signature`` is ``v1=<hex of
    HMAC-SHA256(secret, f"{timestamp}.{raw}")>`` with its secret and the timestamp is within
    five minutes of ours."""
    if not name or not timestamp or not signed:
        raise _unauthorized(
            "missing X-Arflow-Agency, X-Arflow-Timestamp or X-Arflow-Signature header"
        )
    agency = session.exec(select(Agency).where(Agency.name == name)).first()
    if agency is None:
        raise _unauthorized(f"unknown agency {name!r}")
    if re.fullmatch(r"[0-9]{1,12}", timestamp) is None:
        raise _unauthorized("X-Arflow-Timestamp must be unix seconds")
    if abs((time.time() if now is None else now) - int(timestamp)) > UPDATE_TOLERANCE_SECONDS:
        raise _unauthorized(f"X-Arflow-Timestamp is more than {UPDATE_TOLERANCE_SECONDS} s off")
    expected = signature(agency.secret, timestamp, raw)  # over the header as sent
    offered = [s.strip() for s in signed.split(",") if s.strip().startswith(SIGNATURE_VERSION)]
    if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in offered):
        raise _unauthorized("signature does not match")
    return agency


async def receive_update(
    session: Session, client: Client, settings: Settings, agency: Agency, body: AgencyUpdateIn
) -> AgencyUpdateAck:
    """Apply one update from ``agency`` (see the module doc); a redelivery changes nothing."""
    assert agency.id is not None
    payload = body.model_dump(mode="json")
    seen = _update_of(session, agency.id, body.update_id)
    if seen is not None:
        return await _redelivered(session, client, settings, agency, seen, payload)
    invoice = session.get(Invoice, body.invoice_id)
    placement = placement_of(session, body.invoice_id)
    if invoice is None or placement is None or placement.agency != agency.name:
        raise conflict(f"invoice {body.invoice_id} is not placed with agency {agency.name!r}")
    row = AgencyUpdate(
        agency_id=agency.id,
        update_id=body.update_id,
        invoice_id=body.invoice_id,
        kind=body.kind,
        amount_minor=body.amount_minor,
        currency=body.currency,
        payload=payload,
    )
    if body.kind in ("payment", "commission"):
        return await _money(session, client, settings, agency, invoice, placement, body, row)
    return await _ended(session, client, settings, agency, invoice, placement, body, row)


class _StoredAlready(Exception):
    """A concurrent delivery of the same update stored it first."""


def _update_of(session: Session, agency_id: int, update_id: str) -> AgencyUpdate | None:
    return session.exec(
        select(AgencyUpdate).where(
            AgencyUpdate.agency_id == agency_id, AgencyUpdate.update_id == update_id
        )
    ).first()


def _ack(session: Session, row: AgencyUpdate, duplicate: bool) -> AgencyUpdateAck:
    placement = placement_of(session, row.invoice_id)
    assert placement is not None
    return AgencyUpdateAck(
        duplicate=duplicate,
        update_id=row.update_id,
        invoice_id=row.invoice_id,
        kind=row.kind,
        payment_id=row.payment_id,
        placement_status=placement.status,
    )


async def _redelivered(
    session: Session,
    client: Client,
    settings: Settings,
    agency: Agency,
    seen: AgencyUpdate,
    payload: dict[str, Any],
) -> AgencyUpdateAck:
    """The same update again: nothing changes. What the first delivery left unfinished
    (Temporal did not answer) is finished now."""
    if seen.payload != payload:
        raise conflict(
            f"update {seen.update_id!r} was already received with different data",
            {"invoice_id": seen.invoice_id, "kind": seen.kind},
        )
    if seen.payment_id is not None:
        payment = session.get(Payment, seen.payment_id)
        assert payment is not None
        await payments.deliver(session, client, settings, payment)
    elif seen.kind in ("closed", "returned"):
        placement = placement_of(session, seen.invoice_id)
        if placement is not None and placement.status == PLACED:
            await _finish_end(session, client, settings, agency, seen)
    return _ack(session, seen, duplicate=True)


async def _money(
    session: Session,
    client: Client,
    settings: Settings,
    agency: Agency,
    invoice: Invoice,
    placement: AgencyPlacement,
    body: AgencyUpdateIn,
    row: AgencyUpdate,
) -> AgencyUpdateAck:
    """A payment the agency collected (applied to the invoice like any payment) or the
    commission it charges (recorded on the placement)."""
    assert invoice.id is not None and placement.id is not None
    if body.currency != invoice.currency:
        raise unprocessable(
            f"the {body.kind} is in {body.currency}, invoice {invoice.id} is in {invoice.currency}"
        )
    amount = body.amount_minor
    payment: Payment | None = None
    column = AgencyPlacement.commission_minor
    try:
        if body.kind == "payment":
            payment, created = payments.store_payment(
                session,
                Payment(
                    event_id=f"agency:{agency.name}:{body.update_id}",
                    invoice_id=invoice.id,
                    amount_minor=amount,
                    currency=invoice.currency,
                    paid_at=body.occurred_at.astimezone(UTC),
                    method="agency",
                    kind="payment",
                    source="agency",
                ),
            )
            if not created:  # the event id is this update's: a concurrent delivery stored it
                raise _StoredAlready(body.update_id)
            row.payment_id = payment.id
            column = AgencyPlacement.collected_minor
        session.add(row)
        # In SQL, not in Python: two updates at once for one placement must both count.
        session.exec(
            update(AgencyPlacement)
            .where(col(AgencyPlacement.id) == placement.id)
            .values({column: column + amount})
        )
        add_event(
            session,
            invoice.id,
            f"agency_{body.kind}",
            {
                "agency": agency.name,
                "update_id": body.update_id,
                "amount_minor": amount,
                "currency": body.currency,
                "occurred_at": body.occurred_at.isoformat(),
                **({"payment_id": payment.id} if payment is not None else {}),
                **({"note": body.note} if body.note else {}),
            },
            actor=f"agency:{agency.name}",
        )
        session.commit()
    except (IntegrityError, _StoredAlready):
        session.rollback()
        return await _concurrent_duplicate(session, client, settings, agency, body)
    session.refresh(placement)
    if payment is not None:
        await payments.deliver(session, client, settings, payment)
    return _ack(session, row, duplicate=False)


async def _ended(
    session: Session,
    client: Client,
    settings: Settings,
    agency: Agency,
    invoice: Invoice,
    placement: AgencyPlacement,
    body: AgencyUpdateIn,
    row: AgencyUpdate,
) -> AgencyUpdateAck:
    """The agency closed or returned the case: the invoice comes back in-house."""
    if placement.status != PLACED:
        raise conflict(f"the placement of invoice {invoice.id} is already {placement.status}")
    # Stored first, so a request that dies half way is finished by the redelivery; taken out
    # again when the workflow refuses, so a refused update leaves nothing behind.
    session.add(row)
    if not _commit_new(session):
        return await _concurrent_duplicate(session, client, settings, agency, body)
    try:
        await _finish_end(session, client, settings, agency, row)
    except DomainError as exc:
        if not isinstance(exc, Unavailable):
            session.rollback()
            session.exec(delete(AgencyUpdate).where(col(AgencyUpdate.id) == row.id))
            session.commit()
        raise
    return _ack(session, row, duplicate=False)


async def _finish_end(
    session: Session, client: Client, settings: Settings, agency: Agency, row: AgencyUpdate
) -> None:
    """End the placement ``row`` (closed or returned) asks for: through the workflow, or, when
    the invoice is already closed (paid in full, say) and has no workflow to decide any more,
    by recording the end here."""
    actor = f"agency:{agency.name}"
    reason = _reason(AgencyUpdateIn.model_validate(row.payload))
    invoice = get_invoice(session, row.invoice_id)
    session.refresh(invoice)
    if invoice.status in CLOSED_STATUSES:
        placement = placement_of(session, row.invoice_id)
        record_end(session, row.invoice_id, placement, row.kind, reason, actor)
        _commit_new(session)  # False: a concurrent delivery recorded it
        return
    request = AgencyEndRequest(outcome=row.kind, reason=reason, actor=actor)
    key = f"agency-{row.agency_id}-{row.update_id}"  # the update's id: applied once
    await run_update(session, client, settings, row.invoice_id, "agency_ended", request, key)


def _reason(body: AgencyUpdateIn) -> str:
    return body.note or f"the agency {body.kind} the case"


def _commit_new(session: Session) -> bool:
    """Commit; False when a concurrent delivery of the same update got there first."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


async def _concurrent_duplicate(
    session: Session, client: Client, settings: Settings, agency: Agency, body: AgencyUpdateIn
) -> AgencyUpdateAck:
    assert agency.id is not None
    seen = _update_of(session, agency.id, body.update_id)
    if seen is None:
        raise Unavailable("the update could not be stored; send it again", code="retry")
    return await _redelivered(session, client, settings, agency, seen, body.model_dump(mode="json"))
