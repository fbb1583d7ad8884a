"""Placing an invoice with its agency and ending a placement: the database work behind the
``escalate`` and ``end_placement`` activities.

Every adapter call is idempotent per invoice (a retry rewrites the same file, or sends the
same idempotency key), so the caller may retry as often as it likes. Any failure raises; the
first failure for an invoice also puts a task on the specialists' worklist, closed again once
the call goes through. Which agency: the one the ladder stage names; else the active default
one, else the first active one; with none configured, the built-in drop folder
``file-drop``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from arflow.agency.placement import (
    BUILTIN_AGENCY,
    END_OUTCOMES,
    ENDED_KEY,
    PLACED,
    PLACEMENT_FAILED,
    RECALL_FAILED,
    AdapterFactory,
    PlacementRequest,
    RecallRequest,
    placement_of,
    record_end,
)
from arflow.errors import Invalid, not_found
from arflow.invoices.tasks import mark_closed, new_task
from arflow.invoices.timeline import (
    WORKFLOW_ACTOR,
    add_event,
    already_recorded,
    commit_once,
    record_skipped,
    set_next_action,
)
from models import Agency, AgencyPlacement, Customer, Invoice, Task
from models.collection import CAUSE_ENDED
from models.types import utcnow
from workflows.types import ESCALATED, EndPlacementInput, EscalateInput

log = logging.getLogger("arflow.agency")
T = TypeVar("T")


def _invoice(session: Session, invoice_id: int) -> Invoice:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise not_found("invoice", invoice_id)
    return invoice


def escalate(
    session: Session,
    adapter_for: AdapterFactory,
    inp: EscalateInput,
    placed_at: datetime | None = None,
) -> None:
    """Hand the invoice to its agency and record the placement (once). ``NotFound`` when the
    invoice does not exist. ``placed_at``: the same on every attempt (the activity's first
    scheduled time), so a retry sends the agency the same body under the same key."""
    invoice = _invoice(session, inp.invoice_id)
    if placement_of(session, inp.invoice_id) is not None:
        return  # a retry of an attempt that committed
    customer = session.get(Customer, invoice.customer_id)
    assert customer is not None
    adapter = _guarded(
        session,
        inp.invoice_id,
        PLACEMENT_FAILED,
        inp.agency or "default",
        lambda: adapter_for(agency_to_place_with(session, inp.agency)),
    )
    now = utcnow()
    placed_at = placed_at or now
    request = PlacementRequest(
        invoice_id=inp.invoice_id,
        invoice_number=invoice.number,
        customer_external_id=customer.external_id,
        customer_name=customer.name,
        customer_email=customer.email,
        customer_phone=customer.phone,
        customer_address=customer.address,
        amount_minor=inp.balance_minor,
        currency=inp.currency,
        due_date=invoice.due_date.isoformat(),
        placed_at=placed_at,
        stage=inp.stage,
    )
    reference = _guarded(
        session,
        inp.invoice_id,
        PLACEMENT_FAILED,
        adapter.name,
        lambda: adapter.place(request),
    )
    session.add(
        AgencyPlacement(
            invoice_id=inp.invoice_id,
            agency=adapter.name,
            stage=inp.stage,
            status=PLACED,
            amount_minor=inp.balance_minor,
            currency=inp.currency,
            reference=reference,
            placed_at=placed_at,
        )
    )
    record_skipped(session, inp.invoice_id, inp.skipped, "escalation was already due")
    add_event(
        session,
        inp.invoice_id,
        "escalated",
        {
            "agency": adapter.name,
            "stage": inp.stage,
            "amount_minor": inp.balance_minor,
            "reference": reference,
        },
        dedupe_key="status:escalated",
    )
    invoice.status = ESCALATED
    invoice.escalation_stage = inp.stage
    invoice.updated_at = now
    set_next_action(invoice, None)
    session.add(invoice)
    _settle_tasks(session, inp.invoice_id, PLACEMENT_FAILED)
    commit_once(session, inp.invoice_id, "status:escalated")


def check_outcome(outcome: str) -> None:
    """``Invalid`` unless ``outcome`` is one a placement can end with."""
    if outcome not in END_OUTCOMES:
        raise Invalid(f"unknown placement outcome {outcome!r}")


def end_placement(
    session: Session,
    adapter_for: AdapterFactory,
    inp: EndPlacementInput,
    recalled_at: datetime | None = None,
) -> None:
    """The agency no longer works the invoice: record it (once) and, on a recall
    (``notify``), tell the agency first. ``NotFound`` when the invoice does not exist (the
    outcome is checked first, with ``check_outcome``). ``recalled_at``: as ``placed_at`` of
    ``escalate``."""
    if already_recorded(session, inp.invoice_id, ENDED_KEY):
        return  # a retry of an attempt that committed
    invoice = _invoice(session, inp.invoice_id)
    placement = placement_of(session, inp.invoice_id)
    if placement is None:
        log.warning("invoice %s ends a placement it never had", inp.invoice_id)
    elif inp.notify and placement.status == PLACED:
        name, reference = placement.agency, placement.reference
        request = RecallRequest(
            invoice_id=inp.invoice_id,
            invoice_number=invoice.number,
            reference=reference,
            reason=inp.reason,
            recalled_at=recalled_at or utcnow(),
        )
        _guarded(
            session,
            inp.invoice_id,
            RECALL_FAILED,
            name,
            lambda: adapter_for(agency_named(session, name)).recall(request),
        )
        _settle_tasks(session, inp.invoice_id, RECALL_FAILED)
    record_end(session, inp.invoice_id, placement, inp.outcome, inp.reason, inp.actor)
    commit_once(session, inp.invoice_id, ENDED_KEY)


# -- helpers --------------------------------------------------------------------------------


def agency_to_place_with(session: Session, name: str | None) -> Agency | None:
    """The agency a stage names (it must be active); None: the active default agency,
    else the first active one, else None (the built-in drop folder).

    An unknown or inactive agency raises a retryable ``ApplicationError`` of type
    ``AgencyUnavailable`` (as the adapter factory does for a misconfigured one): the
    worklist task records the error's class name, which stays what it was."""
    if name is not None:
        agency = session.exec(select(Agency).where(Agency.name == name)).first()
        if agency is None and name == BUILTIN_AGENCY:
            return None
        if agency is None or not agency.active:
            state = "unknown" if agency is None else "not active"
            raise ApplicationError(f"agency {name!r} is {state}", type="AgencyUnavailable")
        return agency
    return session.exec(
        select(Agency)
        .where(col(Agency.active).is_(True))
        .order_by(col(Agency.is_default).desc(), col(Agency.id))
    ).first()


def agency_named(session: Session, name: str) -> Agency | None:
    """The agency a placement went to (active or not); None: the built-in drop folder."""
    agency = session.exec(select(Agency).where(Agency.name == name)).first()
    if agency is None and name != BUILTIN_AGENCY:
        raise ApplicationError(f"agency {name!r} is unknown", type="AgencyUnavailable")
    return agency


def _guarded(
    session: Session, invoice_id: int, task_kind: str, agency: str, call: Callable[[], T]
) -> T:
    """``call()``; when it fails, the first failure for the invoice puts a ``task_kind``
    task on the worklist, then the error goes to the caller (Temporal retries)."""
    try:
        return call()
    except Exception as exc:
        session.rollback()
        log.warning("agency %s, invoice %s: %s", agency, invoice_id, exc)
        _flag(session, invoice_id, task_kind, agency, exc)
        raise


def _flag(session: Session, invoice_id: int, kind: str, agency: str, exc: Exception) -> None:
    seen = session.exec(
        select(Task.id).where(Task.invoice_id == invoice_id, Task.kind == kind)
    ).first()
    if seen is not None:
        return
    new_task(
        session,
        invoice_id,
        kind,
        {"agency": agency, "error": f"{type(exc).__name__}: {exc}"[:500]},
        due_at=utcnow(),
    )
    session.commit()


def _settle_tasks(session: Session, invoice_id: int, kind: str) -> None:
    """The call went through: a failure task still open is done (the caller commits)."""
    for task in session.exec(
        select(Task).where(Task.invoice_id == invoice_id, Task.kind == kind, Task.status == "open")
    ).all():
        mark_closed(task, CAUSE_ENDED, WORKFLOW_ACTOR, "the agency took it on a later attempt")
        task.data = task.data | {"resolved": "the agency took it on a later attempt"}
        session.add(task)
