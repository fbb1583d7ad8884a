"""Tasks a specialist works: the worklist with filters and paging; assign, snooze or close one
(``arflow.invoices.worklist``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query

from api.deps import SessionDep, Specialist, Viewer
from arflow.invoices import worklist
from models.collection import TaskItem, TaskPage, TaskUpdate

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("", response_model=TaskPage)
def list_tasks(
    session: SessionDep,
    _: Viewer,
    kind: str | None = Query(None, max_length=50),
    assignee: str | None = Query(
        None, max_length=100, description="exact; `none` for the tasks nobody owns"
    ),
    status: worklist.TaskStatus | None = Query(
        None,
        description="open (not snoozed), snoozed (open, snoozed_until in the future) or done; "
        "all when not given",
    ),
    due_before: datetime | None = Query(None, description="UTC when it has no zone"),
    customer_id: int | None = Query(None, gt=0),
    invoice_id: int | None = Query(None, gt=0),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    sort: worklist.TaskSort = Query(
        "due",
        description="due: soonest due first (those without a due date last), then oldest; "
        "priority: highest expected recovery (open balance x probability of payment) first, "
        "then oldest",
    ),
) -> TaskPage:
    """Tasks, each with its invoice's number, its customer, its ``priority`` (expected
    recovery and why) and, for a call, whether it may be placed now (``call``)."""
    items, total = worklist.list_tasks(
        session,
        kind=kind,
        assignee=assignee,
        status=status,
        due_before=due_before,
        customer_id=customer_id,
        invoice_id=invoice_id,
        limit=limit,
        offset=offset,
        sort=sort,
    )
    return TaskPage(items=items, total=total, limit=limit, offset=offset)


@router.patch(
    "/{task_id}",
    response_model=TaskItem,
    responses={
        404: {"description": "no such task"},
        409: {"description": "the task is already done"},
    },
)
def update_task(task_id: int, body: TaskUpdate, session: SessionDep, who: Specialist) -> TaskItem:
    """Assign (``assignee``; null unassigns; once the collectors list has entries, an active
    listed collector), snooze (``snoozed_until``: future, at most 365 days ahead; null wakes
    it) or close it (``status: done`` with an ``outcome``: resolved, no_action_needed,
    escalated, duplicate or other; an optional ``note``). Each change is an event on the
    invoice's timeline. A done task is not changed or reopened (409)."""
    return worklist.update_task(session, task_id, body, who.actor)
