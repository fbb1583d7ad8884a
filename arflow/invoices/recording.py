"""What the invoice's workflow decided, recorded: the invoice closed, and every change of
collection state (disputes, plans, promises, holds). Each function is one transaction of the
caller's session and idempotent on the timeline's dedupe key, so the activity that calls it
can be retried. A change of the customer's figures re-evaluates their segment and credit hold
in the same transaction (``refresh``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.customers.profiles import CustomerRefresh, refresh_customer
from arflow.invoices import tasks
from arflow.invoices.service import get_invoice
from arflow.invoices.timeline import (
    WORKFLOW_ACTOR,
    add_event,
    commit_once,
    set_next_action,
)
from models import Customer, Dispute, Invoice, InvoiceEvent, PaymentPlan, Promise
from models.types import utcnow
from workflows.types import (
    CLOSED_STATUSES,
    ChangeResult,
    ChangeSet,
    EventSpec,
    RecordClosedInput,
    SegmentMove,
)

CHANGE_IDS = ("dispute_id", "plan_id", "promise_id")


def record_closed(session: Session, inp: RecordClosedInput) -> None:
    """Record that the workflow closed the invoice (e.g. cancelled) and why."""
    key = f"status:{inp.status}"
    invoice = get_invoice(session, inp.invoice_id)
    now = utcnow()
    add_event(
        session,
        inp.invoice_id,
        inp.status,
        {"from": invoice.status, "reason": inp.reason},
        actor=inp.actor,
        dedupe_key=key,
    )
    invoice.status = inp.status
    invoice.hold = None
    invoice.closed_at = now
    invoice.updated_at = now
    set_next_action(invoice, None)
    session.add(invoice)
    tasks.invoice_closed(session, inp.invoice_id, inp.status, inp.actor)
    commit_once(session, inp.invoice_id, key)


def record_change(session: Session, change: ChangeSet) -> ChangeResult:
    """Record one change of collection state the workflow made: its events, the invoice's
    status, hold, balance and next action, and the dispute/plan/promise/task row. A change
    of the customer's figures (a promise or plan broken, a dispute resolved) re-evaluates
    their segment: ``moved`` when they changed segment."""
    try:
        result = _apply_change(session, change)
        session.commit()
        return result
    except IntegrityError:
        session.rollback()
        done = session.exec(
            select(InvoiceEvent).where(
                InvoiceEvent.invoice_id == change.invoice_id,
                InvoiceEvent.dedupe_key == change.dedupe_key,
            )
        ).first()
        if done is None:
            raise
        # A retry of a recorded change: answer with the ids recorded the first time.
        return ChangeResult(**{k: done.data[k] for k in CHANGE_IDS if k in done.data})


def _apply_change(session: Session, change: ChangeSet) -> ChangeResult:
    now = utcnow()
    invoice = get_invoice(session, change.invoice_id)
    result = ChangeResult()
    if change.dispute is not None:
        result.dispute_id = _save_dispute(session, change, now)
    if change.plan is not None:
        result.plan_id = _save_plan(session, change, now)
    if change.promise is not None:
        result.promise_id = _save_promise(session, change, now)
    if change.task is not None:
        task = change.task
        tasks.new_task(session, change.invoice_id, task.kind, task.data, due_at=task.due_at)
    if change.due_at is not None and change.due_date is not None:
        invoice.due_at, invoice.due_date = change.due_at, date.fromisoformat(change.due_date)
    if change.customer_counter in ("broken_promises", "broken_plans"):
        customer = session.get(Customer, invoice.customer_id)
        assert customer is not None
        counter = change.customer_counter
        setattr(customer, counter, getattr(customer, counter) + 1)
        session.add(customer)
    ids = {k: v for k, v in asdict(result).items() if v is not None}
    events = change.events or [EventSpec("state_recorded", {})]
    for i, spec in enumerate(events):
        add_event(
            session,
            change.invoice_id,
            spec.kind,
            ids | dict(spec.data),
            actor=change.actor,
            dedupe_key=change.dedupe_key if i == 0 else None,
            at=now,
        )
    if change.status != invoice.status and change.status in CLOSED_STATUSES:
        invoice.closed_at = now
        tasks.invoice_closed(session, change.invoice_id, change.status, change.actor)
    if change.dispute is not None and change.dispute.status != "open" and result.dispute_id:
        tasks.dispute_resolved(
            session, change.invoice_id, result.dispute_id, change.dispute.status, change.actor
        )
    invoice.status = change.status
    invoice.hold = change.hold
    invoice.balance_minor = change.balance_minor
    invoice.updated_at = now
    set_next_action(invoice, change.next_action)
    session.add(invoice)
    session.flush()
    if figures_changed(change):
        result.moved = refresh(session, invoice.customer_id)
    return result


def _save_dispute(session: Session, change: ChangeSet, now: datetime) -> int:
    rec = change.dispute
    assert rec is not None
    if rec.dispute_id is None:
        row = Dispute(
            invoice_id=change.invoice_id,
            status=rec.status,
            reason=rec.reason,
            amount_minor=rec.amount_minor,
            opened_by=change.actor,
            opened_at=now,
            sla_at=rec.sla_at,
        )
    else:
        found = session.get(Dispute, rec.dispute_id)
        assert found is not None
        row = found
        row.status = rec.status
        row.resolved_by = change.actor
        row.resolved_at = now
        row.outcome_note = rec.outcome_note
        row.credit_minor = rec.credit_minor
    return _stored_id(session, row)


def _save_plan(session: Session, change: ChangeSet, now: datetime) -> int:
    rec = change.plan
    assert rec is not None
    installments = [asdict(i) | {"due_at": i.due_at.isoformat()} for i in rec.installments]
    if rec.plan_id is None:
        row = PaymentPlan(
            invoice_id=change.invoice_id,
            status=rec.status,
            installments=installments,
            note=rec.note,
            created_by=change.actor,
            created_at=now,
            updated_at=now,
        )
    else:
        found = session.get(PaymentPlan, rec.plan_id)
        assert found is not None
        row = found
        row.status = rec.status
        row.installments = installments
        row.updated_at = now
    return _stored_id(session, row)


def _save_promise(session: Session, change: ChangeSet, now: datetime) -> int:
    rec = change.promise
    assert rec is not None
    if rec.promise_id is None:
        row = Promise(
            invoice_id=change.invoice_id,
            status=rec.status,
            promised_date=date.fromisoformat(rec.promised_date),
            amount_minor=rec.amount_minor,
            created_by=change.actor,
            created_at=now,
            updated_at=now,
        )
    else:
        found = session.get(Promise, rec.promise_id)
        assert found is not None
        row = found
        row.status = rec.status
        row.updated_at = now
    return _stored_id(session, row)


def _stored_id(session: Session, row: Dispute | PaymentPlan | Promise) -> int:
    """Insert or update ``row`` now and return its id."""
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def figures_changed(change: ChangeSet) -> bool:
    """Whether the change counts in the customer's behaviour figures (and so their risk)."""
    resolved = change.dispute is not None and change.dispute.status in ("upheld", "rejected")
    return resolved or change.customer_counter is not None


def refresh(session: Session, customer_id: int) -> SegmentMove | None:
    """Re-evaluate the customer after a change of their figures (in the caller's
    transaction): their credit hold, and their segment; the move when it changed and open
    invoices must switch policy."""
    return segment_move(customer_id, refresh_customer(session, customer_id, actor=WORKFLOW_ACTOR))


def segment_move(customer_id: int, refreshed: CustomerRefresh) -> SegmentMove | None:
    """The switch a re-evaluation calls for, if any."""
    moved = refreshed.segment
    if not (moved.changed and moved.invoice_ids and moved.event_id is not None):
        return None
    return SegmentMove(
        customer_id=customer_id,
        segment=moved.segment,
        previous=moved.previous,
        policy_name=moved.policy_name,
        invoice_ids=moved.invoice_ids,
        event_id=moved.event_id,
    )


def customers_to_review(session: Session) -> Sequence[int]:
    """The customers with an invoice still open, by id (the daily review)."""
    return session.exec(
        select(Invoice.customer_id)
        .where(col(Invoice.status).not_in(CLOSED_STATUSES))
        .distinct()
        .order_by(col(Invoice.customer_id))
    ).all()


def review_customer(
    session: Session, customer_id: int, at: datetime
) -> tuple[bool, SegmentMove | None]:
    """Re-evaluate one customer (segment and credit hold) in a transaction of its own
    (commits): whether the hold changed, and the switch the new segment calls for, if any."""
    refreshed = refresh_customer(session, customer_id, WORKFLOW_ACTOR, at)
    session.commit()
    return refreshed.hold.changed, segment_move(customer_id, refreshed)
