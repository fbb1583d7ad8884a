"""Worklist tasks: how one is created (with its default owner), and how it closes itself
when its cause ends.

Every task is created by ``new_task``: its ``assignee`` is the invoice's collector, else the
customer's assigned collector, else nobody.

A task asks a specialist to look at something: a dispute past its SLA, a message whose
delivery is uncertain, a step no channel could take, a legal case to review. Once the cause
is gone (the dispute resolved, the delivery settled, the contact details fixed, the invoice
closed), the task would only waste someone's time: it is closed here, with the reason on the
task and a ``task_closed`` event on the invoice's timeline. The recording functions call the
one function per cause; none of them commits (the caller's transaction does).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from arflow.invoices.timeline import WORKFLOW_ACTOR, add_event
from models import Customer, Invoice, Task
from models.collection import CAUSE_ENDED
from models.types import utcnow
from workflows.types import CLOSED_STATUSES

DISPUTE_OVERDUE = "dispute_overdue"
DELIVERY_UNCERTAIN = "delivery_uncertain"
CONTACT_FAILED = "contact_failed"
LEGAL_REVIEW = "legal_review"
SMALL_BALANCE = "small_balance"  # below the policy's minimum: write off or not
# A customer wrote back (arflow.messages.replies): someone reads it. Not closed by its cause
# (nor by the invoice closing): a reply needs reading whatever happened since.
CUSTOMER_REPLIED = "customer_replied"
# Every kind of task that closes by its cause; an invoice that closes ends them all.
BY_CAUSE = (DISPUTE_OVERDUE, DELIVERY_UNCERTAIN, CONTACT_FAILED, LEGAL_REVIEW, SMALL_BALANCE)
DELIVERED = ("sent", "delivered", "printed", "consolidated")  # a message that reached them


def default_assignee(session: Session, invoice_id: int) -> str | None:
    """Who owns a new task on the invoice: its collector, else its customer's assigned
    collector, else nobody (None)."""
    with session.no_autoflush:
        found = session.exec(
            select(Invoice.collector, Customer.assigned_collector)
            .join(Customer, col(Customer.id) == col(Invoice.customer_id))
            .where(Invoice.id == invoice_id)
        ).first()
    if found is None:
        return None
    for value in found:
        if value and value.strip():
            return str(value).strip()
    return None


def new_task(
    session: Session,
    invoice_id: int,
    kind: str,
    data: dict[str, Any],
    due_at: datetime | None = None,
    created_at: datetime | None = None,
) -> Task:
    """Add a task to the session (the caller flushes or commits), owned by
    ``default_assignee``. Every place that creates a task goes through here."""
    task = Task(
        invoice_id=invoice_id,
        kind=kind,
        due_at=due_at,
        data=data,
        created_at=created_at or utcnow(),
        assignee=default_assignee(session, invoice_id),
    )
    session.add(task)
    return task


def mark_closed(
    task: Task, outcome: str, actor: str, note: str | None = None, at: datetime | None = None
) -> None:
    """Record on ``task`` that it is done: how (``outcome``), by whom, when, and a note.
    Neither adds an event nor commits."""
    task.status = "done"
    task.outcome = outcome[:50]
    task.closed_by = actor[:100]
    task.closed_at = at or utcnow()
    task.note = note[:2000] if note else None


def close_tasks(
    session: Session,
    invoice_ids: Iterable[int],
    kinds: Iterable[str],
    reason: str,
    where: dict[str, Any] | None = None,
    actor: str = WORKFLOW_ACTOR,
) -> list[int]:
    """Close the open tasks of ``kinds`` on these invoices (those whose data has every item
    of ``where``): status ``done``, outcome ``cause_ended`` with the reason as note, when and
    by whom (in the columns, and as before in ``data``), and a ``task_closed`` event. Returns
    their ids. Neither flushes nor commits: the caller's transaction does, and its idempotency
    check (``commit_once``) sees a retry's conflict."""
    ids, kinds = list(invoice_ids), list(kinds)
    if not ids:
        return []
    with session.no_autoflush:
        tasks = session.exec(
            select(Task)
            .where(
                col(Task.invoice_id).in_(ids),
                col(Task.kind).in_(kinds),
                Task.status == "open",
            )
            .order_by(col(Task.id))
        ).all()
    now = utcnow()
    closed = []
    for task in tasks:
        if where and any(task.data.get(k) != v for k, v in where.items()):
            continue
        mark_closed(task, CAUSE_ENDED, actor, reason, now)
        task.data = task.data | {
            "closed_reason": reason,
            "closed_at": now.isoformat(),
            "closed_by": actor,
        }
        session.add(task)
        add_event(
            session,
            task.invoice_id,
            "task_closed",
            {"task_id": task.id, "task": task.kind, "reason": reason},
            actor=actor,
            dedupe_key=f"task:{task.id}:closed",
            at=now,
        )
        assert task.id is not None
        closed.append(task.id)
    return closed


def invoice_closed(session: Session, invoice_id: int, status: str, actor: str) -> list[int]:
    """The invoice is paid, cancelled, credited or written off: nothing is left to chase."""
    if status not in CLOSED_STATUSES:
        return []
    return close_tasks(session, [invoice_id], BY_CAUSE, f"invoice {status}", actor=actor)


def dispute_resolved(
    session: Session, invoice_id: int, dispute_id: int, outcome: str, actor: str
) -> list[int]:
    """The dispute past its SLA got its answer."""
    return close_tasks(
        session,
        [invoice_id],
        [DISPUTE_OVERDUE],
        f"dispute {outcome}",
        where={"dispute_id": dispute_id},
        actor=actor,
    )


def delivery_settled(session: Session, invoice_id: int, outbox_id: int, status: str) -> list[int]:
    """A provider's event settled an outbox row (``delivered`` or ``failed``): the question
    its uncertain delivery asked is answered; a delivery also shows the customer is
    reachable again."""
    closed = close_tasks(
        session,
        [invoice_id],
        [DELIVERY_UNCERTAIN],
        f"the provider reported the message {status}",
        where={"outbox_id": outbox_id},
        actor="provider",
    )
    if status in DELIVERED:
        closed += close_tasks(
            session,
            [invoice_id],
            [CONTACT_FAILED],
            "a later message was delivered",
            actor="provider",
        )
    return closed


def step_delivered(session: Session, invoice_id: int, channel: str, status: str) -> list[int]:
    """A later step reached the customer on ``channel``: a step no channel could take, and
    an earlier uncertain delivery on that channel, need nobody any more."""
    if status not in DELIVERED:
        return []
    closed = close_tasks(
        session,
        [invoice_id],
        [DELIVERY_UNCERTAIN],
        f"a later {channel} message was {status}",
        where={"channel": channel},
    )
    return closed + close_tasks(
        session, [invoice_id], [CONTACT_FAILED], f"a later {channel} message was {status}"
    )


def contact_fixed(session: Session, customer_id: int, channel: str, actor: str) -> list[int]:
    """The customer's ``channel`` may be used again (a new address, START): the steps no
    channel could take can go out again."""
    with session.no_autoflush:
        open_ids = session.exec(
            select(Invoice.id).where(
                Invoice.customer_id == customer_id, col(Invoice.status).not_in(CLOSED_STATUSES)
            )
        ).all()
    return close_tasks(
        session,
        [i for i in open_ids if i is not None],
        [CONTACT_FAILED],
        f"{channel} contact details fixed",
        actor=actor,
    )
