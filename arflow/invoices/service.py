"""What the routes call: one function per action, each a short story in the collector's words."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import TypeVar

from sqlalchemy import and_, not_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select
from temporalio.client import Client

from arflow import gateway
from arflow.access import Principal
from arflow.config import Settings
from arflow.customers.segments import policy_for_customer
from arflow.errors import DomainError, conflict, forbidden, not_found, unprocessable
from arflow.invoices.arms import Run, run_for
from arflow.invoices.commands import record_command
from arflow.invoices.timeline import add_event, set_next_action
from arflow.policies import versions
from arflow.policies.service import ensure_default_policy
from models import Customer, DunningPolicy, Invoice, InvoiceEvent, OutboxMessage, Segment
from models.invoice import INVOICE_STATUSES, InvoiceCreate, InvoicePublic
from models.policy import KEY_PATTERN
from models.types import utcnow
from workflows.confirmations import CONFIRM_PREFIX
from workflows.schedule import build_schedule, default_due_at, escalation_at, next_action
from workflows.search import SEGMENT as SEGMENT_KEY
from workflows.search import STAGE as STAGE_KEY
from workflows.search import STATUS as STATUS_KEY
from workflows.types import (
    CLOSED_STATUSES,
    CancelRequest,
    InvoiceState,
    InvoiceWorkflowInput,
    PolicyChangeRequest,
    PolicySpec,
)

T = TypeVar("T", Customer, Invoice)


# -- invoices -------------------------------------------------------------------


# Fields added after invoices were first stored: left out of the hash when unset, so a
# request stored before they existed still hashes the same.
_LATER_FIELDS = ("discount_percent", "discount_days", "lines")


def request_hash(body: InvoiceCreate) -> str:
    data = body.model_dump(mode="json")
    for name in _LATER_FIELDS:
        if data.get(name) is None:
            data.pop(name, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_referenced(
    session: Session, model: type[T], row_id: int | None, external_id: str | None, what: str
) -> T:
    """The row a request names by our id or by its external id; 422 when there is none."""
    if row_id is not None:
        found = session.get(model, row_id)
    else:
        stmt = select(model).where(model.external_id == external_id)
        found = session.exec(stmt).first()
    if found is None:
        raise unprocessable(f"unknown {what} {row_id if row_id is not None else external_id}")
    return found


def _resolve_policy(
    session: Session, body: InvoiceCreate, customer: Customer | None = None
) -> DunningPolicy:
    """The policy the invoice names; else its customer's segment's; else the default."""
    if body.policy_id is not None:
        policy = session.get(DunningPolicy, body.policy_id)
        if policy is None:
            raise unprocessable(f"unknown policy {body.policy_id}")
        return policy
    if body.policy_name is not None:
        policy = session.exec(
            select(DunningPolicy).where(DunningPolicy.name == body.policy_name)
        ).first()
        if policy is None:
            raise unprocessable(f"unknown policy {body.policy_name!r}")
        return policy
    if customer is not None:
        found = policy_for_customer(session, customer)
        if found is not None:
            return found
    return ensure_default_policy(session)


def running_spec(session: Session, invoice: Invoice, policy: DunningPolicy) -> PolicySpec:
    """The spec of the policy version ``invoice`` runs (recorded on it): a workflow started
    again (a start that failed, a reopened invoice) goes on with that version, not a newer
    one published meanwhile, nor the champion's when it is on a challenger."""
    if invoice.policy_version is None or invoice.policy_version == policy.version:
        return policy.spec()
    assert policy.id is not None
    return versions.load_spec(session, policy.id, invoice.policy_version)


def named(body: InvoiceCreate) -> bool:
    """Whether the request names its policy (else it follows its customer's segment)."""
    return body.policy_id is not None or body.policy_name is not None


def workflow_input(
    invoice: Invoice,
    customer: Customer,
    policy: DunningPolicy,
    indexed: bool = False,
    external_delivery: bool = False,
    spec: PolicySpec | None = None,
) -> InvoiceWorkflowInput:
    """The workflow's start input; ``spec``: the policy version the invoice runs (default: the
    policy's current one)."""
    assert invoice.id is not None
    return InvoiceWorkflowInput(
        invoice_id=invoice.id,
        currency=invoice.currency,
        amount_minor=invoice.amount_minor,
        balance_minor=invoice.balance_minor,
        due_at=invoice.due_at,
        timezone=customer.timezone,
        policy=spec or policy.spec(),
        discount_minor=invoice.discount_minor,
        discount_until=invoice.discount_until,
        segment=customer.segment,
        country=customer.country,
        search_attributes=indexed,
        external_delivery=external_delivery,
    )


def new_invoice(
    body: InvoiceCreate,
    customer: Customer,
    policy: DunningPolicy,
    digest: str,
    run: Run | None = None,
) -> Invoice:
    """The invoice row stored for ``body`` (next action and discount set), by the API and the
    bulk import alike; ``run``: the version and experiment arm it joins (``arms.run_for``).
    The fields with a default factory are given: Pydantic inspects a factory's signature on
    every use (``list``: 0.4 ms a row, measured in the bulk import)."""
    due_at = (
        body.due_at.astimezone(UTC)
        if body.due_at
        else default_due_at(body.due_date, customer.timezone)
    )
    now = utcnow()
    invoice = Invoice(
        external_id=body.external_id,
        number=body.number,
        currency=body.currency,
        issued_on=body.issued_on,
        due_date=body.due_date,
        due_at=due_at,
        customer_id=customer.id or 0,
        policy_id=policy.id or 0,
        policy_version=policy.version,
        amount_minor=body.amount_minor,
        balance_minor=body.amount_minor,
        request_hash=digest,
        lines=[line.model_dump(mode="json") for line in body.lines or []],
        created_at=now,
        updated_at=now,
    )
    if body.discount_percent is not None and body.discount_days is not None:
        invoice.discount_bp = int(body.discount_percent * 100)
        invoice.discount_days = body.discount_days
        invoice.discount_minor = discount_minor(body.amount_minor, invoice.discount_bp)
        invoice.discount_until = default_due_at(
            body.issued_on + timedelta(days=body.discount_days), customer.timezone
        )
    spec = policy.spec() if run is None else run.spec
    if run is not None:
        invoice.policy_version = spec.version
    if run is not None and run.arm is not None:
        invoice.experiment_id = run.experiment_id
        invoice.experiment_arm = run.arm
    schedule = build_schedule(spec, due_at, customer.timezone, customer.country)
    set_next_action(
        invoice,
        next_action(schedule, set(), escalation_at(spec, due_at, customer.timezone), False),
    )
    return invoice


def record_created(session: Session, invoice: Invoice, policy: DunningPolicy, actor: str) -> None:
    """The ``created`` timeline event of a new invoice."""
    assert invoice.id is not None
    data: dict[str, object] = {
        "amount_minor": invoice.amount_minor,
        "currency": invoice.currency,
        "due_at": invoice.due_at.isoformat(),
        "policy": policy.name,
    }
    if invoice.experiment_arm is not None:
        data["experiment"] = {"id": invoice.experiment_id, "arm": invoice.experiment_arm}
    add_event(
        session,
        invoice.id,
        "created",
        data,
        actor=actor,
        dedupe_key="created",
    )


async def create_invoice(
    session: Session, client: Client, settings: Settings, body: InvoiceCreate, actor: str
) -> tuple[Invoice, bool]:
    """Store the invoice and start its workflow. Idempotent on external_id."""
    digest = request_hash(body)
    existing = session.exec(select(Invoice).where(Invoice.external_id == body.external_id)).first()
    if existing is None:
        customer = find_referenced(
            session, Customer, body.customer_id, body.customer_external_id, "customer"
        )
        run = run_for(session, customer, _resolve_policy(session, body, customer), named(body))
        invoice = new_invoice(body, customer, run.policy, digest, run)
        session.add(invoice)
        try:
            session.flush()
            record_created(session, invoice, run.policy, actor)
            session.commit()
        except IntegrityError:
            session.rollback()
            existing = session.exec(
                select(Invoice).where(Invoice.external_id == body.external_id)
            ).first()
            if existing is None:
                raise
        else:
            indexed = await gateway.search_attributes_ready(client, settings)
            await gateway.start_invoice(
                client,
                settings,
                workflow_input(
                    invoice, customer, run.policy, indexed, settings.external_delivery, run.spec
                ),
            )
            return invoice, True

    if existing.request_hash != digest:
        raise conflict(
            f"invoice {body.external_id!r} already exists with different data",
            {"invoice_id": existing.id},
        )
    # Same request again: make sure its workflow runs (heals a start that failed before).
    if existing.status not in CLOSED_STATUSES:
        owner = session.get(Customer, existing.customer_id)
        rules = session.get(DunningPolicy, existing.policy_id)
        assert owner is not None and rules is not None
        indexed = await gateway.search_attributes_ready(client, settings)
        await gateway.start_invoice(
            client,
            settings,
            workflow_input(
                existing,
                owner,
                rules,
                indexed,
                settings.external_delivery,
                running_spec(session, existing, rules),
            ),
        )
    return existing, False


def discount_minor(amount_minor: int, basis_points: int) -> int:
    """The early-payment discount, rounded half up to the minor unit (exact integers)."""
    return (amount_minor * basis_points + 5000) // 10000


def public(invoice: Invoice, settings: Settings) -> InvoicePublic:
    """An invoice as the API shows it, with its workflow id and pay link."""
    assert invoice.id is not None
    return InvoicePublic.of(
        invoice,
        settings.workflow_id(invoice.id),
        settings.pay_url(invoice.id, invoice.number, invoice.external_id),
    )


def get_invoice(session: Session, invoice_id: int) -> Invoice:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise not_found("invoice", invoice_id)
    return invoice


def list_invoices(
    session: Session,
    status: str | None,
    customer_id: int | None,
    overdue: bool | None,
    limit: int,
    offset: int,
    collector: str | None = None,
    hold: str | None = None,
    stage: str | None = None,
    segment: str | None = None,
    ids: list[int] | None = None,
) -> tuple[list[Invoice], int]:
    stmt = select(Invoice)
    if ids is not None:
        stmt = stmt.where(col(Invoice.id).in_(ids))
    if stage is not None:
        stmt = stmt.where(Invoice.stage == stage)
    if segment is not None:
        stmt = stmt.join(Customer, col(Customer.id) == col(Invoice.customer_id)).where(
            Customer.segment == segment
        )
    if collector is not None:
        stmt = stmt.where(Invoice.collector == collector)
    if hold is not None:
        stmt = stmt.where(Invoice.hold == hold)
    if status is not None:
        stmt = stmt.where(Invoice.status == status)
    if customer_id is not None:
        stmt = stmt.where(Invoice.customer_id == customer_id)
    if overdue is not None:
        late = and_(col(Invoice.due_at) < utcnow(), col(Invoice.status).in_(("open", "escalated")))
        stmt = stmt.where(late if overdue else not_(late))
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(col(Invoice.id)).offset(offset).limit(limit)).all()
    return list(rows), int(total)


_STEP_KEY = re.compile(KEY_PATTERN)


def _visibility_filters(
    session: Session, status: str | None, stage: str | None, segment: str | None
) -> None:
    """Refuse values the workflows never carry, before they reach a visibility query: a
    status outside ``INVOICE_STATUSES``, a stage that is not a step key, a segment no customer
    or segment rule has (a quote or backslash in them broke the query, whose error text the
    client then read)."""
    problems = []
    if status is not None and status not in INVOICE_STATUSES:
        problems.append({"field": "status", "message": f"unknown status {status!r}"})
    if stage is not None and not _STEP_KEY.fullmatch(stage):
        problems.append(
            {"field": "stage", "message": "a reminder step key: lowercase letters, digits, _ -"}
        )
    if segment is not None:
        known = (
            session.exec(
                select(Customer.segment).where(Customer.segment == segment).limit(1)
            ).first()
            or session.exec(select(Segment.name).where(Segment.name == segment)).first()
        )
        if known is None:
            problems.append({"field": "segment", "message": f"unknown segment {segment!r}"})
    if problems:
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise unprocessable(summary, problems)


def _quoted(value: str) -> str:
    """A visibility query string literal (backslash and double quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def indexed_invoice_ids(
    session: Session,
    client: Client,
    settings: Settings,
    status: str | None,
    stage: str | None,
    segment: str | None,
    limit: int,
) -> list[int]:
    """Invoice ids found through Temporal visibility by the workflows' search attributes."""
    _visibility_filters(session, status, stage, segment)
    clauses = ["WorkflowType = 'InvoiceWorkflow'"]
    for key, value in ((STATUS_KEY, status), (STAGE_KEY, stage), (SEGMENT_KEY, segment)):
        if value is not None:
            clauses.append(f"{key.name} = {_quoted(value)}")
    prefix = f"{settings.workflow_id_prefix}invoice-"
    clauses.append(f"WorkflowId STARTS_WITH {_quoted(prefix)}")
    ids: list[int] = []
    async for workflow_id in gateway.list_workflow_ids(client, " AND ".join(clauses), limit):
        suffix = workflow_id.removeprefix(prefix)
        if suffix.isdigit() and int(suffix) not in ids:
            ids.append(int(suffix))
    return ids


def timeline(session: Session, invoice_id: int) -> list[InvoiceEvent]:
    get_invoice(session, invoice_id)
    stmt = (
        select(InvoiceEvent)
        .where(InvoiceEvent.invoice_id == invoice_id)
        .order_by(col(InvoiceEvent.at), col(InvoiceEvent.id))
    )
    return list(session.exec(stmt).all())


async def run_update(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    update: str,
    request: object,
    idempotency_key: str | None = None,
    update_id: str | None = None,
) -> tuple[Invoice, InvoiceState]:
    """Send a specialist action to the invoice's workflow as an update and wait for its answer.

    The workflow's validator or handler refuses with a reason: 409 for the invoice's state,
    422 for the request. With an ``Idempotency-Key``, the key is the update's id, so a double
    click (or a retry) is applied once and answered with the first outcome. ``update_id``: an
    id of our own instead (outside the keys' ``update:key`` space, so no key can take it).
    The request is recorded first (``record_command``): the workflow applies no update that
    carries money or state unless it was recorded so, i.e. none sent to Temporal past this
    function.
    """
    request = await asyncio.to_thread(_command_for, session, invoice_id, update, request)
    state = await gateway.update_invoice(
        client,
        settings,
        invoice_id,
        update,
        request,
        update_id or gateway.idempotent_update_id(update, idempotency_key),
    )
    return await asyncio.to_thread(_reloaded, session, invoice_id), state


# The database steps around an update run in a thread: on SQLite a write may wait for the lock
# (busy_timeout 30 s), and on the event loop that wait stopped every other request.


def _command_for(session: Session, invoice_id: int, update: str, request: object) -> object:
    invoice = get_invoice(session, invoice_id)
    if invoice.status in CLOSED_STATUSES:
        raise conflict(f"invoice {invoice_id} is already {invoice.status}")
    return record_command(session, invoice_id, update, request)


def _reloaded(session: Session, invoice_id: int) -> Invoice:
    session.expire_all()
    return get_invoice(session, invoice_id)


#: Outbox states of a message that reached (or may have reached) the customer.
_NOT_SENT = ("queued", "blocked", "failed")


def reminder_sent(session: Session, invoice_id: int) -> bool:
    """Whether any reminder step of the invoice went out: a ``reminder_sent`` event on its
    timeline, or an outbox message past ``queued`` that was not blocked or failed (one in
    flight counts: the customer may have it)."""
    event = session.exec(
        select(InvoiceEvent.id).where(
            InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.kind == "reminder_sent"
        )
    ).first()
    if event is not None:
        return True
    message = session.exec(
        select(OutboxMessage.id).where(
            OutboxMessage.invoice_id == invoice_id,
            col(OutboxMessage.status).not_in(_NOT_SENT),
            # a confirmation of what the customer asked for is no reminder
            col(OutboxMessage.step_key).not_like(f"{CONFIRM_PREFIX}%"),
        )
    ).first()
    return message is not None


async def cancel_invoice(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    reason: str,
    who: Principal,
) -> Invoice:
    """Cancel the invoice: its debt leaves the reports, so once a reminder went out only an
    admin may (before that, a specialist may undo an invoice issued in error). 403 otherwise."""
    get_invoice(session, invoice_id)
    if not who.is_admin and reminder_sent(session, invoice_id):
        raise forbidden(
            f"invoice {invoice_id} had a reminder sent: cancelling it needs the admin role"
        )
    request = CancelRequest(reason=reason, actor=who.actor)
    invoice, state = await run_update(session, client, settings, invoice_id, "cancel", request)
    if state.status != "cancelled":
        raise conflict(f"invoice {invoice_id} became {state.status} before it could be cancelled")
    return invoice


async def update_each(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_ids: list[int],
    update: str,
    request_for: Callable[[int], object],
    after: Callable[[Invoice, InvoiceState], None] | None = None,
) -> tuple[dict[int, InvoiceState], dict[int, DomainError]]:
    """Send update ``update`` (``request_for(invoice_id)``, through ``run_update``) to each
    invoice's workflow in turn, calling ``after`` on each one that took it. Returns the states
    of those that took it and the errors of those that did not: ``Unavailable`` when Temporal
    did not answer, ``NoWorkflow`` or a refusal when the invoice is closed or closing."""
    states: dict[int, InvoiceState] = {}
    failed: dict[int, DomainError] = {}
    for invoice_id in invoice_ids:
        try:
            invoice, state = await run_update(
                session, client, settings, invoice_id, update, request_for(invoice_id)
            )
        except DomainError as exc:
            failed[invoice_id] = exc
            continue
        states[invoice_id] = state
        if after is not None:
            after(invoice, state)
    return states, failed


async def switch_policies(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_ids: list[int],
    policy_name: str,
    actor: str,
    reason: str,
    segment: str | None = None,
) -> dict[int, str]:
    """Have each invoice's workflow follow ``policy_name`` from its next step on; the invoices
    whose workflow refused (closed meanwhile) or did not answer, with the reason."""
    policy = session.exec(select(DunningPolicy).where(DunningPolicy.name == policy_name)).first()
    if policy is None:
        return dict.fromkeys(invoice_ids, f"policy {policy_name!r} not found")
    spec = policy.spec()

    def switched(invoice: Invoice, _: InvoiceState) -> None:
        _store_policy(session, invoice, policy)

    _, failed = await update_each(
        session,
        client,
        settings,
        invoice_ids,
        "change_policy",
        lambda _: PolicyChangeRequest(policy=spec, actor=actor, reason=reason, segment=segment),
        switched,
    )
    return {invoice_id: exc.message for invoice_id, exc in failed.items()}


async def switch_policy(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    policy: DunningPolicy,
    actor: str,
    reason: str,
) -> Invoice:
    """Have the invoice's workflow follow ``policy`` from its next step on, and store it as
    the invoice's policy once the workflow took it. Raises what the workflow refused."""
    request = PolicyChangeRequest(policy=policy.spec(), actor=actor, reason=reason)
    invoice, _ = await run_update(session, client, settings, invoice_id, "change_policy", request)
    _store_policy(session, invoice, policy)
    return invoice


def _store_policy(session: Session, invoice: Invoice, policy: DunningPolicy) -> None:
    invoice.policy_id = policy.id or invoice.policy_id
    invoice.policy_version = policy.version
    session.add(invoice)
    session.commit()
