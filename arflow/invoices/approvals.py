"""Four eyes on dispute credits. A credit lowers the debt as surely as a write-off does, so a
specialist's credit above the policy's ``dispute_credit_approval_minor`` is not sent to the
workflow: it is stored as a pending ``CreditApproval`` with a ``credit_approval`` task on the
worklist. An admin, or a specialist other than the requester, approves it (the resolution then
goes to the workflow as any other, naming both actors) or declines it. An admin's own credit
needs nobody.

Every step is on the invoice's timeline with the actors: ``credit_approval_requested`` (the
requester), ``credit_approval_approved`` / ``credit_approval_declined`` (requester and
approver); the workflow's ``dispute_upheld`` carries ``approved_by`` besides its actor.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.access import Principal
from arflow.config import Settings
from arflow.errors import conflict, forbidden, not_found, unprocessable
from arflow.invoices import tasks
from arflow.invoices.service import get_invoice, run_update
from arflow.invoices.timeline import add_event
from models import CreditApproval, Dispute, DunningPolicy, Invoice, Task
from models.collection import DisputeResolve
from models.types import utcnow
from workflows.types import CLOSED_STATUSES, ResolveDisputeRequest

TASK_KIND = "credit_approval"


def threshold(session: Session, invoice: Invoice) -> int | None:
    """The invoice's policy's approval threshold (None: no credit needs approval)."""
    policy = session.get(DunningPolicy, invoice.policy_id)
    return policy.dispute_credit_approval_minor if policy is not None else 0


def needs_approval(
    session: Session, invoice: Invoice, body: DisputeResolve, who: Principal
) -> bool:
    """Whether ``who`` resolving with ``body`` needs a second actor: a specialist's credit
    above the threshold does; an admin's, a rejection or no credit never does."""
    if who.is_admin or body.outcome != "upheld" or body.credit_minor <= 0:
        return False
    limit = threshold(session, invoice)
    return limit is not None and body.credit_minor > limit


def pending_for(session: Session, dispute_id: int) -> CreditApproval | None:
    return session.exec(
        select(CreditApproval).where(
            CreditApproval.dispute_id == dispute_id, CreditApproval.status == "pending"
        )
    ).first()


def request_approval(
    session: Session, invoice: Invoice, dispute: Dispute, body: DisputeResolve, who: Principal
) -> CreditApproval:
    """Store the resolution as pending with a worklist task (nothing goes to the workflow).
    The same request again (a double click, a retry) answers with the one stored; another
    while one is pending is a 409."""
    assert invoice.id is not None and dispute.id is not None
    if invoice.status in CLOSED_STATUSES:
        raise conflict(f"invoice {invoice.id} is already {invoice.status}")
    if body.credit_minor > invoice.balance_minor:
        raise unprocessable(
            f"credit must be between 0 and the open balance {invoice.balance_minor}"
        )
    found = pending_for(session, dispute.id)
    if found is not None:
        same = (found.credit_minor, found.outcome, found.note, found.requested_by) == (
            body.credit_minor,
            body.outcome,
            body.note,
            who.actor,
        )
        if same:
            return found
        raise conflict(
            f"a credit for dispute {dispute.id} is waiting for approval (approval {found.id})",
            {"approval_id": found.id},
        )
    now = utcnow()
    approval = CreditApproval(
        invoice_id=invoice.id,
        dispute_id=dispute.id,
        credit_minor=body.credit_minor,
        outcome=body.outcome,
        note=body.note,
        requested_by=who.actor,
        created_at=now,
    )
    session.add(approval)
    session.flush()
    task = tasks.new_task(
        session,
        invoice.id,
        TASK_KIND,
        {
            "approval_id": approval.id,
            "dispute_id": dispute.id,
            "credit_minor": body.credit_minor,
            "requested_by": who.actor,
        },
        due_at=now,
        created_at=now,
    )
    session.flush()
    approval.task_id = task.id
    session.add(approval)
    add_event(
        session,
        invoice.id,
        "credit_approval_requested",
        {
            "approval_id": approval.id,
            "dispute_id": dispute.id,
            "credit_minor": body.credit_minor,
            "threshold_minor": threshold(session, invoice),
            "requested_by": who.actor,
        },
        actor=who.actor,
        at=now,
    )
    session.commit()
    session.refresh(approval)
    return approval


def list_approvals(
    session: Session, status: str | None = None, invoice_id: int | None = None
) -> list[CreditApproval]:
    """Approvals (in ``status``, every one for None or ``all``; of one invoice if given),
    oldest first."""
    stmt = select(CreditApproval)
    if status is not None and status != "all":
        stmt = stmt.where(CreditApproval.status == status)
    if invoice_id is not None:
        stmt = stmt.where(CreditApproval.invoice_id == invoice_id)
    return list(session.exec(stmt.order_by(col(CreditApproval.id))).all())


def get_approval(session: Session, approval_id: int) -> CreditApproval:
    approval = session.get(CreditApproval, approval_id)
    if approval is None:
        raise not_found("approval", approval_id)
    return approval


def _claim(session: Session, approval: CreditApproval, status: str, who: Principal) -> None:
    """Move the approval from pending to ``status`` as ``who``, or 409: of two deciders at
    the same moment, one wins (a conditional update, not a read then a write)."""
    result = session.execute(
        update(CreditApproval)
        .where(col(CreditApproval.id) == approval.id, col(CreditApproval.status) == "pending")
        .values(status=status, decided_by=who.actor, decided_at=utcnow())
    )
    session.commit()
    if getattr(result, "rowcount", 0) != 1:
        session.refresh(approval)
        raise conflict(f"approval {approval.id} is already {approval.status}")
    session.refresh(approval)


def _release(session: Session, approval: CreditApproval, who: Principal) -> None:
    """Undo ``_claim`` (the workflow refused, or did not answer): pending again."""
    session.rollback()
    session.execute(
        update(CreditApproval)
        .where(
            col(CreditApproval.id) == approval.id,
            col(CreditApproval.status) == "approved",
            col(CreditApproval.decided_by) == who.actor,
        )
        .values(status="pending", decided_by=None, decided_at=None)
    )
    session.commit()


def _decided(
    session: Session, approval: CreditApproval, kind: str, who: Principal, note: str = ""
) -> None:
    """The decision on the timeline with both actors; the worklist task done."""
    assert approval.id is not None
    if note:
        approval.decision_note = note
        session.add(approval)
    add_event(
        session,
        approval.invoice_id,
        kind,
        {
            "approval_id": approval.id,
            "dispute_id": approval.dispute_id,
            "credit_minor": approval.credit_minor,
            "requested_by": approval.requested_by,
            "decided_by": who.actor,
            **({"note": note} if note else {}),
        },
        actor=who.actor,
    )
    task = session.get(Task, approval.task_id) if approval.task_id is not None else None
    if task is not None and task.status == "open":
        tasks.mark_closed(task, kind.removeprefix("credit_approval_"), who.actor, note or None)
        session.add(task)
    session.commit()
    session.refresh(approval)


def _check_pending(approval: CreditApproval) -> None:
    if approval.status != "pending":
        raise conflict(f"approval {approval.id} is already {approval.status}")


async def approve(
    session: Session, client: Client, settings: Settings, approval_id: int, who: Principal
) -> tuple[CreditApproval, Invoice]:
    """Approve and send the resolution to the workflow, as the requester's with ``who`` as
    approver. The requester may not approve their own (403). The update's id is the
    approval's (never a client's Idempotency-Key), so an approval retried after a lost answer
    is applied once. When the workflow refuses (the dispute was settled meanwhile, the
    balance is lower than the credit now), the approval stays pending with the reason in the
    409/422."""
    approval = get_approval(session, approval_id)
    _check_pending(approval)
    if who.actor == approval.requested_by:
        raise forbidden("a credit needs a second person: the requester cannot approve it")
    get_invoice(session, approval.invoice_id)
    _claim(session, approval, "approved", who)
    request = ResolveDisputeRequest(
        dispute_id=approval.dispute_id,
        outcome=approval.outcome,
        note=approval.note,
        actor=approval.requested_by,
        credit_minor=approval.credit_minor,
        approved_by=who.actor,
    )
    try:
        invoice, _ = await run_update(
            session,
            client,
            settings,
            approval.invoice_id,
            "resolve_dispute",
            request,
            update_id=f"credit-approval:{approval_id}",
        )
    except BaseException:
        _release(session, approval, who)
        raise
    _decided(session, approval, "credit_approval_approved", who)
    return approval, invoice


def decline(session: Session, approval_id: int, who: Principal, note: str = "") -> CreditApproval:
    """Decline: the dispute stays open for another resolution. The requester may decline
    (withdraw) their own; recorded with both actors either way."""
    approval = get_approval(session, approval_id)
    _check_pending(approval)
    _claim(session, approval, "declined", who)
    _decided(session, approval, "credit_approval_declined", who, note)
    return approval
