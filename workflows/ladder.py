"""The escalation ladder and the timing of late charges: pure decisions, no I/O, safe inside
the workflow.

After the last dunning reminder the ladder's stages run in order (a policy without one has the
classic ladder: the agency hand-off at ``escalate_after``). Each stage is due its ``wait`` after
the stage before it (the first one after the escalation instant), no earlier than the grace
after a hold was lifted; a notice also within the customer's contact hours. Interest is posted
every ``interest_every`` while the invoice is open or escalated; a stage's fees are posted
before its message.

An agency hand-off leaves the invoice escalated until the agency ends the placement; the ladder
then goes on, its next stage's wait counted from then.

The functions read the workflow's state (``InvoiceWorkflowInput``) and the escalation instant
of its schedule; the few that change state say so.
"""

from __future__ import annotations

from datetime import date, datetime

from workflows.schedule import contact_allowed, local_today, nth_period, shift
from workflows.types import (
    AGENCY,
    ESCALATED,
    LEGAL,
    NOTICE,
    OPEN,
    AgencyEndRequest,
    EscalateInput,
    EventSpec,
    InvoiceWorkflowInput,
    LadderStage,
    LegalInput,
    NextAction,
    PolicySpec,
    PostChargesInput,
)

# The classic ladder of a policy that defines none: the agency hand-off at escalate_after.
CLASSIC_LADDER = (LadderStage(key="agency", kind=AGENCY),)


def window(inp: InvoiceWorkflowInput, at: datetime) -> datetime:
    """``at``, or the next instant the customer may be contacted."""
    return contact_allowed(at, inp.policy, inp.timezone, inp.country)


def stages(policy: PolicySpec) -> list[LadderStage]:
    """The policy's ladder, or the classic one."""
    return list(policy.ladder or CLASSIC_LADDER)


def next_stage(inp: InvoiceWorkflowInput) -> LadderStage | None:
    """The first stage not done (or skipped) yet; None when the ladder is finished."""
    done = set(inp.ladder_done)
    return next((s for s in stages(inp.policy) if s.key not in done), None)


def at_agency(inp: InvoiceWorkflowInput) -> bool:
    """Whether the last stage reached is an agency hand-off."""
    return any(s.key == inp.stage and s.kind == AGENCY for s in stages(inp.policy))


def escalation_due_at(inp: InvoiceWorkflowInput, escalate_at: datetime) -> datetime:
    """The schedule's escalation instant, no earlier than the grace after a hold was lifted."""
    floor = inp.escalate_not_before
    return max(escalate_at, floor) if floor else escalate_at


def stage_due_at(
    inp: InvoiceWorkflowInput,
    stage: LadderStage,
    escalate_at: datetime,
    previous_at: datetime | None = None,
) -> datetime:
    """When ``stage`` is due: its wait after the previous stage (the first stage's after the
    escalation instant), no earlier than the grace after a hold was lifted; a notice also
    within the contact rules, and no earlier than a cap let it go. ``previous_at``: the
    stage before it is taken as done then (what a notice announces of the next one)."""
    at = previous_at or inp.ladder_last_at or escalation_due_at(inp, escalate_at)
    if stage.wait not in ("P0D", "PT0S"):
        at = shift(at, stage.wait, inp.timezone, inp.policy.send_at)
    if inp.escalate_not_before is not None and inp.escalate_not_before > at:
        at = inp.escalate_not_before
    if stage.kind == NOTICE:
        at = window(inp, at)
    deferred = None if previous_at else inp.ladder_deferred
    if deferred is not None and deferred > at:
        at = deferred
    return at


def after_stage(
    inp: InvoiceWorkflowInput, stage: LadderStage, at: datetime, escalate_at: datetime
) -> NextAction | None:
    """The next action once ``stage`` is done at ``at`` (what a notice announces)."""
    ladder = stages(inp.policy)
    later = ladder[ladder.index(stage) + 1 :]
    if not later:
        return None
    return NextAction(
        kind="escalation",
        at=stage_due_at(inp, later[0], escalate_at, at),
        step_key=later[0].key,
    )


def stage_done(inp: InvoiceWorkflowInput, stage: LadderStage, at: datetime) -> None:
    """Mark ``stage`` done; the next one's wait counts from ``at``, its scheduled instant."""
    inp.ladder_done.append(stage.key)
    inp.ladder_last_at = at
    inp.ladder_deferred = None
    inp.stage = stage.key


def skip_stage(
    inp: InvoiceWorkflowInput, stage: LadderStage, at: datetime, skipped: list[str]
) -> list[EventSpec]:
    """``stage`` is skipped for the invoice's segment: done at ``at`` without acting."""
    stage_done(inp, stage, at)
    return [
        EventSpec("stage_skipped", {"stage": stage.key, "segment": inp.segment, "skipped": skipped})
    ]


def handoff(
    inp: InvoiceWorkflowInput, stage: LadderStage, skipped: list[str]
) -> tuple[str, EscalateInput | LegalInput] | None:
    """The activity (name, input) that hands the invoice on at ``stage``: to the agency, or
    to the legal stage; the invoice is escalated. None for a stage of another kind."""
    if stage.kind == AGENCY:
        inp.status = ESCALATED
        return "escalate", EscalateInput(
            invoice_id=inp.invoice_id,
            balance_minor=inp.balance_minor,
            currency=inp.currency,
            skipped=skipped,
            stage=stage.key,
            agency=stage.agency,
        )
    if stage.kind == LEGAL:
        inp.status = ESCALATED
        return "open_legal", LegalInput(
            invoice_id=inp.invoice_id,
            balance_minor=inp.balance_minor,
            currency=inp.currency,
            stage=stage.key,
            skipped=skipped,
        )
    return None


def back_from_agency(
    inp: InvoiceWorkflowInput, req: AgencyEndRequest, now: datetime
) -> list[EventSpec]:
    """The agency ended the placement at ``now``: the invoice is open again and the ladder
    goes on (its next stage's wait counted from now)."""
    inp.status = OPEN
    inp.ladder_last_at = now
    nxt = next_stage(inp)
    return [
        EventSpec(
            "escalation_resumed",
            {"after": req.outcome, "next_stage": nxt.key if nxt else None},
        )
    ]


def hold_back_escalation(inp: InvoiceWorkflowInput, now: datetime) -> None:
    """Dunning resumes at ``now``: the escalation comes no earlier than the policy's
    ``resume_grace`` from then (an earlier floor is raised, a later one kept)."""
    grace_end = shift(now, inp.policy.resume_grace, inp.timezone, None)
    if inp.escalate_not_before is None or grace_end > inp.escalate_not_before:
        inp.escalate_not_before = grace_end


def interest_due(inp: InvoiceWorkflowInput) -> datetime | None:
    """When interest is posted next (None: the policy charges none, or the invoice is
    not in a state that accrues it now; a dispute holds postings back, not accrual)."""
    spec = inp.policy.charges
    if spec is None or not (spec.interest_rate_pct or spec.preset):
        return None
    if inp.status not in (OPEN, ESCALATED):
        return None
    return nth_period(inp.due_at, spec.interest_every, inp.interest_posts + 1, inp.timezone)


def interest_period(inp: InvoiceWorkflowInput, now: datetime) -> tuple[int, datetime] | None:
    """The interest period to post at ``now``: (its number, its end), the latest one if several
    have ended since the last posting; None while none has."""
    at = interest_due(inp)
    if at is None or now < at:
        return None
    spec = inp.policy.charges
    assert spec is not None  # interest_every is validated longer than zero
    n = inp.interest_posts + 1
    while (nxt := nth_period(inp.due_at, spec.interest_every, n + 1, inp.timezone)) <= now:
        n, at = n + 1, nxt
    return n, at


def charges_to_post(
    inp: InvoiceWorkflowInput, stage: str | None, until: date | None, today: date
) -> PostChargesInput | None:
    """What the policy charges now: ``stage``'s fees, the compensation and interest up to
    ``until`` (default: ``today``) once overdue. None when there is nothing to post."""
    spec = inp.policy.charges
    if spec is None:
        return None
    due_date = local_today(inp.due_at, inp.timezone)
    day = until or today
    if day <= due_date and stage is None:
        return None
    return PostChargesInput(
        invoice_id=inp.invoice_id,
        currency=inp.currency,
        charges=spec,
        due_date=due_date.isoformat(),
        opening_minor=inp.amount_minor,
        movements=list(inp.movements),
        until=day.isoformat() if day > due_date else None,
        stage=stage,
        stage_balance_minor=inp.balance_minor,
    )
