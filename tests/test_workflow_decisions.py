"""The invoice workflow's pure decisions (workflows.ladder, plans, payments, disputes, holds,
commands), without a Temporal server: plain state in, state and records out."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from temporalio.exceptions import ApplicationError

from workflows import commands, disputes, holds, ladder, payments, plans
from workflows.types import (
    AGENCY,
    CREDITED,
    LEGAL,
    NOTICE,
    OPEN,
    PAID,
    PLAN,
    DisputeState,
    EscalateInput,
    InstallmentRequest,
    InstallmentState,
    InvoiceWorkflowInput,
    LadderStage,
    NextAction,
    PaymentSignal,
    PlanRequest,
    PlanState,
    PolicySpec,
    PromiseRequest,
    ResolveDisputeRequest,
    ScheduledStep,
)


def utc(y: int, mo: int, d: int, h: int = 0) -> datetime:
    return datetime(y, mo, d, h, tzinfo=UTC)


ESCALATE_AT = utc(2026, 3, 21)


def invoice(**fields: object) -> InvoiceWorkflowInput:
    policy = PolicySpec(
        policy_id=1,
        name="ladder",
        steps=[],
        escalate_after="P20D",
        send_at=None,
        ladder=[
            LadderStage("final", NOTICE, channels=["email"]),
            LadderStage("agency", AGENCY, wait="P10D"),
            LadderStage("legal", LEGAL, wait="P30D"),
        ],
    )
    inp = InvoiceWorkflowInput(
        invoice_id=7,
        currency="EUR",
        amount_minor=1000,
        balance_minor=1000,
        due_at=utc(2026, 3, 1),
        timezone="UTC",
        policy=policy,
    )
    for name, value in fields.items():
        setattr(inp, name, value)
    return inp


def plan_of(*amounts: int) -> PlanState:
    return PlanState(
        plan_id=5,
        installments=[
            InstallmentState(n + 1, f"2026-04-0{n + 1}", utc(2026, 4, n + 1, 23), amount)
            for n, amount in enumerate(amounts)
        ],
    )


# -- ladder ----------------------------------------------------------------------------------


def test_ladder_stages_follow_each_other_after_their_waits() -> None:
    inp = invoice()
    final = ladder.next_stage(inp)
    assert final is not None and final.key == "final"
    assert ladder.stage_due_at(inp, final, ESCALATE_AT) == ESCALATE_AT
    ladder.stage_done(inp, final, ESCALATE_AT)
    assert (inp.ladder_done, inp.stage, inp.ladder_last_at) == (["final"], "final", ESCALATE_AT)

    agency = ladder.next_stage(inp)
    assert agency is not None and agency.key == "agency"
    assert ladder.stage_due_at(inp, agency, ESCALATE_AT) == utc(2026, 3, 31)
    # What the agency stage's message would announce: legal 30 days after it.
    assert ladder.after_stage(inp, agency, utc(2026, 3, 31), ESCALATE_AT) == NextAction(
        kind="escalation", at=utc(2026, 4, 30), step_key="legal"
    )


def test_a_resume_grace_holds_the_next_stage_back() -> None:
    inp = invoice(ladder_done=["final"], ladder_last_at=ESCALATE_AT)
    ladder.hold_back_escalation(inp, utc(2026, 4, 1))  # resume_grace P7D
    assert inp.escalate_not_before == utc(2026, 4, 8)
    ladder.hold_back_escalation(inp, utc(2026, 3, 1))  # an earlier grace keeps the later floor
    assert inp.escalate_not_before == utc(2026, 4, 8)
    agency = ladder.next_stage(inp)
    assert agency is not None
    assert ladder.stage_due_at(inp, agency, ESCALATE_AT) == utc(2026, 4, 8)
    assert ladder.escalation_due_at(inp, ESCALATE_AT) == utc(2026, 4, 8)


def test_the_agency_and_legal_stages_hand_the_invoice_on() -> None:
    inp = invoice()
    handoff = ladder.handoff(inp, LadderStage("agency", AGENCY, agency="Acme"), ["s1"])
    assert handoff is not None and inp.status == "escalated"
    name, arg = handoff
    assert name == "escalate" and isinstance(arg, EscalateInput)
    assert (arg.balance_minor, arg.agency, arg.skipped) == (1000, "Acme", ["s1"])
    assert ladder.handoff(invoice(), LadderStage("final", NOTICE), []) is None
    inp.stage = "agency"
    assert ladder.at_agency(inp)


# -- plans -----------------------------------------------------------------------------------


def test_payments_fill_instalments_in_order_and_roll_over() -> None:
    plan = plan_of(300, 300, 400)
    plans.allocate(plan, 450)
    assert [(i.paid_minor, i.state) for i in plan.installments] == [
        (300, "paid"),
        (150, "pending"),
        (0, "pending"),
    ]
    plan.installments[2].state = "missed"
    plans.allocate(plan, 500)  # a missed instalment takes nothing
    assert [i.paid_minor for i in plan.installments] == [300, 300, 0]


def test_a_plan_completes_when_every_instalment_is_paid() -> None:
    inp = invoice(plan=plan_of(400, 600), hold=PLAN)
    events, record = plans.apply_payment(inp, 400)
    assert (events, record.status, inp.hold) == ([], "active", PLAN)
    events, record = plans.apply_payment(inp, 600)
    assert [e.kind for e in events] == ["plan_completed"]
    assert (record.status, inp.plan, inp.hold) == ("completed", None, None)


def test_plan_steps_and_the_latest_reminder_only() -> None:
    inp = invoice(plan=plan_of(1000))
    plan = inp.plan
    assert plan is not None
    points = plans.plan_points(inp, plan)
    # plan_reminder_offset -P3D, late P1D, plan_grace P5D (send_at unset: exact instants)
    assert [(at, key) for at, key, _, _ in points] == [
        (utc(2026, 3, 29, 23), "plan1-1-before"),
        (utc(2026, 4, 2, 23), "plan1-1-late"),
        (utc(2026, 4, 6, 23), "plan1-1-broken"),
    ]
    due = plans.due_points(inp, plan, utc(2026, 4, 3))
    latest, skipped = plans.latest_reminder(plan, due)
    assert (latest[1], skipped) == ("plan1-1-late", ["plan1-1-before"])
    assert plans.next_point_at(inp, plan) == utc(2026, 4, 6, 23)
    late = plans.mark_late(plan, utc(2026, 4, 3))
    assert late is not None and late[0] == "plan1:late:1"
    assert plans.mark_late(plan, utc(2026, 4, 3)) is None  # late already


# -- payments --------------------------------------------------------------------------------


def test_a_payment_in_the_discount_window_settles_the_invoice() -> None:
    inp = invoice(discount_minor=20, discount_until=utc(2026, 2, 20))
    paid = PaymentSignal(1, 980, "EUR", paid_at=utc(2026, 2, 15))
    record = payments.apply(inp, paid, utc(2026, 2, 16))
    assert (record.balance_after, record.status_after, record.discount_minor) == (0, PAID, 20)
    assert [(m.day, m.amount_minor) for m in inp.movements] == [("2026-02-15", -1000)]
    # A refund reopens it; the discount is lost with the payment.
    back = payments.apply(inp, PaymentSignal(2, 980, "EUR", kind="refund"), utc(2026, 3, 10))
    assert (back.balance_after, back.status_after, back.reopened) == (1000, OPEN, True)
    assert inp.catch_up_note == "payment_reversed"
    assert inp.escalate_not_before == utc(2026, 3, 17)


def test_an_overpayment_becomes_credit() -> None:
    inp = invoice(balance_minor=300)
    record = payments.take_payment(inp, PaymentSignal(1, 500, "EUR"), utc(2026, 3, 5))
    assert (record.balance_after, record.overpaid_minor, inp.status) == (0, 200, PAID)
    assert [(m.day, m.amount_minor) for m in inp.movements] == [("2026-03-05", -300)]


# -- disputes and holds ----------------------------------------------------------------------


def test_an_upheld_dispute_crediting_the_balance_cancels_the_plan() -> None:
    dispute = DisputeState(dispute_id=9, opened_at=utc(2026, 3, 2), sla_at=utc(2026, 3, 16))
    inp = invoice(status="disputed", dispute=dispute, plan=plan_of(1000), hold=PLAN)
    req = ResolveDisputeRequest(9, "upheld", "fair", "ann", credit_minor=1000)
    res = disputes.resolve(inp, req, utc(2026, 3, 10))
    assert [e.kind for e in res.events] == ["dispute_upheld", "plan_cancelled", CREDITED]
    assert (inp.status, inp.balance_minor, inp.plan, inp.hold, res.resume) == (
        CREDITED,
        0,
        None,
        None,
        None,
    )
    cancelled = res.rows()["plan"]
    assert cancelled is not None and cancelled.status == "cancelled"


def test_a_rejected_dispute_resumes_dunning() -> None:
    dispute = DisputeState(dispute_id=9, opened_at=utc(2026, 3, 2), sla_at=utc(2026, 3, 16))
    inp = invoice(status="disputed", dispute=dispute)
    res = disputes.resolve(inp, ResolveDisputeRequest(9, "rejected", "", "ann"), utc(2026, 3, 10))
    assert (inp.status, inp.balance_minor, res.resume) == (OPEN, 1000, "dispute_rejected")


def test_a_promise_is_kept_by_payments_reaching_its_amount() -> None:
    inp = invoice()
    req = PromiseRequest(promised_date="2026-03-20", amount_minor=500, note="", actor="ann")
    holds.promise(inp, req)
    # Checked promise_grace (P3D) after the end of the promised day.
    assert inp.promise is not None and inp.promise.check_at == datetime(
        2026, 3, 23, 23, 59, 59, tzinfo=UTC
    )
    assert holds.promise_payment(inp, 100) is None
    kept = holds.promise_payment(inp, 400)
    assert kept is not None and kept[1].status == "kept" and inp.promise is None


# -- commands --------------------------------------------------------------------------------


def test_plan_checks_refuse_with_the_reason() -> None:
    inp = invoice()
    today = date(2026, 3, 10)

    def refused(*items: tuple[str, int]) -> str:
        req = PlanRequest([InstallmentRequest(d, a) for d, a in items], note="", actor="ann")
        with pytest.raises(ApplicationError) as err:
            commands.check_plan(inp, req, today)
        assert err.value.non_retryable
        return f"{err.value.type}: {err.value.message}"

    assert refused(("2026-03-20", 400)) == (
        "InvalidInput: instalments sum to 400, the open balance is 1000"
    )
    assert refused(("2026-03-01", 1000)) == "InvalidInput: the first instalment is due in the past"
    assert refused(("2026-03-20", 500), ("2026-03-20", 500)) == (
        "InvalidInput: instalment due dates must be strictly increasing"
    )
    commands.check_plan(inp, PlanRequest([InstallmentRequest("2026-03-20", 1000)], "", "a"), today)
    inp.status = PAID
    assert refused(("2026-03-20", 1000)) == (
        "InvalidState: a payment plan cannot be agreed on an invoice that is paid"
    )


def test_send_now_is_refused_before_the_due_date_for_a_later_step() -> None:
    inp = invoice()
    step = ScheduledStep("late_7", "email", "reminder_overdue", utc(2026, 3, 8))
    with pytest.raises(ApplicationError, match="not due yet"):
        commands.check_send_now(inp, step, utc(2026, 2, 20))
    assert commands.check_send_now(inp, step, utc(2026, 3, 2)) is step
    with pytest.raises(ApplicationError, match="every reminder step has been sent"):
        commands.check_send_now(inp, None, utc(2026, 3, 2))
