"""Segments: which customers get which dunning policy, channels and statements.

Segments are evaluated in order (``position``, then id); the first whose rules hold is the
customer's, unless the profile pins one. ``segment_for`` is a pure function; the rest loads
and records. The default set (created on first use, with its policies):

1. ``key_account`` (key_account = true): policy ``key_account`` (gentle, personal call; after
   90 days a pre-legal letter and email, then a legal review 30 days later: never an agency),
   email / letter / call (no SMS), emails sent personally by the assigned collector, monthly
   statement on the 1st, credit hold after 90 days overdue;
2. ``high_risk`` (risk_score >= 60): policy ``high_risk`` (a call task on the due date, steps
   every few days, the agency after 21 days, legal 90 days after the agency hands it back),
   every channel, credit hold after 30 days;
3. ``standard`` (no rules: everyone else): the ``default`` policy (agency after 45 days), every
   channel, credit hold after 60 days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.customers.behaviour import Behaviour, behaviour
from arflow.customers.events import record_customer_event
from arflow.customers.risk import Risk, risk
from arflow.errors import DomainError, conflict, not_found, unprocessable
from arflow.policies.service import create_policy, ensure_default_policy
from models import Customer, DunningPolicy, Invoice, Segment
from models.policy import DEFAULT_POLICY_NAME, DunningPolicyCreate, LadderStageIn, ReminderStep
from models.segment import (
    DEFAULT_HOLD_OVERDUE_DAYS,
    OP_SYMBOLS,
    SegmentCreate,
    SegmentRule,
    SegmentUpdate,
)
from models.types import utcnow
from workflows.types import CLOSED_STATUSES

Fact = bool | Decimal | None

KEY_ACCOUNT_POLICY = DunningPolicyCreate(
    name="key_account",
    send_at="09:00",
    escalate_after="P90D",
    max_messages_per_day=1,
    # No agency for a key account: a pre-legal letter, then a legal review by the team.
    ladder=[
        LadderStageIn(
            key="pre_legal", kind="notice", channels=["letter", "email"], template="pre_legal"
        ),
        LadderStageIn(key="legal", kind="legal", wait="P30D"),
    ],
    steps=[
        ReminderStep(key="before_due", offset="-P5D", template="reminder_before_due"),
        ReminderStep(key="late_7", offset="P7D", template="reminder_overdue"),
        ReminderStep(key="late_21", offset="P21D", template="reminder_overdue"),
        ReminderStep(key="personal_call", offset="P30D", channel="call", template="reminder"),
        ReminderStep(
            key="final_notice",
            offset="P60D",
            channel="letter",
            template="final_notice",
            fallback=["email"],
        ),
    ],
)
HIGH_RISK_POLICY = DunningPolicyCreate(
    name="high_risk",
    send_at="09:00",
    escalate_after="P21D",
    # The agency at day 21; legal action if it hands the account back (90 days on).
    ladder=[
        LadderStageIn(key="agency", kind="agency"),
        LadderStageIn(key="legal", kind="legal", wait="P90D"),
    ],
    promise_grace="P1D",
    plan_grace="P2D",
    resume_grace="P3D",
    max_installments=6,
    steps=[
        ReminderStep(
            key="before_due", offset="-P3D", template="reminder_before_due", fallback=["sms"]
        ),
        ReminderStep(key="due_date_call", offset="P0D", channel="call", template="reminder"),
        ReminderStep(
            key="first_late_day", offset="P1D", template="reminder_overdue", fallback=["sms"]
        ),
        ReminderStep(
            key="late_3",
            offset="P3D",
            channel="sms",
            template="reminder_overdue",
            fallback=["email"],
        ),
        ReminderStep(key="late_7_call", offset="P7D", channel="call", template="reminder"),
        ReminderStep(
            key="final_notice",
            offset="P14D",
            channel="letter",
            template="final_notice",
            fallback=["email"],
        ),
    ],
)
DEFAULT_SEGMENTS = (
    SegmentCreate(
        name="key_account",
        position=10,
        description="key accounts: monthly statement, personal email from the collector, no SMS",
        rules=[SegmentRule(field="key_account", op="eq", value=True)],
        policy_name=KEY_ACCOUNT_POLICY.name,
        channels=["email", "letter", "call"],
        sender="collector",
        statement_day=1,
        hold_overdue_days=90,
    ),
    SegmentCreate(
        name="high_risk",
        position=20,
        description="risky customers: a call on the due date, shorter steps, earlier escalation",
        rules=[SegmentRule(field="risk_score", op="gte", value=Decimal(60))],
        policy_name=HIGH_RISK_POLICY.name,
        channels=["email", "sms", "call", "letter"],
        hold_overdue_days=30,
    ),
    SegmentCreate(
        name="standard",
        position=100,
        description="everyone else",
        policy_name=DEFAULT_POLICY_NAME,
        channels=["email", "sms", "call", "letter"],
    ),
)


# -- evaluation (pure) ------------------------------------------------------------------


def facts(customer: Customer, b: Behaviour, r: Risk) -> dict[str, Fact]:
    """What rules can look at, by rule field name (``models.segment.RULE_FIELDS``)."""

    def num(value: int | Decimal | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    return {
        "key_account": customer.key_account,
        "annual_revenue_minor": num(customer.annual_revenue_minor),
        "risk_score": Decimal(r.score),
        "max_days_late": num(b.max_days_late),
        "max_days_overdue": Decimal(b.max_days_overdue),
        "weighted_days_late": b.weighted_days_late,
        "avg_days_late": b.avg_days_late,
        "paid_on_time_pct": b.paid_on_time_pct,
        "broken_promises": Decimal(max(b.broken_promises, b.promises.broken)),
        "broken_plans": Decimal(max(b.broken_plans, b.plans.broken)),
        "rejected_disputes": Decimal(b.disputes.rejected),
        "invoice_count": Decimal(b.invoice_count),
    }


def rule_holds(rule: SegmentRule, known: dict[str, Fact]) -> tuple[bool, str]:
    """Whether ``rule`` holds for these facts, and a line saying why."""
    actual = known.get(rule.field)
    want = rule.value
    if actual is None:
        ok = False
    elif rule.op == "eq":
        ok = actual == want
    elif rule.op == "ne":
        ok = actual != want
    elif isinstance(actual, bool) or isinstance(want, bool):
        ok = False
    elif rule.op == "gt":
        ok = actual > want
    elif rule.op == "gte":
        ok = actual >= want
    elif rule.op == "lt":
        ok = actual < want
    else:
        ok = actual <= want
    shown = "unknown" if actual is None else str(actual).lower()
    wanted = str(want).lower()
    return (
        ok,
        f"{rule.field} is {shown}: {'meets' if ok else 'fails'} {OP_SYMBOLS[rule.op]} {wanted}",
    )


def ordered(segments: list[Segment]) -> list[Segment]:
    return sorted(segments, key=lambda s: (s.position, s.id or 0))


def segment_for(
    customer: Customer, b: Behaviour, segments: list[Segment]
) -> tuple[Segment, list[str]]:
    """The customer's segment and why: the pinned one if it exists, else the first (in order)
    whose rules hold (``match`` all or any; no rules: every customer), else the last one."""
    if not segments:
        raise ValueError("no segments defined")
    in_order = ordered(segments)
    reasons: list[str] = []
    if customer.pinned_segment is not None:
        for seg in in_order:
            if seg.name == customer.pinned_segment:
                return seg, [f"{seg.name}: pinned by the customer's profile"]
        reasons.append(f"pinned segment {customer.pinned_segment!r} does not exist: rules apply")
    known = facts(customer, b, risk(b))
    for seg in in_order:
        checks = [rule_holds(rule, known) for rule in seg.parsed_rules()]
        if not checks:
            reasons.append(f"{seg.name}: yes (no rules: every customer)")
            return seg, reasons
        hit = all(ok for ok, _ in checks) if seg.match == "all" else any(ok for ok, _ in checks)
        joiner = "; " if seg.match == "all" else " or "
        reasons.append(
            f"{seg.name}: {'yes' if hit else 'no'} ({joiner.join(t for _, t in checks)})"
        )
        if hit:
            return seg, reasons
    last = in_order[-1]
    reasons.append(f"no segment matched: the last one, {last.name}")
    return last, reasons


# -- storage ----------------------------------------------------------------------------


def ensure_default_segments(session: Session) -> None:
    """Create the default segments and their policies when no segment exists yet."""
    if session.exec(select(Segment.id).limit(1)).first() is not None:
        return
    # Imported here: arflow.invoices.service imports the activities, which may import this module.

    ensure_default_policy(session)
    for body in (KEY_ACCOUNT_POLICY, HIGH_RISK_POLICY):
        if session.exec(select(DunningPolicy).where(DunningPolicy.name == body.name)).first():
            continue
        try:
            create_policy(session, body)
        except DomainError:  # created concurrently: it exists now
            pass
    for seg in DEFAULT_SEGMENTS:
        session.add(_row(seg))
    try:
        session.commit()
    except IntegrityError:  # another request created them first
        session.rollback()


def load_segments(session: Session) -> list[Segment]:
    """Every segment in evaluation order (the defaults are created on first use)."""
    ensure_default_segments(session)
    return ordered(list(session.exec(select(Segment)).all()))


def get_segment(session: Session, name: str) -> Segment | None:
    return session.exec(select(Segment).where(Segment.name == name)).first()


def hold_overdue_days(session: Session, customer: Customer) -> int:
    """Days overdue after which the customer's segment puts them on credit hold."""
    seg = get_segment(session, customer.segment)
    if seg is None or seg.hold_overdue_days is None:
        return DEFAULT_HOLD_OVERDUE_DAYS
    return seg.hold_overdue_days


def policy_for_customer(session: Session, customer: Customer) -> DunningPolicy | None:
    """The dunning policy of the customer's segment (for new invoices given no policy)."""
    seg = get_segment(session, customer.segment)
    if seg is None:
        return None
    return session.exec(select(DunningPolicy).where(DunningPolicy.name == seg.policy_name)).first()


def _row(body: SegmentCreate) -> Segment:
    return Segment(
        name=body.name,
        **_fields(body),
    )


def _fields(body: SegmentUpdate) -> dict[str, Any]:
    return {
        "position": body.position,
        "description": body.description,
        "match": body.match,
        "policy_name": body.policy_name,
        "channels": list(body.channels),
        "sender": body.sender,
        "statement_day": body.statement_day,
        "hold_overdue_days": body.hold_overdue_days,
        "rules": [r.stored() for r in body.rules],
    }


def _check_policy(session: Session, name: str) -> None:
    if session.exec(select(DunningPolicy.id).where(DunningPolicy.name == name)).first() is None:
        raise unprocessable(f"unknown policy {name!r}")


def create_segment(session: Session, body: SegmentCreate) -> Segment:
    ensure_default_segments(session)
    _check_policy(session, body.policy_name)
    row = _row(body)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(f"a segment named {body.name!r} already exists") from None
    session.refresh(row)
    return row


def update_segment(session: Session, name: str, body: SegmentUpdate) -> Segment:
    ensure_default_segments(session)
    row = get_segment(session, name)
    if row is None:
        raise not_found("segment", repr(name))
    _check_policy(session, body.policy_name)
    if row.experiment_id is not None and body.policy_name != row.policy_name:
        raise conflict(
            f"segment {name!r} runs a champion / challenger experiment on its policy "
            f"{row.policy_name!r}: promote or stop it (/v1/segments/{name}/experiment) first"
        )
    for key, value in _fields(body).items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


# -- moving customers -------------------------------------------------------------------


@dataclass
class SegmentDecision:
    segment: str
    previous: str
    changed: bool
    reasons: list[str]
    policy_name: str
    invoice_ids: list[int] = field(default_factory=list)  # open, policy should change
    event_id: int | None = None  # the customer's segment_changed event


def on_segment_change(
    session: Session,
    customer: Customer,
    old: str,
    new: Segment,
    actor: str = "system",
    reasons: list[str] | None = None,
) -> tuple[list[int], int | None]:
    """Move ``customer`` from segment ``old`` to ``new``: set the segment, apply its statement
    schedule, record a ``segment_changed`` customer event, and return the ids of the open
    invoices whose policy is not the new segment's (their workflows should switch policy from
    the next step on) and the event's id. Does not commit. Touches no workflow."""
    assert customer.id is not None
    policy = session.exec(
        select(DunningPolicy).where(DunningPolicy.name == new.policy_name)
    ).first()
    stmt = select(Invoice.id).where(
        Invoice.customer_id == customer.id, col(Invoice.status).not_in(CLOSED_STATUSES)
    )
    if policy is not None:
        stmt = stmt.where(Invoice.policy_id != policy.id)
    invoice_ids = sorted(i for i in session.exec(stmt).all() if i is not None)
    data: dict[str, object] = {
        "from": old,
        "to": new.name,
        "policy": new.policy_name,
        "reasons": list(reasons or []),
        "invoice_ids": invoice_ids,
    }
    old_row = get_segment(session, old)
    statement_day = customer.statement_day
    if new.statement_day is not None:
        statement_day = new.statement_day
    elif old_row is not None and old_row.statement_day == customer.statement_day:
        statement_day = None  # the day came from the old segment: its statements stop
    if statement_day != customer.statement_day:
        data["statement_day"] = {"from": customer.statement_day, "to": statement_day}
        customer.statement_day = statement_day
    customer.segment = new.name
    session.add(customer)
    event = record_customer_event(session, customer.id, "segment_changed", data, actor)
    session.flush()
    return invoice_ids, event.id


def reevaluate_segment(
    session: Session,
    customer: Customer,
    actor: str,
    now: datetime | None = None,
    b: Behaviour | None = None,
) -> SegmentDecision:
    """Evaluate the customer's segment now; when it differs, move them (``on_segment_change``).
    Does not commit."""
    segments = load_segments(session)
    b = b or behaviour(session, customer, now)
    seg, reasons = segment_for(customer, b, segments)
    previous = customer.segment
    decision = SegmentDecision(
        segment=seg.name,
        previous=previous,
        changed=seg.name != previous,
        reasons=reasons,
        policy_name=seg.policy_name,
    )
    if decision.changed:
        decision.invoice_ids, decision.event_id = on_segment_change(
            session, customer, previous, seg, actor, reasons
        )
    return decision
