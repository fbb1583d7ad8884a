"""Call tasks: a policy step on the ``call`` channel puts a call on the worklist; the
specialist records how it went, and a promise made on the phone goes to the workflow."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio.client import Client

from arflow.config import Settings
from arflow.errors import conflict, not_found
from arflow.invoices.service import get_invoice, run_update
from arflow.invoices.tasks import mark_closed
from arflow.invoices.timeline import add_event
from models import ContactBlock, Invoice, OutboxMessage, Task
from models.collection import CallOutcome
from models.types import utcnow
from workflows.types import PromiseRequest

# How the call's outbox row ends: a conversation is a delivery, a wrong number a failure.
ROW_STATUS = {"reached": "delivered", "wrong_number": "failed"}


def call_capped(
    calls: Sequence[Task], now: datetime, cooldown: timedelta, per_week: int
) -> tuple[str, datetime] | None:
    """Whether Reg F's call rules hold another call attempt on an invoice back at ``now``,
    given its call tasks (the attempts, oldest first): no call within ``cooldown`` of a
    conversation, at most ``per_week`` attempts in any 7 days (0: no cap). The reason and
    when a call is allowed again; None when one may be placed. Pure: the send path and the
    worklist ask the same question."""
    for call in reversed(calls):
        reached_at = call.data.get("reached_at")
        if reached_at and cooldown:
            free = datetime.fromisoformat(reached_at) + cooldown
            if free > now:
                return "a conversation took place recently", free
            break
    if per_week:
        week = [c for c in calls if c.created_at > now - timedelta(days=7)]
        if len(week) >= per_week:
            return (
                f"{len(week)} call attempts in 7 days (cap {per_week})",
                week[0].created_at + timedelta(days=7),
            )
    return None


def _open_call_task(session: Session, task_id: int, body: CallOutcome) -> Task:
    task = session.get(Task, task_id)
    if task is None or task.kind != "call":
        raise not_found("call task", task_id)
    if task.status != "open":
        raise conflict(f"call task {task_id} already has an outcome ({task.data.get('outcome')})")
    if body.promise is not None and body.outcome != "reached":
        raise conflict("a promise can only be recorded on a call that reached the customer")
    return task


async def record_outcome(
    session: Session,
    client: Client,
    settings: Settings,
    task_id: int,
    body: CallOutcome,
    actor: str,
) -> tuple[Task, Invoice]:
    """Record the call: the task is done, the call's outbox row delivered (reached) or failed
    (wrong number, which also blocks calls and SMS to the customer), a ``call_outcome`` event
    on the timeline; a promise made on the call goes to the workflow. Returns the task and
    the invoice as they are now."""
    task = _open_call_task(session, task_id, body)
    invoice = get_invoice(session, task.invoice_id)
    now = utcnow()
    mark_closed(task, body.outcome, actor, body.note or None, now)
    task.data = task.data | {
        "outcome": body.outcome,
        "by": actor,
        "at": now.isoformat(),
        **({"reached_at": now.isoformat()} if body.outcome == "reached" else {}),
        **({"note": body.note} if body.note else {}),
    }
    session.add(task)
    row = session.get(OutboxMessage, task.data.get("outbox_id") or 0)
    if row is not None and body.outcome in ROW_STATUS:
        row.status, row.updated_at = ROW_STATUS[body.outcome], now
        session.add(row)
    if body.outcome == "wrong_number":
        _block_number(session, invoice, task)
    add_event(
        session,
        task.invoice_id,
        "call_outcome",
        {"task_id": task_id, "outcome": body.outcome, "step": task.data.get("step")},
        actor=actor,
        dedupe_key=f"call:{task_id}",
    )
    session.commit()
    if body.promise is not None:
        invoice, _ = await run_update(
            session,
            client,
            settings,
            task.invoice_id,
            "promise",
            PromiseRequest(
                promised_date=body.promise.promised_date.isoformat(),
                amount_minor=body.promise.amount_minor,
                actor=actor,
                note=body.note or "promised on the phone",
            ),
            f"call-{task_id}-promise",
        )
    session.refresh(task)
    return task, invoice


def _block_number(session: Session, invoice: Invoice, task: Task) -> None:
    for channel in ("call", "sms"):
        exists = session.exec(
            select(ContactBlock).where(
                ContactBlock.customer_id == invoice.customer_id, ContactBlock.channel == channel
            )
        ).first()
        if exists is None:
            session.add(
                ContactBlock(
                    customer_id=invoice.customer_id,
                    channel=channel,
                    address=task.data.get("phone"),
                    reason="wrong_number",
                    source="specialist",
                    detail=f"call task {task.id}",
                )
            )
    try:
        session.flush()
    except IntegrityError:  # blocked concurrently: the block stands either way
        session.rollback()
