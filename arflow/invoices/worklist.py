"""Tasks a specialist works: the filtered, paged list, and assigning, snoozing and closing one.

A task's owner is a collector (``assignee``): new tasks get the invoice's (``tasks.new_task``),
a specialist may hand it to another or unassign it. Snoozing hides an open task from the open
worklist until ``snoozed_until``; closing it by hand needs an outcome (``TASK_OUTCOMES``). A
task once done stays done. Every change is an event on the invoice's timeline
(``task_assigned``, ``task_snoozed``, ``task_closed``), written in the same transaction.

The JSON API (``/v1/tasks``) and the dashboard's worklist both call these.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.customers.collectors import has_collectors, known_collector
from arflow.errors import conflict, not_found, unprocessable
from arflow.invoices import priority
from arflow.invoices.tasks import mark_closed
from arflow.invoices.timeline import add_event
from models import Customer, Invoice, Task
from models.collection import MAX_SNOOZE_DAYS, TaskItem, TaskUpdate
from models.types import utcnow

TaskStatus = Literal["open", "snoozed", "done"]
TaskSort = Literal["due", "priority"]
#: The most tasks ``sort="priority"`` orders (it scores every matching task, then pages).
MAX_PRIORITISED = 5_000
#: ``assignee=none`` in a filter: the tasks nobody owns.
UNASSIGNED = "none"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _is_snoozed(task: Task, now: datetime) -> bool:
    return task.status == "open" and task.snoozed_until is not None and task.snoozed_until > now


def _item(task: Task, number: str, customer_id: int, name: str, now: datetime) -> TaskItem:
    assert task.id is not None
    return TaskItem(
        id=task.id,
        invoice_id=task.invoice_id,
        invoice_number=number,
        customer_id=customer_id,
        customer_name=name,
        kind=task.kind,
        status="snoozed" if _is_snoozed(task, now) else task.status,
        due_at=task.due_at,
        assignee=task.assignee,
        snoozed_until=task.snoozed_until,
        closed_at=task.closed_at,
        closed_by=task.closed_by,
        outcome=task.outcome,
        note=task.note,
        data=task.data,
        created_at=task.created_at,
    )


def _conditions(
    now: datetime,
    kind: str | None,
    assignee: str | None,
    status: TaskStatus | None,
    due_before: datetime | None,
    customer_id: int | None,
    invoice_id: int | None,
) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if kind is not None:
        found.append(col(Task.kind) == kind)
    if assignee is not None:
        unassigned = assignee.strip().lower() == UNASSIGNED
        found.append(col(Task.assignee).is_(None) if unassigned else col(Task.assignee) == assignee)
    snoozed = col(Task.snoozed_until) > now
    if status == "done":
        found.append(col(Task.status) == "done")
    elif status == "snoozed":
        found += [col(Task.status) == "open", snoozed]
    elif status == "open":
        found += [col(Task.status) == "open", or_(col(Task.snoozed_until).is_(None), ~snoozed)]
    if due_before is not None:
        found.append(col(Task.due_at) < _utc(due_before))
    if customer_id is not None:
        found.append(col(Invoice.customer_id) == customer_id)
    if invoice_id is not None:
        found.append(col(Task.invoice_id) == invoice_id)
    return found


def list_tasks(
    session: Session,
    kind: str | None = None,
    assignee: str | None = None,
    status: TaskStatus | None = None,
    due_before: datetime | None = None,
    customer_id: int | None = None,
    invoice_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
    sort: TaskSort = "due",
) -> tuple[list[TaskItem], int]:
    """One page of tasks and how many match; each with its priority (and a call's window:
    ``arflow.invoices.priority``). ``sort="due"``: soonest due first, those without a due date
    last, then oldest; ``"priority"``: highest expected recovery first, then oldest (at most
    ``MAX_PRIORITISED`` matching tasks: a larger worklist is narrowed by a filter first).
    ``assignee="none"`` finds the unassigned; ``status="open"`` leaves the snoozed out,
    ``"snoozed"`` finds them; no status finds every task."""
    now = now or utcnow()
    where = _conditions(now, kind, assignee, status, due_before, customer_id, invoice_id)
    joined = (
        select(Task, Invoice.number, Invoice.customer_id, Customer.name)
        .join(Invoice, col(Invoice.id) == col(Task.invoice_id))
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
    )
    counted = select(func.count(col(Task.id))).join(
        Invoice, col(Invoice.id) == col(Task.invoice_id)
    )
    total = int(session.exec(counted.where(*where)).one())
    stmt = joined.where(*where).order_by(
        col(Task.due_at).is_(None), col(Task.due_at), col(Task.created_at), col(Task.id)
    )
    if sort == "priority" and total > MAX_PRIORITISED:
        raise unprocessable(
            f"{total} tasks match: ordering by priority takes at most {MAX_PRIORITISED}; "
            "filter by kind, assignee, customer or due_before first"
        )
    if sort != "priority":
        stmt = stmt.offset(offset).limit(limit)
    items = [_item(task, number, cid, name, now) for task, number, cid, name in session.exec(stmt)]
    priority.annotate(session, items, now)
    if sort == "priority":
        return priority.by_priority(items)[offset : offset + limit], total
    return items, total


def task_item(session: Session, task_id: int, now: datetime | None = None) -> TaskItem:
    """One task as ``list_tasks`` shows it; 404 when there is none."""
    found = session.exec(
        select(Task, Invoice.number, Invoice.customer_id, Customer.name)
        .join(Invoice, col(Invoice.id) == col(Task.invoice_id))
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(Task.id == task_id)
    ).first()
    if found is None:
        raise not_found("task", task_id)
    task, number, customer_id, name = found
    now = now or utcnow()
    item = _item(task, number, customer_id, name, now)
    priority.annotate(session, [item], now)
    return item


def _check(session: Session, task: Task, body: TaskUpdate, now: datetime) -> None:
    """Refuse the whole change before any part of it is applied."""
    if task.status != "open":
        raise conflict(
            f"task {task.id} is already {task.status}"
            + (f" ({task.outcome})" if task.outcome else "")
            + ": a closed task is not changed or reopened",
            {"task_id": task.id, "status": task.status, "outcome": task.outcome},
        )
    if body.assignee is not None and has_collectors(session):
        known_collector(session, body.assignee, field="assignee")
    if body.snoozed_until is not None:
        latest = now + timedelta(days=MAX_SNOOZE_DAYS)
        if body.snoozed_until <= now:
            raise unprocessable(
                "snoozed_until must be in the future (null wakes the task)",
                [{"field": "snoozed_until", "message": "in the past"}],
            )
        if body.snoozed_until > latest:
            raise unprocessable(
                f"snoozed_until may be at most {MAX_SNOOZE_DAYS} days ahead",
                [{"field": "snoozed_until", "message": "too far ahead"}],
            )


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def update_task(
    session: Session, task_id: int, body: TaskUpdate, actor: str, now: datetime | None = None
) -> TaskItem:
    """Assign, snooze and/or close one open task (``body``'s fields that were given), each
    change with its timeline event, in one transaction. 404 for an unknown task, 409 when it
    is already done, 422 for an assignee the collectors list does not have active or a snooze
    not in the next 365 days. Returns the task as the list shows it."""
    now = now or utcnow()
    task = session.get(Task, task_id)
    if task is None:
        raise not_found("task", task_id)
    _check(session, task, body, now)
    given = body.model_fields_set
    base = {"task_id": task.id, "task": task.kind}
    if "assignee" in given and body.assignee != task.assignee:
        add_event(
            session,
            task.invoice_id,
            "task_assigned",
            base | {"assignee": body.assignee, "previous": task.assignee},
            actor=actor,
            at=now,
        )
        task.assignee = body.assignee
    if "snoozed_until" in given and body.snoozed_until != task.snoozed_until:
        add_event(
            session,
            task.invoice_id,
            "task_snoozed",
            base
            | {"snoozed_until": _iso(body.snoozed_until), "previous": _iso(task.snoozed_until)},
            actor=actor,
            at=now,
        )
        task.snoozed_until = body.snoozed_until
    if body.status == "done" and body.outcome is not None:
        mark_closed(task, body.outcome, actor, body.note, now)
        add_event(
            session,
            task.invoice_id,
            "task_closed",
            base
            | {"status": "done", "previous": "open", "outcome": body.outcome}
            | ({"note": body.note} if body.note else {}),
            actor=actor,
            dedupe_key=f"task:{task.id}:closed",  # as a closing by its cause: once per task
            at=now,
        )
    session.add(task)
    try:
        session.commit()
    except IntegrityError:  # closed concurrently (by its cause or another specialist)
        session.rollback()
        raise conflict(f"task {task_id} was closed meanwhile", {"task_id": task_id}) from None
    return task_item(session, task_id, now)
