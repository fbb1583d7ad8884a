"""The policy simulation: what a policy would have done to past invoices, given what really
happened to them. Pure, no I/O: the same decisions as ``InvoiceWorkflow``, run on a clock of
its own.

``InvoiceRun`` is the workflow's main loop (``workflows/invoice.py``) without Temporal: the
same state (``InvoiceWorkflowInput``), changed by the same functions (``progress``,
``schedule``, ``ladder``, ``holds``, ``plans``, ``payments``, ``disputes``, ``amendments``,
``reminders``, ``charges``), in the same order. Where the workflow runs an activity the run
does what the activity decides in memory: a send is delivered unless the daily contact cap
(``reminders.day_cap``) holds it back, charges are the lines ``charges.lines_due`` gives, a
hand-off escalates. The facts (payments, disputes, promises, plans, pauses, credit notes,
closes) are applied at their real instants, through the same checks as the workflow's updates:
a fact the simulated state refuses (a promise on an invoice the policy already escalated) is
noted and ignored.

``simulate_customer`` runs one customer's invoices together in time order, counting messages
per local day across them as the send activity does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from temporalio.exceptions import ApplicationError

from workflows import amendments, commands, disputes, holds, ladder, payments, plans, progress
from workflows import reminders as rem
from workflows.charges import INTEREST, lines_due
from workflows.schedule import local_today, moved_by, shift
from workflows.types import (
    CANCELLED,
    CLOSED_STATUSES,
    DISPUTED,
    NOTICE,
    OPEN,
    PAID,
    PAUSED,
    PLAN,
    PROMISE,
    WRITTEN_OFF,
    ActorRequest,
    CreditNoteRequest,
    InstallmentRequest,
    InvoiceWorkflowInput,
    LadderStage,
    OpenDisputeRequest,
    PauseRequest,
    PaymentSignal,
    PlanRequest,
    PolicySpec,
    PromiseRequest,
    ResolveDisputeRequest,
    ScheduledStep,
    SendOutcome,
)

MESSAGE_CHANNELS = ("email", "sms", "letter")  # what the daily cap counts (as sending.py)
ACTOR = "simulation"

# Kinds of fact.
PAYMENT = "payment"  # a payment, refund or chargeback (``payment_kind``)
DISPUTE_OPENED = "dispute_opened"
DISPUTE_RESOLVED = "dispute_resolved"  # ``outcome`` upheld/rejected, ``amount_minor`` credit
PROMISE_MADE = "promise"  # ``on``: promised date, ``amount_minor``
PLAN_AGREED = "plan"  # ``installments``: (ISO date, amount)
PLAN_CANCELLED = "plan_cancelled"
PAUSED_FACT = "paused"  # ``on``: ISO date it ends, or None
RESUMED = "resumed"
CREDIT_NOTE = "credit_note"  # ``amount_minor``
WRITE_OFF = "written_off"
CANCEL = "cancelled"


@dataclass
class Fact:
    """Something that really happened to the invoice, at the instant it happened."""

    at: datetime
    kind: str
    amount_minor: int = 0
    payment_kind: str = "payment"
    paid_at: datetime | None = None
    outcome: str = ""
    on: str | None = None
    installments: list[tuple[str, int]] = field(default_factory=list)
    ref: int = 0  # the payment's, dispute's or credit note's id


@dataclass
class SimInvoice:
    """What the simulation needs of one past invoice, and its facts in time order."""

    invoice_id: int
    customer_id: int
    currency: str
    amount_minor: int
    due_at: datetime
    timezone: str
    country: str | None = None
    segment: str = ""
    discount_minor: int = 0
    discount_until: datetime | None = None
    start_at: datetime | None = None  # when its workflow started (the invoice was created)
    # Other messages the customer really got about it (confirmations of a payment, a promise,
    # a dispute's outcome): whatever the policy, they count toward the daily cap.
    messages: list[datetime] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)


@dataclass
class SimSend:
    """A message the policy would have sent: ``kind`` reminder (a dunning step), notice (a
    ladder notice) or plan (a payment plan's reminder). ``at``: when it would have gone out;
    ``scheduled_for``: the instant it was due; ``local``: ``at`` on the customer's clock;
    ``moved_by``: what moved it from the policy's own instant (quiet_hours, weekend, holiday,
    cap, hold: sent late after a hold or dispute)."""

    key: str
    kind: str
    channel: str
    at: datetime
    scheduled_for: datetime
    local: str
    moved_by: list[str] = field(default_factory=list)


@dataclass
class SimCharge:
    kind: str  # fee, interest, compensation
    amount_minor: int
    at: datetime
    stage: str | None = None


@dataclass
class SimStage:
    """An escalation ladder stage reached: a notice, an agency hand-off or the legal stage."""

    key: str
    kind: str
    at: datetime


@dataclass
class SimOutcome:
    invoice_id: int
    customer_id: int
    currency: str
    sends: list[SimSend] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    charges: list[SimCharge] = field(default_factory=list)
    stages: list[SimStage] = field(default_factory=list)
    status: str = OPEN
    paid_at: datetime | None = None  # when a real payment paid it in full
    ignored_facts: list[str] = field(default_factory=list)  # refused by the simulated state

    first_escalation_at: datetime | None = None
    # Whether the first escalation stage came before the payment that paid it in full; None
    # when it was never escalated; False when escalated but never paid.
    escalated_before_payment: bool | None = None

    def finish(self) -> SimOutcome:
        self.first_escalation_at = self.stages[0].at if self.stages else None
        if self.first_escalation_at is not None:
            self.escalated_before_payment = (
                self.paid_at is not None and self.first_escalation_at < self.paid_at
            )
        return self


class DayCounter:
    """Messages sent per customer per local day (the daily cap's count)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, date], int] = {}

    def sent(self, customer_id: int, day: date) -> int:
        return self.counts.get((customer_id, day), 0)

    def add(self, customer_id: int, day: date) -> None:
        self.counts[(customer_id, day)] = self.sent(customer_id, day) + 1


def start_input(policy: PolicySpec, invoice: SimInvoice) -> InvoiceWorkflowInput:
    """The workflow's start input for ``invoice`` under ``policy`` (as
    ``arflow.invoices.service.workflow_input`` builds it)."""
    return InvoiceWorkflowInput(
        invoice_id=invoice.invoice_id,
        currency=invoice.currency,
        amount_minor=invoice.amount_minor,
        balance_minor=invoice.amount_minor,
        due_at=invoice.due_at,
        timezone=invoice.timezone,
        policy=policy,
        discount_minor=invoice.discount_minor,
        discount_until=invoice.discount_until,
        segment=invoice.segment,
        country=invoice.country,
    )


class InvoiceRun:
    """One invoice's workflow loop on the simulation's clock."""

    def __init__(self, policy: PolicySpec, invoice: SimInvoice, counter: DayCounter) -> None:
        self.invoice = invoice
        self.inp = start_input(policy, invoice)
        self.counter = counter
        self.facts = sorted(invoice.facts, key=lambda f: f.at)
        self.schedule, self.escalate_at = progress.schedule_for(self.inp)
        # What each step's instant was before the contact rules moved it, and why they did.
        self.moves = {
            s.key: moved_by(
                shift(invoice.due_at, spec.offset, invoice.timezone, policy.send_at),
                s.at,
                policy,
                invoice.timezone,
                invoice.country,
            )
            for s, spec in zip(self.schedule, policy.steps, strict=True)
        }
        self.capped: set[str] = set()
        self.out = SimOutcome(invoice.invoice_id, invoice.customer_id, invoice.currency)
        self.wake: datetime | None = None
        self.interest_charged = 0
        self.interest_until: date | None = None
        self.posted: set[str] = set()

    # -- the clock -----------------------------------------------------------------

    def next_at(self) -> datetime | None:
        """When the run acts next: its next fact or its wake-up, whichever is first."""
        times = [t for t in (self.facts[0].at if self.facts else None, self.wake) if t]
        return min(times) if times else None

    def advance(self, now: datetime) -> None:
        """Apply the facts due at ``now``, then run the loop until it sleeps (``run``)."""
        while self.facts and self.facts[0].at <= now:
            fact = self.facts.pop(0)
            if self.inp.status in CLOSED_STATUSES and fact.kind != PAYMENT:
                continue
            self._apply(fact)
        for _ in range(10_000):
            if self.inp.status in CLOSED_STATUSES:
                self.wake = None
                break
            if self._interest_tick(now):
                continue
            wake_at = self._tick(now)
            if wake_at is False:
                continue
            timeout = progress.sleep_for(self.inp, wake_at, now)
            self.wake = None if timeout is None else now + timeout
            break
        else:  # pragma: no cover - a decision that never settles is a bug
            raise RuntimeError(f"invoice {self.invoice.invoice_id}: the loop does not settle")
        self.out.status = self.inp.status

    # -- the loop's decisions (InvoiceWorkflow._tick and friends) ----------------------------

    def _tick(self, now: datetime) -> datetime | None | bool:
        inp = self.inp
        if inp.status == DISPUTED and inp.dispute:
            dispute = inp.dispute
            if dispute.overdue_raised:
                return None
            if now < dispute.sla_at:
                return dispute.sla_at
            disputes.overdue(dispute)
            return False
        if inp.status != OPEN:
            return None
        if inp.hold == PAUSED and inp.pause:
            if inp.pause.until is None or now < inp.pause.until:
                return inp.pause.until
            holds.lift(inp, now, "pause_ended")
            return False
        if inp.hold == PROMISE and inp.promise:
            if now < inp.promise.check_at:
                return inp.promise.check_at
            holds.promise_broken(inp)
            holds.lift(inp, now, "promise_broken")
            return False
        if inp.hold == PLAN and inp.plan:
            return self._plan_tick(now)
        if holds.small_balance(inp):
            if inp.small_balance_raised:
                return None
            holds.small_balance_task(inp, now)
            return False
        return self._dunning_tick(now)

    def _dunning_tick(self, now: datetime) -> datetime | None | bool:
        inp = self.inp
        send, skip, ladder_turn = progress.dunning_due(inp, self.schedule, self.escalate_at, now)
        if ladder_turn:
            return self._ladder_tick(now, skip + ([send] if send else []))
        if send is not None:
            self._post_charges(send.key, now)
            self._send_step(send, skip, now)
            return False
        if inp.catch_up_note not in rem.NEWS_NOTES:
            inp.catch_up_note = None
        nxt = progress.next_action(inp, self.schedule, self.escalate_at)
        return nxt.at if nxt else None

    def _send_step(self, send: ScheduledStep, skip: list[ScheduledStep], now: datetime) -> None:
        inp = self.inp
        inp.skipped_steps.extend(s.key for s in skip)
        self.out.skipped.extend(s.key for s in skip)
        for channel in [send.channel, *send.fallback]:
            outcome = self._deliver(channel, now)
            if outcome.status in rem.DELIVERED:
                inp.sent_steps.append(send.key)
                inp.catch_up_note = None
                moves = self.moves.get(send.key, [])
                self._sent(send.key, "reminder", channel, now, send.at, moves)
                return
            if outcome.status == "capped" and outcome.retry_at is not None:
                rem.defer_step(inp, send, outcome.retry_at)
                self.capped.add(send.key)
                return
        inp.skipped_steps.append(send.key)  # pragma: no cover - every channel delivers here
        self.out.skipped.append(send.key)

    def _ladder_tick(self, now: datetime, unsent: list[ScheduledStep]) -> datetime | None | bool:
        inp = self.inp
        stage = ladder.next_stage(inp)
        if stage is None:
            return None
        at = ladder.stage_due_at(inp, stage, self.escalate_at)
        if now < at:
            return at
        skipped = [s.key for s in unsent]
        inp.skipped_steps.extend(skipped)
        self.out.skipped.extend(skipped)
        if inp.segment and inp.segment in stage.skip_segments:
            ladder.skip_stage(inp, stage, at, skipped)
            return False
        if inp.ladder_deferred is None:
            self._post_charges(stage.key, now)
        if stage.kind == NOTICE:
            if not self._notice(stage, at, now, self._notice_moves(stage, at)):
                return False
        else:
            ladder.handoff(inp, stage, skipped)
        if not any(s.key == stage.key for s in self.out.stages):
            self.out.stages.append(SimStage(stage.key, stage.kind, now))
        ladder.stage_done(inp, stage, at)
        return False

    def _notice_moves(self, stage: LadderStage, at: datetime) -> list[str]:
        """What moved notice ``stage`` to ``at``: its instant without the contact rules."""
        bare = copy.copy(self.inp)
        bare.policy = replace(
            bare.policy, contact_window=None, skip_weekends=False, skip_holidays=False
        )
        raw = ladder.stage_due_at(bare, stage, self.escalate_at)
        return moved_by(raw, at, self.inp.policy, self.inp.timezone, self.inp.country)

    def _notice(self, stage: LadderStage, at: datetime, now: datetime, why: list[str]) -> bool:
        inp = self.inp
        for channel in stage.channels:
            tag = f"{stage.key}:{channel}"
            if tag in inp.ladder_sent:
                continue
            outcome = self._deliver(channel, now)
            if outcome.status == "capped" and outcome.retry_at is not None:
                inp.ladder_deferred = ladder.window(inp, outcome.retry_at)
                self.capped.add(stage.key)
                return False
            inp.ladder_sent.append(tag)
            self._sent(stage.key, "notice", channel, now, at, why)
        inp.catch_up_note = None
        return True

    def _plan_tick(self, now: datetime) -> datetime | None | bool:
        inp = self.inp
        plan = inp.plan
        assert plan is not None
        if plans.mark_late(plan, now) is not None:
            return False
        points = plans.due_points(inp, plan, now)
        if broken := [p for p in points if p[2] == "plan_broken"]:
            plans.miss(inp, plan, broken[0])
            holds.lift(inp, now, "plan_broken")
            return False
        if points:
            (at, key, _kind, _inst), _skipped = plans.latest_reminder(plan, points)
            if self._deliver("email", now).status in rem.DELIVERED:
                self._sent(key, "plan", "email", now, at, [])
            return False
        return plans.next_point_at(inp, plan)

    # -- what the activities do ------------------------------------------------------------

    def _deliver(self, channel: str, now: datetime) -> SendOutcome:
        """The send activity's decision: the daily cap, else delivered (on any channel)."""
        inp = self.inp
        if channel in MESSAGE_CHANNELS:
            day = local_today(now, inp.timezone)
            sent = self.counter.sent(self.invoice.customer_id, day)
            capped = rem.day_cap(sent, inp.policy.max_messages_per_day, now, inp.timezone)
            if capped is not None:
                return capped
            self.counter.add(self.invoice.customer_id, day)
        return SendOutcome("sent")

    def _sent(
        self,
        key: str,
        kind: str,
        channel: str,
        now: datetime,
        scheduled: datetime,
        moves: list[str],
    ) -> None:
        why = list(moves)
        if key in self.capped:
            why.append("cap")
        if now > scheduled and "cap" not in why:
            why.append("hold")
        local = now.astimezone(ZoneInfo(self.inp.timezone)).isoformat()
        self.out.sends.append(SimSend(key, kind, channel, now, scheduled, local, why))

    def _interest_tick(self, now: datetime) -> bool:
        inp = self.inp
        due = ladder.interest_period(inp, now)
        if due is None:
            return False
        inp.interest_posts, at = due
        self._post_charges(None, now, local_today(at, inp.timezone))
        return True

    def _post_charges(self, stage: str | None, now: datetime, until: date | None = None) -> None:
        inp = self.inp
        charges = ladder.charges_to_post(inp, stage, until, local_today(now, inp.timezone))
        if charges is None:
            return
        for line in lines_due(charges, lambda: (self.interest_charged, self.interest_until)):
            if line.dedupe_key in self.posted:
                continue
            self.posted.add(line.dedupe_key)
            if line.kind == INTEREST:
                self.interest_charged += line.amount_minor
                if line.period_to and (
                    self.interest_until is None or line.period_to > self.interest_until
                ):
                    self.interest_until = line.period_to
            self.out.charges.append(SimCharge(line.kind, line.amount_minor, now, line.stage))

    # -- the facts (InvoiceWorkflow's signal and update handlers) ------------------------------

    def _apply(self, fact: Fact) -> None:
        try:
            self._apply_fact(fact)
        except ApplicationError as refused:
            self.out.ignored_facts.append(f"{fact.kind} at {fact.at.isoformat()}: {refused}")

    def _apply_fact(self, fact: Fact) -> None:
        inp, now = self.inp, fact.at
        today = local_today(now, inp.timezone)
        if fact.kind == PAYMENT:
            signal = PaymentSignal(
                fact.ref, fact.amount_minor, inp.currency, fact.payment_kind, fact.paid_at
            )
            was_closed = inp.status in CLOSED_STATUSES
            payments.apply(inp, signal, now)
            self._closed_drops_hold()
            if fact.payment_kind == "payment":
                self._after_payment(fact.amount_minor, now)
                if inp.status == PAID:
                    if not was_closed and self.out.paid_at is None:
                        self.out.paid_at = now
                    self._post_charges(None, now)
            elif inp.status != PAID:
                self.out.paid_at = None
            return
        commands.check_not_closed(inp)
        if fact.kind == DISPUTE_OPENED:
            req = OpenDisputeRequest("", ACTOR, fact.amount_minor or None)
            commands.check_dispute_opening(inp, req)
            disputes.open_dispute(inp, req, now)
            assert inp.dispute is not None
            inp.dispute.dispute_id = fact.ref
        elif fact.kind == DISPUTE_RESOLVED:
            dispute_id = inp.dispute.dispute_id if inp.dispute else fact.ref
            credit = fact.amount_minor if fact.outcome == "upheld" else 0
            resolve = ResolveDisputeRequest(dispute_id, fact.outcome, "", ACTOR, credit)
            commands.check_resolution(inp, resolve)
            res = disputes.resolve(inp, resolve, now)
            self._closed_drops_hold()
            if res.resume is not None:
                holds.lift(inp, now, res.resume)
        elif fact.kind == PROMISE_MADE:
            promise = PromiseRequest(fact.on or "", fact.amount_minor, ACTOR)
            commands.check_promise(inp, promise, today)
            holds.promise(inp, promise)
        elif fact.kind == PLAN_AGREED:
            plan = PlanRequest([InstallmentRequest(d, a) for d, a in fact.installments], "", ACTOR)
            commands.check_plan(inp, plan, today)
            plans.agree(inp, plan)
        elif fact.kind == PLAN_CANCELLED:
            commands.check_cancel_plan(inp)
            plans.cancel(inp, "")
            if inp.hold == PLAN and inp.status == OPEN:
                holds.lift(inp, now, "plan_cancelled")
        elif fact.kind == PAUSED_FACT:
            pause = PauseRequest("", ACTOR, fact.on)
            commands.check_pause(inp, pause, today)
            holds.pause(inp, pause)
        elif fact.kind == RESUMED:
            commands.check_resume(inp)
            holds.lift(inp, now, "resumed")
        elif fact.kind == CREDIT_NOTE:
            note = CreditNoteRequest(fact.ref, fact.amount_minor, "", ACTOR)
            amendments.check_credit_note(inp, note)
            amendments.credit(inp, note, now)
            self._closed_drops_hold()
        elif fact.kind in (WRITE_OFF, CANCEL):
            commands.check_write_off(ActorRequest("closed", ACTOR))
            inp.status = WRITTEN_OFF if fact.kind == WRITE_OFF else CANCELLED
            self._closed_drops_hold()

    def _after_payment(self, amount_minor: int, now: datetime) -> None:
        inp = self.inp
        if inp.plan is not None:
            plans.apply_payment(inp, amount_minor)
        elif inp.promise is not None:
            kept = holds.promise_payment(inp, amount_minor)
            if kept is not None and inp.status == OPEN and inp.hold == PROMISE:
                holds.lift(inp, now, "promise_kept")
        disputes.settled_by_payment(inp)

    def _closed_drops_hold(self) -> None:
        if self.inp.status in CLOSED_STATUSES and self.inp.hold is not None:
            self.inp.hold = None


def simulate_customer(
    policy: PolicySpec, invoices: list[SimInvoice], until: datetime
) -> list[SimOutcome]:
    """Run one customer's invoices under ``policy`` together, in time order, up to ``until``
    (nothing after it is reported): the daily cap counts their messages across invoices, and
    the other messages they really got (``SimInvoice.messages``) at their instants."""
    counter = DayCounter()
    runs = [InvoiceRun(policy, inv, counter) for inv in invoices]
    for run in runs:  # each starts when its workflow did (its first task runs at once)
        run.wake = _start_instant(run)
    others = sorted((at, inv.customer_id, inv.timezone) for inv in invoices for at in inv.messages)
    others.reverse()  # popped from the end, earliest first
    while True:
        due = [(at, i) for i, run in enumerate(runs) if (at := run.next_at()) is not None]
        if others and others[-1][0] <= until and (not due or others[-1][0] <= min(due)[0]):
            at, customer_id, timezone = others.pop()
            counter.add(customer_id, local_today(at, timezone))
            continue
        if not due:
            break
        at, i = min(due)
        if at > until:
            break
        runs[i].advance(at)
    return [run.out.finish() for run in runs]


def _start_instant(run: InvoiceRun) -> datetime:
    """When the simulated workflow starts: when the invoice's did (``start_at``), else at its
    first step; no later than its first fact."""
    first = run.invoice.start_at or min((s.at for s in run.schedule), default=run.escalate_at)
    if run.facts:
        first = min(first, run.facts[0].at)
    return first


def simulate(policy: PolicySpec, invoice: SimInvoice, until: datetime) -> SimOutcome:
    """One invoice alone (no other invoice of its customer counts against its cap)."""
    return simulate_customer(policy, [invoice], until)[0]


__all__ = [
    "Fact",
    "InvoiceRun",
    "SimCharge",
    "SimInvoice",
    "SimOutcome",
    "SimSend",
    "SimStage",
    "simulate",
    "simulate_customer",
]
