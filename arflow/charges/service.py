"""Charges on an invoice (``invoice_charges``): posted by the workflow's activity from a
``workflows.charges.ChargeLine``, listed, and waived by a specialist. The invoice's own amount
never changes; each posting and waiver is on the invoice's timeline."""

from __future__ import annotations

from datetime import date

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.errors import conflict, not_found
from arflow.invoices.service import get_invoice
from arflow.invoices.timeline import add_event
from models import InvoiceCharge
from models.charge import ChargePublic, ChargesPublic
from models.types import utcnow
from workflows.charges import INTEREST, ChargeLine, lines_due
from workflows.types import PostChargesInput


def find_charge(session: Session, invoice_id: int, dedupe_key: str) -> InvoiceCharge | None:
    return session.exec(
        select(InvoiceCharge).where(
            InvoiceCharge.invoice_id == invoice_id, InvoiceCharge.dedupe_key == dedupe_key
        )
    ).first()


def interest_charged_minor(session: Session, invoice_id: int) -> int:
    """Every interest charge so far, waived ones too (``charged_before_minor`` for
    ``workflows.charges.interest_charge``: a waived charge is not charged again)."""
    rows = session.exec(
        select(InvoiceCharge.amount_minor).where(
            InvoiceCharge.invoice_id == invoice_id, InvoiceCharge.kind == INTEREST
        )
    ).all()
    return sum(rows)


def last_interest_day(session: Session, invoice_id: int) -> date | None:
    """The last day interest was charged up to (the next period starts after it)."""
    return session.exec(
        select(col(InvoiceCharge.period_to))
        .where(InvoiceCharge.invoice_id == invoice_id, InvoiceCharge.kind == INTEREST)
        .order_by(col(InvoiceCharge.period_to).desc())
    ).first()


def charges_due(session: Session, inp: PostChargesInput) -> list[ChargeLine]:
    """What the workflow's policy charges now (``post_charges``): the stage's fees, then, once
    overdue, the compensation and the interest from the due date up to ``inp.until`` less what
    was charged before. Pure arithmetic in ``workflows.charges.lines_due``; this only reads the
    past."""
    return lines_due(
        inp,
        lambda: (
            interest_charged_minor(session, inp.invoice_id),
            last_interest_day(session, inp.invoice_id),
        ),
    )


def post_charge(
    session: Session, invoice_id: int, line: ChargeLine, actor: str = "workflow"
) -> InvoiceCharge:
    """Record ``line`` on the invoice with a ``charge_posted`` timeline event; posting the
    same ``dedupe_key`` again returns the first row. Commits (one transaction per posting)."""
    invoice = get_invoice(session, invoice_id)
    found = find_charge(session, invoice_id, line.dedupe_key)
    if found is not None:
        return found
    if line.currency != invoice.currency:
        raise ValueError(f"charge in {line.currency} on an invoice in {invoice.currency}")
    row = InvoiceCharge(
        invoice_id=invoice_id,
        kind=line.kind,
        amount_minor=line.amount_minor,
        currency=line.currency,
        period_from=line.period_from,
        period_to=line.period_to,
        stage=line.stage,
        basis=dict(line.basis),
        dedupe_key=line.dedupe_key,
        created_by=actor,
    )
    session.add(row)
    try:
        session.flush()
        assert row.id is not None
        add_event(
            session,
            invoice_id,
            "charge_posted",
            {
                "charge_id": row.id,
                "kind": line.kind,
                "amount_minor": line.amount_minor,
                "currency": line.currency,
                **({"stage": line.stage} if line.stage else {}),
                **({"period_to": line.period_to.isoformat()} if line.period_to else {}),
            },
            actor=actor,
            dedupe_key=f"charge:{line.dedupe_key}",
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        again = find_charge(session, invoice_id, line.dedupe_key)
        if again is None:
            raise
        return again
    session.refresh(row)
    return row


def not_waived(session: Session, invoice_id: int) -> list[InvoiceCharge]:
    """The invoice's charges not waived, oldest first."""
    return list(
        session.exec(
            select(InvoiceCharge)
            .where(InvoiceCharge.invoice_id == invoice_id, col(InvoiceCharge.waived_at).is_(None))
            .order_by(col(InvoiceCharge.created_at), col(InvoiceCharge.id))
        ).all()
    )


def settle_charges(
    session: Session, invoice_id: int, amount_minor: int, payment_id: int, actor: str
) -> int:
    """Let money a payment leaves over after the invoice's balance pay the invoice's charges
    (not waived, oldest first) before it becomes the customer's credit: a customer who pays
    the total due a reminder states owes nothing more. Records ``charges_settled``; joins the
    caller's transaction. Returns what is left."""
    if amount_minor <= 0:
        return max(amount_minor, 0)
    rows = not_waived(session, invoice_id)
    left, settled = amount_minor, []
    now = utcnow()
    for row in rows:
        take = min(left, row.amount_minor - row.settled_minor)
        if take <= 0:
            continue
        row.settled_minor += take
        row.settled_at = now
        session.add(row)
        settled.append({"charge_id": row.id, "amount_minor": take})
        left -= take
        if left == 0:
            break
    if settled:
        add_event(
            session,
            invoice_id,
            "charges_settled",
            {
                "payment_id": payment_id,
                "settled_minor": amount_minor - left,
                "charges": settled,
            },
            actor=actor,
            dedupe_key=f"charges_settled:{payment_id}",
        )
    return left


def charges_of(session: Session, invoice_id: int) -> ChargesPublic:
    invoice = get_invoice(session, invoice_id)
    rows = session.exec(
        select(InvoiceCharge)
        .where(InvoiceCharge.invoice_id == invoice_id)
        .order_by(col(InvoiceCharge.created_at), col(InvoiceCharge.id))
    ).all()
    return ChargesPublic(
        invoice_id=invoice_id,
        currency=invoice.currency,
        invoice_amount_minor=invoice.amount_minor,
        charged_minor=sum(r.amount_minor for r in rows if r.waived_at is None),
        waived_minor=sum(r.amount_minor for r in rows if r.waived_at is not None),
        settled_minor=sum(r.settled_minor for r in rows if r.waived_at is None),
        outstanding_minor=sum(
            r.amount_minor - r.settled_minor for r in rows if r.waived_at is None
        ),
        charges=[ChargePublic.model_validate(r, from_attributes=True) for r in rows],
    )


def waive_charge(
    session: Session, invoice_id: int, charge_id: int, reason: str, actor: str
) -> InvoiceCharge:
    """Waive one charge with a reason (``charge_waived`` on the timeline); a charge already
    waived is a 409."""
    get_invoice(session, invoice_id)
    row = session.get(InvoiceCharge, charge_id)
    if row is None or row.invoice_id != invoice_id:
        raise not_found("charge", charge_id)
    if row.waived_at is not None:
        raise conflict(f"charge {charge_id} was already waived by {row.waived_by}")
    if row.settled_minor:
        raise conflict(f"charge {charge_id} has been paid ({row.settled_minor} of it)")
    row.waived_at = utcnow()
    row.waived_by = actor
    row.waive_reason = reason
    session.add(row)
    add_event(
        session,
        invoice_id,
        "charge_waived",
        {
            "charge_id": charge_id,
            "kind": row.kind,
            "amount_minor": row.amount_minor,
            "currency": row.currency,
            "reason": reason,
        },
        actor=actor,
        dedupe_key=f"waive:{charge_id}",
    )
    try:
        session.commit()
    except IntegrityError:  # waived by a concurrent request
        session.rollback()
        raise conflict(f"charge {charge_id} was already waived") from None
    session.refresh(row)
    return row
