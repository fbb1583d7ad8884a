"""What a customer asks for in the self-service portal: a dispute (with attachments), a
payment plan, a promise to pay; the specialist's answer to a plan proposed outside the
policy's bounds; and the confirmation email each of these sends.

Every function that serves the portal takes the ``customer_id`` the verified link gives: an
invoice of another customer is answered as a missing one (``not_found``, no oracle). The
changes to collection are the very updates a specialist sends (``arflow.invoices.actions``),
with the actor ``"customer"``.

Confirmations: each is its own small workflow (``workflows.confirmations``), started here once
the fact is recorded, with an id derived from its step key (``confirm-<kind>-<id>``): a second
start is refused by Temporal and the outbox row is unique per (invoice, step key, channel). The
invoice workflow is left as it is: sending from its update handlers would change its command
sequence (a ``workflow.patched`` branch in every handler) for messages that decide nothing about
collection. See ``arflow.messages.confirmations`` for the delivery rules.

Plan bounds: a plan whose instalments do not add up to the open balance, whose dates are not
strictly ascending, are in the past (the customer's zone) or exceed the policy's hard
``max_installments`` is refused (4xx): no specialist could agree it either. A plan inside
those limits but outside the portal's bounds (``portal_plan_*``) waits for the invoice's
owner as a ``PlanProposal`` with a ``plan_proposal`` task.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.config import Settings
from arflow.errors import conflict, not_found, unprocessable
from arflow.invoices import actions, tasks
from arflow.invoices.confirm import confirm
from arflow.invoices.timeline import add_event
from models import (
    Customer,
    Dispute,
    DisputeAttachment,
    DunningPolicy,
    Invoice,
    PaymentPlan,
    PlanProposal,
    Promise,
    Task,
)
from models.collection import DisputeCreate, InstallmentIn, PlanCreate, PromiseCreate
from models.types import parse_duration, utcnow
from workflows.types import CLOSED_STATUSES

CUSTOMER = "customer"
PLAN_PROPOSAL = "plan_proposal"  # the task kind for the owner
ReasonCode = Literal["not_received", "damaged", "wrong_amount", "already_paid", "other"]
REASON_LABELS: dict[str, str] = {
    "not_received": "Goods or services not received",
    "damaged": "Damaged",
    "wrong_amount": "Wrong amount",
    "already_paid": "Already paid",
    "other": "Other",
}
MAX_ATTACHMENTS = 3
MAX_TEXT = 900  # the dispute's reason holds 1000 characters, label included
#: What a file's first bytes must be for each allowed type (never its name or declared type).
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


# -- the customer's invoice ----------------------------------------------------------------


def customer_invoice(session: Session, customer_id: int, invoice_id: int) -> Invoice:
    """The invoice when it is this customer's; a missing one and another's answer alike."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or invoice.customer_id != customer_id:
        raise not_found("invoice", invoice_id)
    return invoice


def _open_invoice(session: Session, customer_id: int, invoice_id: int) -> Invoice:
    invoice = customer_invoice(session, customer_id, invoice_id)
    if invoice.status in CLOSED_STATUSES:
        raise conflict(f"invoice {invoice.number} is already {invoice.status}")
    return invoice


def customer_today(session: Session, invoice: Invoice) -> date:
    """Today in the invoice's customer's time zone."""
    customer = session.get(Customer, invoice.customer_id)
    zone = ZoneInfo(customer.timezone if customer else "UTC")
    return utcnow().astimezone(zone).date()


def _policy(session: Session, invoice: Invoice) -> DunningPolicy:
    policy = session.get(DunningPolicy, invoice.policy_id)
    assert policy is not None
    return policy


def _ahead(today: date, duration: str) -> date:
    """``today`` plus an ISO duration (days, weeks, months, years)."""
    return today + parse_duration(duration)


# -- disputes with attachments ---------------------------------------------------------------


def sniff(content: bytes) -> str | None:
    """The content type the bytes are (PDF, PNG, JPEG), or None."""
    return next((mime for magic, mime in SIGNATURES if content.startswith(magic)), None)


def safe_filename(name: str) -> str:
    """The customer's file name without any path, control or unusual characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .")
    return cleaned[:200] or "attachment"


def attachments_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "attachments"


def check_attachments(settings: Settings, files: list[tuple[str, bytes]]) -> list[str]:
    """The content type of each file; a 4xx naming the file that is refused."""
    if len(files) > MAX_ATTACHMENTS:
        raise unprocessable(f"at most {MAX_ATTACHMENTS} attachments, not {len(files)}")
    types = []
    limit = settings.portal_attachment_max_bytes
    for name, content in files:
        shown = safe_filename(name)
        if not content:
            raise unprocessable(f"{shown}: the file is empty")
        if len(content) > limit:
            raise unprocessable(f"{shown}: larger than {limit // (1024 * 1024)} MiB")
        mime = sniff(content)
        if mime is None:
            raise unprocessable(f"{shown}: not a PDF, PNG or JPEG file", {"file": shown})
        types.append(mime)
    return types


def _store_files(
    session: Session,
    settings: Settings,
    invoice_id: int,
    files: list[tuple[str, bytes]],
    types: list[str],
) -> list[DisputeAttachment]:
    """Write the files (already checked) and their ``pending`` rows (committed)."""
    folder = attachments_root(settings) / str(invoice_id)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for (name, content), mime in zip(files, types, strict=True):
        stored = f"{invoice_id}/{secrets.token_hex(16)}"
        path = attachments_root(settings) / stored
        tmp = path.with_suffix(".part")
        tmp.write_bytes(content)
        tmp.rename(path)
        row = DisputeAttachment(
            invoice_id=invoice_id,
            filename=safe_filename(name),
            content_type=mime,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            stored_name=stored,
        )
        session.add(row)
        rows.append(row)
    session.commit()
    for row in rows:
        session.refresh(row)
    return rows


def _orphaned(
    session: Session, settings: Settings, rows: list[DisputeAttachment], why: str
) -> None:
    """The dispute was not opened: the files go, the rows say so."""
    for row in rows:
        (attachments_root(settings) / row.stored_name).unlink(missing_ok=True)
        row.status = "orphaned"
        row.detail = f"dispute not opened: {why}"[:500]
        session.add(row)
    session.commit()


async def customer_dispute(
    session: Session,
    client: Client,
    settings: Settings,
    customer_id: int,
    invoice_id: int,
    reason_code: ReasonCode,
    text: str,
    amount_minor: int | None,
    attachments: list[tuple[str, bytes]],
) -> Invoice:
    """Open the same dispute a specialist does (reminders stop), with up to three files
    (PDF, PNG, JPEG, told from their bytes); the customer gets a confirmation."""
    invoice = _open_invoice(session, customer_id, invoice_id)
    if reason_code not in REASON_LABELS:
        raise unprocessable(f"unknown reason {reason_code!r}")
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise unprocessable(f"the text is longer than {MAX_TEXT} characters")
    if amount_minor is not None and not 0 < amount_minor <= invoice.balance_minor:
        raise unprocessable("the disputed amount must be more than 0 and at most the balance")
    types = check_attachments(settings, attachments)
    reason = REASON_LABELS[reason_code] + (f": {text}" if text else "")
    body = DisputeCreate(reason=reason, amount_minor=amount_minor)
    rows = _store_files(session, settings, invoice_id, attachments, types) if attachments else []
    try:
        invoice = await actions.open_dispute(session, client, settings, invoice_id, body, CUSTOMER)
    except Exception as exc:
        if rows:
            session.rollback()
            _orphaned(session, settings, rows, str(exc) or type(exc).__name__)
        raise
    dispute = session.exec(
        select(Dispute)
        .where(Dispute.invoice_id == invoice_id, Dispute.opened_by == CUSTOMER)
        .order_by(col(Dispute.id).desc())
    ).first()
    assert dispute is not None and dispute.id is not None
    for row in rows:
        row.dispute_id, row.status = dispute.id, "stored"
        session.add(row)
    if rows:
        add_event(
            session,
            invoice_id,
            "dispute_attachments",
            {"dispute_id": dispute.id, "attachment_ids": [r.id for r in rows]},
            actor=CUSTOMER,
        )
    session.commit()
    await confirm(session, client, settings, invoice_id, "dispute", dispute.id)
    session.refresh(invoice)
    return invoice


def list_attachments(session: Session, invoice_id: int) -> list[DisputeAttachment]:
    """The invoice's stored attachments, oldest first."""
    return list(
        session.exec(
            select(DisputeAttachment)
            .where(DisputeAttachment.invoice_id == invoice_id, DisputeAttachment.status == "stored")
            .order_by(col(DisputeAttachment.id))
        ).all()
    )


def read_attachment(
    session: Session, settings: Settings, invoice_id: int, attachment_id: int
) -> tuple[DisputeAttachment, bytes]:
    """One stored attachment of the invoice and its bytes (checked against its hash)."""
    row = session.get(DisputeAttachment, attachment_id)
    if row is None or row.invoice_id != invoice_id or row.status != "stored":
        raise not_found("attachment", attachment_id)
    path = attachments_root(settings) / row.stored_name
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise not_found("attachment file", attachment_id) from None
    if hashlib.sha256(content).hexdigest() != row.sha256:
        raise conflict(f"attachment {attachment_id} does not match its stored checksum")
    return row, content


def customer_attachment(
    session: Session, settings: Settings, customer_id: int, invoice_id: int, attachment_id: int
) -> tuple[DisputeAttachment, bytes]:
    """``read_attachment`` for the portal: only the customer's own invoice."""
    customer_invoice(session, customer_id, invoice_id)
    return read_attachment(session, settings, invoice_id, attachment_id)


# -- payment plans ---------------------------------------------------------------------------


@dataclass
class ProposalOutcome:
    """``accepted``: the plan is agreed (``plan_id``); ``pending``: the owner decides
    (``proposal``), for the reasons in ``out_of_bounds``."""

    status: Literal["accepted", "pending"]
    invoice: Invoice
    plan_id: int | None = None
    proposal: PlanProposal | None = None
    out_of_bounds: list[str] = field(default_factory=list)


def _check_plan(
    invoice: Invoice, policy: DunningPolicy, today: date, lines: list[tuple[date, int]]
) -> list[str]:
    """Refuse what no one could agree (4xx); answer why the plan is outside the portal's
    bounds (empty: inside)."""
    if not lines:
        raise unprocessable("a plan needs at least one instalment")
    if any(amount <= 0 for _, amount in lines):
        raise unprocessable("every instalment must be more than 0")
    total = sum(amount for _, amount in lines)
    if total != invoice.balance_minor:
        raise unprocessable(
            f"the instalments add up to {total}, the open balance is {invoice.balance_minor}",
            {"total_minor": total, "balance_minor": invoice.balance_minor},
        )
    dates = [d for d, _ in lines]
    if any(b <= a for a, b in zip(dates, dates[1:], strict=False)):
        raise unprocessable("instalment dates must be in ascending order, one per date")
    if dates[0] < today:
        raise unprocessable(f"the first instalment is in the past (today is {today.isoformat()})")
    if len(lines) > policy.max_installments:
        raise unprocessable(f"at most {policy.max_installments} instalments")
    why = []
    if len(lines) > policy.portal_plan_max_installments:
        why.append(f"more than {policy.portal_plan_max_installments} instalments")
    first_by = _ahead(today, policy.portal_plan_first_within)
    if dates[0] > first_by:
        why.append(f"first instalment after {first_by.isoformat()}")
    last_by = _ahead(today, policy.portal_plan_max_span)
    if dates[-1] > last_by:
        why.append(f"last instalment after {last_by.isoformat()}")
    smallest = min(amount for _, amount in lines)
    if smallest < policy.portal_plan_min_installment_minor:
        why.append(f"an instalment below {policy.portal_plan_min_installment_minor}")
    return why


def _latest(session: Session, model: type[PaymentPlan] | type[Promise], invoice_id: int) -> int:
    found = session.exec(
        select(model.id).where(model.invoice_id == invoice_id).order_by(col(model.id).desc())
    ).first()
    assert found is not None
    return found


async def propose_plan(
    session: Session,
    client: Client,
    settings: Settings,
    customer_id: int,
    invoice_id: int,
    installments: list[tuple[date, int]],
    note: str = "",
) -> ProposalOutcome:
    """Agree the plan at once when it is within the policy's portal bounds (the same update
    as a specialist's plan); else store it for the owner (a ``plan_proposal`` task)."""
    invoice = _open_invoice(session, customer_id, invoice_id)
    note = (note or "").strip()[:2000]
    policy = _policy(session, invoice)
    why = _check_plan(invoice, policy, customer_today(session, invoice), installments)
    if not why:
        body = PlanCreate(
            installments=[InstallmentIn(due_date=d, amount_minor=a) for d, a in installments],
            note=note,
        )
        invoice = await actions.agree_plan(session, client, settings, invoice_id, body, CUSTOMER)
        plan_id = _latest(session, PaymentPlan, invoice_id)
        await confirm(session, client, settings, invoice_id, "plan", plan_id)
        return ProposalOutcome("accepted", invoice, plan_id=plan_id)
    waiting = session.exec(
        select(PlanProposal.id).where(
            PlanProposal.invoice_id == invoice_id, PlanProposal.status == "pending"
        )
    ).first()
    if waiting is not None:
        raise conflict("a proposed plan for this invoice is waiting for an answer already")
    proposal = PlanProposal(
        invoice_id=invoice_id,
        installments=[{"due_date": d.isoformat(), "amount_minor": a} for d, a in installments],
        note=note,
        out_of_bounds=why,
    )
    session.add(proposal)
    session.flush()
    task = tasks.new_task(
        session, invoice_id, PLAN_PROPOSAL, {"proposal_id": proposal.id, "out_of_bounds": why}
    )
    session.flush()
    proposal.task_id = task.id
    add_event(
        session,
        invoice_id,
        "plan_proposed",
        {"proposal_id": proposal.id, "installments": len(installments), "out_of_bounds": why},
        actor=CUSTOMER,
    )
    session.commit()
    session.refresh(proposal)
    return ProposalOutcome("pending", invoice, proposal=proposal, out_of_bounds=why)


def list_proposals(session: Session, invoice_id: int) -> list[PlanProposal]:
    """The invoice's proposed plans, oldest first."""
    return list(
        session.exec(
            select(PlanProposal)
            .where(PlanProposal.invoice_id == invoice_id)
            .order_by(col(PlanProposal.id))
        ).all()
    )


def _pending(session: Session, invoice_id: int, proposal_id: int) -> PlanProposal:
    proposal = session.get(PlanProposal, proposal_id)
    if proposal is None or proposal.invoice_id != invoice_id:
        raise not_found("plan proposal", proposal_id)
    if proposal.status != "pending":
        raise conflict(f"plan proposal {proposal_id} is already {proposal.status}")
    return proposal


def _decided(
    session: Session, proposal: PlanProposal, status: str, actor: str, note: str | None
) -> None:
    """Record the decision, close its task and say so on the timeline (not committed)."""
    now = utcnow()
    proposal.status, proposal.decided_by, proposal.decided_at = status, actor[:100], now
    proposal.decision_note = note[:2000] if note else None
    session.add(proposal)
    task = session.get(Task, proposal.task_id) if proposal.task_id else None
    if task is not None and task.status == "open":
        tasks.mark_closed(task, "resolved", actor, f"plan proposal {status}", now)
        session.add(task)
        add_event(
            session,
            proposal.invoice_id,
            "task_closed",
            {"task_id": task.id, "task": task.kind, "reason": f"plan proposal {status}"},
            actor=actor,
            dedupe_key=f"task:{task.id}:closed",
            at=now,
        )
    add_event(
        session,
        proposal.invoice_id,
        f"plan_proposal_{status}",
        {"proposal_id": proposal.id, **({"reason": note} if note else {})},
        actor=actor,
        at=now,
    )


async def accept_proposal(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    proposal_id: int,
    actor: str,
) -> PlanProposal:
    """The owner agrees the customer's plan: the same update as their own plan."""
    proposal = _pending(session, invoice_id, proposal_id)
    body = PlanCreate(
        installments=[InstallmentIn.model_validate(i) for i in proposal.installments],
        note=proposal.note,
    )
    await actions.agree_plan(
        session, client, settings, invoice_id, body, actor, key=f"plan-proposal-{proposal_id}"
    )
    proposal = _pending(session, invoice_id, proposal_id)
    _decided(session, proposal, "accepted", actor, None)
    session.commit()
    await confirm(
        session, client, settings, invoice_id, "plan", _latest(session, PaymentPlan, invoice_id)
    )
    session.refresh(proposal)
    return proposal


async def decline_proposal(
    session: Session,
    client: Client,
    settings: Settings,
    invoice_id: int,
    proposal_id: int,
    reason: str,
    actor: str,
) -> PlanProposal:
    """The owner declines the customer's plan, with a reason the customer is told."""
    if not reason.strip():
        raise unprocessable("declining a proposed plan needs a reason")
    proposal = _pending(session, invoice_id, proposal_id)
    _decided(session, proposal, "declined", actor, reason.strip())
    session.commit()
    await confirm(session, client, settings, invoice_id, "plan-declined", proposal_id)
    session.refresh(proposal)
    return proposal


# -- promises --------------------------------------------------------------------------------


async def customer_promise(
    session: Session,
    client: Client,
    settings: Settings,
    customer_id: int,
    invoice_id: int,
    promised_date: date,
    amount_minor: int,
    note: str = "",
) -> Invoice:
    """A promise to pay ``amount_minor`` by ``promised_date`` (today up to the policy's
    ``portal_promise_max`` ahead, the customer's zone): reminders wait until then."""
    invoice = _open_invoice(session, customer_id, invoice_id)
    today = customer_today(session, invoice)
    latest = _ahead(today, _policy(session, invoice).portal_promise_max)
    if not today <= promised_date <= latest:
        raise unprocessable(
            f"the promised date must be between {today.isoformat()} and {latest.isoformat()}"
        )
    if not 0 < amount_minor <= invoice.balance_minor:
        raise unprocessable("the promised amount must be more than 0 and at most the balance")
    body = PromiseCreate(
        promised_date=promised_date, amount_minor=amount_minor, note=(note or "").strip()[:2000]
    )
    invoice = await actions.promise(session, client, settings, invoice_id, body, CUSTOMER)
    await confirm(
        session, client, settings, invoice_id, "promise", _latest(session, Promise, invoice_id)
    )
    session.refresh(invoice)
    return invoice


__all__ = [
    "ProposalOutcome",
    "accept_proposal",
    "customer_attachment",
    "customer_dispute",
    "customer_promise",
    "decline_proposal",
    "list_attachments",
    "list_proposals",
    "propose_plan",
    "read_attachment",
]


@dataclass(frozen=True)
class PortalBounds:
    """What the portal agrees at once for ``invoice`` (its policy's ``portal_*`` fields, from
    the customer's today), for the page to tell the customer before they ask."""

    max_installments: int
    first_by: date
    last_by: date
    min_installment_minor: int
    promise_by: date
    promise_max_days: int


def portal_bounds(session: Session, invoice: Invoice) -> PortalBounds:
    policy = _policy(session, invoice)
    today = customer_today(session, invoice)
    promise_by = _ahead(today, policy.portal_promise_max)
    return PortalBounds(
        max_installments=min(policy.portal_plan_max_installments, policy.max_installments),
        first_by=_ahead(today, policy.portal_plan_first_within),
        last_by=_ahead(today, policy.portal_plan_max_span),
        min_installment_minor=policy.portal_plan_min_installment_minor,
        promise_by=promise_by,
        promise_max_days=(promise_by - today).days,
    )
