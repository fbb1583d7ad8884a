"""InvoiceWorkflow: one long-lived workflow per invoice. It decides; activities do.

The main loop is the only place that changes collection state. Signals (payments) and updates
(specialist actions) queue a request; the loop applies them one at a time, between reminders,
so a reminder can never race a payment, a dispute or a pause. Each update's validator refuses
what is plainly wrong at once; the loop checks again when it applies the action (the state may
have moved in between) and the update answers with the new state or the reason it refused.

While a dispute is open, or a hold (pause, promise to pay, payment plan) is on, no dunning
reminder and no escalation goes out. When dunning resumes, steps whose instant passed in the
meantime are not sent in a burst: the latest one is sent (saying why, after a rejected dispute)
and the others are recorded as skipped; the escalation comes no earlier than the policy's
``resume_grace`` after resuming.

After the last reminder the escalation ladder runs (``_ladder_tick``): notices on every channel
they name, the agency hand-off (the invoice is escalated until the agency ends the placement),
the legal stage; each after its wait, held back by the same holds. Late charges are decided
here and posted by the ``post_charges`` activity: a stage's fees before its message, interest
every ``interest_every`` and when the invoice is paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.schedule import (
        build_schedule,
        contact_allowed,
        default_due_at,
        due_steps,
        escalation_at,
        local_today,
        next_action,
        nth_period,
        shift,
    )
    from workflows.search import SEGMENT, STAGE, STATUS
    from workflows.types import (
        AGENCY,
        CANCELLED,
        CLOSED_STATUSES,
        CREDITED,
        DISPUTED,
        ESCALATED,
        LEGAL,
        NOTICE,
        OPEN,
        PAID,
        PAUSED,
        PLAN,
        PROMISE,
        WRITTEN_OFF,
        ActorRequest,
        AgencyEndRequest,
        CancelRequest,
        ChangeResult,
        ChangeSet,
        DisputeRecord,
        DisputeState,
        EndPlacementInput,
        EscalateInput,
        EventSpec,
        InstallmentState,
        InvoiceState,
        InvoiceWorkflowInput,
        LadderStage,
        LegalInput,
        Movement,
        NextAction,
        OpenDisputeRequest,
        PauseRequest,
        PauseState,
        PaymentSignal,
        PlanRecord,
        PlanRequest,
        PlanState,
        PolicyChangeRequest,
        PostChargesInput,
        PromiseRecord,
        PromiseRequest,
        PromiseState,
        RecordClosedInput,
        RecordPaymentInput,
        ResolveDisputeRequest,
        ScheduledStep,
        SegmentMove,
        SendOutcome,
        SendReminderInput,
        TaskRecord,
    )

# Short enough that an activity lost with a killed worker is retried within seconds.
ACTIVITY_TIMEOUT = timedelta(seconds=10)
PROVIDER_ACTIVITY_TIMEOUT = timedelta(seconds=60)
# Notes the next reminder carries even when no step was missed: news the customer must hear.
NEWS_NOTES = frozenset({"payment_reversed"})
SLOW_ACTIVITIES = frozenset({"escalate", "end_placement", "open_legal"})
LOCAL_ACTIVITIES = frozenset({"record_payment", "record_closed", "record_change", "post_charges"})
# The classic ladder of a policy that defines none: the agency hand-off at escalate_after.
CLASSIC_LADDER = (LadderStage(key="agency", kind=AGENCY),)
DELIVERED = frozenset({"sent", "uncertain", "task", "printed"})
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)


def refuse(message: str, kind: str = "InvalidState") -> ApplicationError:
    """An update's business refusal: InvalidState answers 409, InvalidInput 422."""
    return ApplicationError(message, type=kind, non_retryable=True)


@dataclass
class _Command:
    name: str
    request: object
    done: bool = False
    error: ApplicationError | None = None


@workflow.defn(name="InvoiceWorkflow")
class InvoiceWorkflow:
    @workflow.init
    def __init__(self, inp: InvoiceWorkflowInput) -> None:
        # Set here, not only in run(): an update can arrive in the very first workflow task,
        # and its validator runs before run() has started.
        self._inp: InvoiceWorkflowInput | None = inp
        self._cancel: CancelRequest | None = None
        self._seen_payments: set[int] = set()
        self._pending: list[PaymentSignal] = []
        self._commands: list[_Command] = []
        self._schedule: list[ScheduledStep] = build_schedule(
            inp.policy, inp.due_at, inp.timezone, inp.country
        )
        self._escalate_at: datetime | None = escalation_at(inp.policy, inp.due_at, inp.timezone)
        self._indexed: tuple[str, str, str] | None = None
        for step in self._schedule:  # steps moved by a cap or a send-now (carried over runs)
            if step.key in inp.deferred:
                step.at = inp.deferred[step.key]

    # -- state -------------------------------------------------------------

    @property
    def inp(self) -> InvoiceWorkflowInput:
        assert self._inp is not None, "workflow input not set yet"
        return self._inp

    def _done(self) -> set[str]:
        return set(self.inp.sent_steps) | set(self.inp.skipped_steps)

    def _escalation_due_at(self) -> datetime:
        assert self._escalate_at is not None
        floor = self.inp.escalate_not_before
        return max(self._escalate_at, floor) if floor else self._escalate_at

    def _next_action(self) -> NextAction | None:
        inp = self.inp
        if inp.status == DISPUTED and inp.dispute and not inp.dispute.overdue_raised:
            return NextAction(kind="dispute_deadline", at=inp.dispute.sla_at)
        if inp.status != OPEN:
            return None
        if inp.hold == PAUSED and inp.pause:
            return NextAction(kind="resume", at=inp.pause.until) if inp.pause.until else None
        if inp.hold == PROMISE and inp.promise:
            return NextAction(kind="promise_check", at=inp.promise.check_at)
        if inp.hold == PLAN and inp.plan:
            points = self._plan_points(inp.plan)
            if points:
                at, key, kind, _ = min(points, key=lambda p: p[0])
                return NextAction(kind=kind, at=at, step_key=key)
            return None
        nxt = next_action(self._schedule, self._done(), self._escalation_due_at(), False)
        if nxt is None or nxt.kind != "escalation":
            return nxt
        stage = self._next_stage()
        if stage is None:
            return None
        at = self._stage_due_at(stage)
        if not inp.policy.ladder:
            return NextAction(kind="escalation", at=at)
        return NextAction(kind="escalation", at=at, step_key=stage.key)

    # -- escalation ladder ---------------------------------------------------

    def _ladder(self) -> list[LadderStage]:
        return list(self.inp.policy.ladder or CLASSIC_LADDER)

    def _next_stage(self) -> LadderStage | None:
        done = set(self.inp.ladder_done)
        return next((s for s in self._ladder() if s.key not in done), None)

    def _stage_due_at(self, stage: LadderStage, previous_at: datetime | None = None) -> datetime:
        """When ``stage`` is due: its wait after the previous stage (the first stage's after the
        escalation instant), no earlier than the grace after a hold was lifted; a notice also
        within the contact rules, and no earlier than a cap let it go. ``previous_at``: the
        stage before it is taken as done then (what a notice announces of the next one)."""
        inp = self.inp
        at = previous_at or inp.ladder_last_at or self._escalation_due_at()
        if stage.wait not in ("P0D", "PT0S"):
            at = shift(at, stage.wait, inp.timezone, inp.policy.send_at)
        if inp.escalate_not_before is not None and inp.escalate_not_before > at:
            at = inp.escalate_not_before
        if stage.kind == NOTICE:
            at = self._window(at)
        deferred = None if previous_at else inp.ladder_deferred
        if deferred is not None and deferred > at:
            at = deferred
        return at

    async def _ladder_tick(
        self, now: datetime, unsent: list[ScheduledStep]
    ) -> datetime | None | bool:
        """Carry out the next ladder stage when it is due. Reminder steps never sent by then
        are recorded as skipped (never sent late)."""
        inp = self.inp
        stage = self._next_stage()
        if stage is None:
            return None
        at = self._stage_due_at(stage)
        if now < at:
            return at
        skipped = [s.key for s in unsent]
        inp.skipped_steps.extend(skipped)
        if inp.segment and inp.segment in stage.skip_segments:
            self._stage_done(stage, at)
            await self._record(
                f"stage:{stage.key}:skipped",
                [
                    EventSpec(
                        "stage_skipped",
                        {"stage": stage.key, "segment": inp.segment, "skipped": skipped},
                    )
                ],
            )
            return False
        if inp.ladder_deferred is None:  # not a notice's second try after a cap
            await self._post_charges(stage.key)  # its fees first: its message states them
        if stage.kind == NOTICE:
            if not await self._notice(stage, at, skipped):
                return False  # held back by a cap: tried again at the time it gave
        elif stage.kind == AGENCY:
            inp.status = ESCALATED
            await self._activity(
                "escalate",
                EscalateInput(
                    invoice_id=inp.invoice_id,
                    balance_minor=inp.balance_minor,
                    currency=inp.currency,
                    skipped=skipped,
                    stage=stage.key,
                    agency=stage.agency,
                ),
            )
        elif stage.kind == LEGAL:
            inp.status = ESCALATED
            await self._activity(
                "open_legal",
                LegalInput(
                    invoice_id=inp.invoice_id,
                    balance_minor=inp.balance_minor,
                    currency=inp.currency,
                    stage=stage.key,
                    skipped=skipped,
                ),
            )
        self._stage_done(stage, at)
        return False

    def _stage_done(self, stage: LadderStage, at: datetime) -> None:
        """``stage`` is done; the next one's wait counts from ``at``, its scheduled instant."""
        inp = self.inp
        inp.ladder_done.append(stage.key)
        inp.ladder_last_at = at
        inp.ladder_deferred = None
        inp.stage = stage.key

    async def _notice(self, stage: LadderStage, at: datetime, skipped: list[str]) -> bool:
        """A notice on every channel of the stage (a letter and an email, say), each once.
        False when a contact cap holds the rest back until the time it gives."""
        inp = self.inp
        failed = []
        for channel in stage.channels:
            tag = f"{stage.key}:{channel}"
            if tag in inp.ladder_sent:
                continue
            outcome = await self._deliver(
                SendReminderInput(
                    invoice_id=inp.invoice_id,
                    step=ScheduledStep(stage.key, channel, stage.template, at),
                    balance_minor=inp.balance_minor,
                    skipped=skipped,
                    next_action=self._after_stage(stage, at),
                    note=inp.catch_up_note,
                    kind="ladder",
                )
            )
            skipped = []
            if outcome.status == "capped" and outcome.retry_at is not None:
                inp.ladder_deferred = self._window(outcome.retry_at)
                await self._record(
                    f"stage:{stage.key}:deferred:{inp.ladder_deferred.isoformat()}",
                    [
                        EventSpec(
                            "reminder_deferred",
                            {
                                "step": stage.key,
                                "until": inp.ladder_deferred.isoformat(),
                                "reason": outcome.detail,
                            },
                        )
                    ],
                )
                return False
            inp.ladder_sent.append(tag)
            if outcome.status not in DELIVERED:
                failed.append(channel)
        inp.catch_up_note = None
        if failed and len(failed) == len(stage.channels):
            await self._record(
                f"stage:{stage.key}:undeliverable",
                [EventSpec("reminder_undeliverable", {"step": stage.key, "channels": failed})],
                task=TaskRecord(
                    kind="contact_failed", due_at=workflow.now(), data={"step": stage.key}
                ),
            )
        return True

    def _after_stage(self, stage: LadderStage, at: datetime) -> NextAction | None:
        """The next action once ``stage`` is done at ``at`` (what a notice announces)."""
        ladder = self._ladder()
        later = ladder[ladder.index(stage) + 1 :]
        if not later:
            return None
        return NextAction(
            kind="escalation", at=self._stage_due_at(later[0], at), step_key=later[0].key
        )

    # -- late charges ----------------------------------------------------------

    def _interest_due(self) -> datetime | None:
        """When interest is posted next (None: the policy charges none, or the invoice is
        not in a state that accrues it now; a dispute holds postings back, not accrual)."""
        inp = self.inp
        spec = inp.policy.charges
        if spec is None or not (spec.interest_rate_pct or spec.preset):
            return None
        if inp.status not in (OPEN, ESCALATED):
            return None
        return nth_period(inp.due_at, spec.interest_every, inp.interest_posts + 1, inp.timezone)

    async def _interest_tick(self) -> bool:
        """Post interest when a period has ended (the latest one, if several have)."""
        inp = self.inp
        at = self._interest_due()
        now = workflow.now()
        if at is None or now < at:
            return False
        spec = inp.policy.charges
        assert spec is not None  # interest_every is validated longer than zero
        n = inp.interest_posts + 1
        while (nxt := nth_period(inp.due_at, spec.interest_every, n + 1, inp.timezone)) <= now:
            n, at = n + 1, nxt
        inp.interest_posts = n
        await self._post_charges(None, local_today(at, inp.timezone))
        return True

    async def _post_charges(self, stage: str | None, until: date | None = None) -> None:
        """Post what the policy charges now: ``stage``'s fees, the compensation and interest up
        to ``until`` (default: today) once overdue. Each charge is posted once (its key)."""
        inp = self.inp
        spec = inp.policy.charges
        if spec is None:
            return
        due_date = local_today(inp.due_at, inp.timezone)
        day = until or self._today()
        if day <= due_date and stage is None:
            return
        await workflow.execute_local_activity(
            "post_charges",
            PostChargesInput(
                invoice_id=inp.invoice_id,
                currency=inp.currency,
                charges=spec,
                due_date=due_date.isoformat(),
                opening_minor=inp.amount_minor,
                movements=list(inp.movements),
                until=day.isoformat() if day > due_date else None,
                stage=stage,
                stage_balance_minor=inp.balance_minor,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    def _moved(self, amount_minor: int, at: datetime | None = None) -> None:
        """Note a change of the balance (for interest): negative paid or credited."""
        if amount_minor:
            day = local_today(at or workflow.now(), self.inp.timezone)
            self.inp.movements.append(Movement(day.isoformat(), amount_minor))

    def _state(self) -> InvoiceState:
        inp = self.inp
        return InvoiceState(
            invoice_id=inp.invoice_id,
            status=inp.status,
            currency=inp.currency,
            amount_minor=inp.amount_minor,
            balance_minor=inp.balance_minor,
            sent_steps=list(inp.sent_steps),
            skipped_steps=list(inp.skipped_steps),
            next_action=self._next_action(),
            hold=inp.hold,
            dispute_id=inp.dispute.dispute_id if inp.dispute else None,
            plan_id=inp.plan.plan_id if inp.plan else None,
            promise_id=inp.promise.promise_id if inp.promise else None,
        )

    # -- run ---------------------------------------------------------------

    @workflow.run
    async def run(self, inp: InvoiceWorkflowInput) -> InvoiceState:
        self._inp = inp
        # Signals may have been delivered before run started: keep what they queued.
        self._seen_payments |= set(inp.applied_payment_ids) | {
            p.payment_id for p in inp.pending_payments
        }
        self._pending = list(inp.pending_payments) + self._pending

        while True:
            self._index()
            await self._apply_payments()
            await self._run_commands()
            if self._cancel is not None and inp.status not in CLOSED_STATUSES:
                await self._close(CANCELLED, self._cancel.reason, self._cancel.actor)
            if inp.status in CLOSED_STATUSES:
                break
            if await self._interest_tick():
                continue
            wake_at = await self._tick()
            if wake_at is False:
                continue  # something was done: look again before sleeping
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._pending and not self._commands and self._cancel is None:
                    inp.pending_payments = []
                    workflow.continue_as_new(inp)
                continue
            timeout = None
            interest_at = self._interest_due()
            if interest_at is not None and (
                not isinstance(wake_at, datetime) or interest_at < wake_at
            ):
                wake_at = interest_at
            if isinstance(wake_at, datetime):
                timeout = max(wake_at - workflow.now(), timedelta(0))
            try:
                await workflow.wait_condition(
                    lambda: bool(self._pending or self._commands) or self._cancel is not None,
                    timeout=timeout,
                )
            except TimeoutError:
                pass

        # Refuse what is still queued, then let every handler answer before completing.
        await self._run_commands()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._index()
        # Payments that arrived while closing are still recorded (as overpayments), not lost.
        while self._pending:
            await self._apply_payments()
        if inp.status not in CLOSED_STATUSES:
            # A refund or chargeback reopened the invoice while it was closing: carry on.
            inp.pending_payments = []
            workflow.continue_as_new(inp)
        return self._state()

    def _index(self) -> None:
        """Keep the workflow's search attributes in step with its state (one command per
        change, none when nothing changed)."""
        inp = self.inp
        if not inp.search_attributes:
            return
        stage = inp.sent_steps[-1] if inp.sent_steps else ""
        now = (inp.status, stage, inp.segment)
        if now == self._indexed:
            return
        self._indexed = now
        workflow.upsert_search_attributes(
            [STATUS.value_set(inp.status), STAGE.value_set(stage), SEGMENT.value_set(inp.segment)]
        )

    async def _tick(self) -> datetime | None | bool:
        """Do what is due now. Returns False if it acted, else when to wake (None = never)."""
        inp = self.inp
        now = workflow.now()
        if inp.status == DISPUTED and inp.dispute:
            dispute = inp.dispute
            if dispute.overdue_raised:
                return None
            if now < dispute.sla_at:
                return dispute.sla_at
            dispute.overdue_raised = True
            await self._record(
                f"dispute:{dispute.dispute_id}:overdue",
                [EventSpec("dispute_overdue", {"dispute_id": dispute.dispute_id})],
                task=TaskRecord(
                    kind="dispute_overdue",
                    due_at=dispute.sla_at,
                    data={"dispute_id": dispute.dispute_id},
                ),
            )
            return False
        if inp.status != OPEN:
            return None
        if inp.hold == PAUSED and inp.pause:
            if inp.pause.until is None or now < inp.pause.until:
                return inp.pause.until
            await self._resume(now, "pause_ended", "system", [EventSpec("resumed", {})])
            return False
        if inp.hold == PROMISE and inp.promise:
            if now < inp.promise.check_at:
                return inp.promise.check_at
            await self._promise_broken(now)
            return False
        if inp.hold == PLAN and inp.plan:
            return await self._plan_tick(now, inp.plan)
        return await self._dunning_tick(now)

    async def _dunning_tick(self, now: datetime) -> datetime | None | bool:
        inp = self.inp
        escalate_at = self._escalation_due_at()
        assert self._escalate_at is not None
        reminders = [s for s in self._schedule if s.at < self._escalate_at]
        send, skip = due_steps(reminders, self._done(), now)
        if inp.ladder_done or inp.ladder_deferred or now >= escalate_at:
            # The escalation ladder: earlier unsent steps are recorded as skipped, not sent late.
            return await self._ladder_tick(now, skip + ([send] if send else []))
        if send is not None:
            await self._post_charges(send.key)
            await self._send_step(send, skip, escalate_at)
            return False
        if inp.catch_up_note not in NEWS_NOTES:
            inp.catch_up_note = None  # nothing was missed: the next reminder is an ordinary one
        nxt = self._next_action()
        return nxt.at if nxt else None

    async def _send_step(
        self,
        send: ScheduledStep,
        skip: list[ScheduledStep],
        escalate_at: datetime,
        requested_by: str | None = None,
    ) -> SendOutcome:
        """Send one dunning step (recording ``skip`` as skipped); the only way a step goes out.

        The step's channel first, then its fallbacks in order while a channel is blocked
        (opted out, no address) or failed for good; a contact cap moves the step to the time
        the cap frees instead. A step no channel could take is recorded as skipped."""
        inp = self.inp
        inp.skipped_steps.extend(s.key for s in skip)
        for n, channel in enumerate([send.channel, *send.fallback]):
            attempt = ScheduledStep(send.key, channel, send.template, send.at, send.fallback)
            inp.sent_steps.append(send.key)  # as the activity sees it: the next action is after
            outcome = await self._deliver(
                SendReminderInput(
                    invoice_id=inp.invoice_id,
                    step=attempt,
                    balance_minor=inp.balance_minor,
                    skipped=[s.key for s in skip] if n == 0 else [],
                    next_action=self._next_action(),
                    escalate_at=escalate_at,
                    note=inp.catch_up_note,
                    requested_by=requested_by,
                    first_try=n == 0,
                )
            )
            inp.sent_steps.pop()
            if outcome.status in DELIVERED:
                inp.sent_steps.append(send.key)
                inp.catch_up_note = None
                return outcome
            if outcome.status == "capped" and outcome.retry_at is not None:
                at = self._window(max(send.at, outcome.retry_at))
                self._move(send, at)
                await self._record(
                    f"step:{send.key}:deferred:{at.isoformat()}",
                    [
                        EventSpec(
                            "reminder_deferred",
                            {"step": send.key, "until": at.isoformat(), "reason": outcome.detail},
                        )
                    ],
                )
                return outcome
        inp.skipped_steps.append(send.key)
        await self._record(
            f"step:{send.key}:undeliverable",
            [EventSpec("reminder_undeliverable", {"step": send.key})],
            task=TaskRecord(kind="contact_failed", due_at=workflow.now(), data={"step": send.key}),
        )
        return outcome

    def _move(self, step: ScheduledStep, at: datetime) -> None:
        step.at = at
        self.inp.deferred[step.key] = at

    async def _deliver(self, inp: SendReminderInput) -> SendOutcome:
        """The send activity with the policy's caps and the workflow's clock filled in."""
        pol = self.inp.policy
        inp.now = workflow.now()
        inp.max_messages_per_day = pol.max_messages_per_day
        inp.max_calls_per_week = pol.max_calls_per_week
        inp.call_cooldown = pol.call_cooldown
        inp.consolidate = pol.consolidate
        options: dict[str, Any] = {
            "start_to_close_timeout": ACTIVITY_TIMEOUT,
            "retry_policy": ACTIVITY_RETRY,
            "result_type": SendOutcome,
        }
        if self.inp.external_delivery:
            # Well above the provider's own timeout (provider_timeout_seconds, 5 s): a retry
            # never starts while the first call may still be waiting for the provider.
            options["start_to_close_timeout"] = PROVIDER_ACTIVITY_TIMEOUT
            result = await workflow.execute_activity("send_reminder", inp, **options)
        else:
            result = await workflow.execute_local_activity("send_reminder", inp, **options)
        # Histories from before outcomes existed recorded no result: the step was sent.
        return result if isinstance(result, SendOutcome) else SendOutcome("sent")

    def _next_step(self) -> ScheduledStep | None:
        """The next dunning step not sent or skipped yet (before the escalation)."""
        assert self._escalate_at is not None
        done = self._done()
        return next(
            (s for s in self._schedule if s.at < self._escalate_at and s.key not in done), None
        )

    # -- payment plans -------------------------------------------------------

    def _window(self, at: datetime) -> datetime:
        """``at``, or the next instant the customer may be contacted."""
        return contact_allowed(at, self.inp.policy, self.inp.timezone, self.inp.country)

    def _plan_points(self, plan: PlanState) -> list[tuple[datetime, str, str, InstallmentState]]:
        """(instant, step key, kind, instalment) of every plan step not yet done."""
        pol, tz = self.inp.policy, self.inp.timezone
        points = []
        for inst in plan.installments:
            if inst.state in ("paid", "missed"):
                continue
            prefix = f"plan{plan.seq}-{inst.n}"
            for kind, at in (
                (
                    "plan_before",
                    self._window(shift(inst.due_at, pol.plan_reminder_offset, tz, pol.send_at)),
                ),
                ("plan_late", self._window(shift(inst.due_at, "P1D", tz, pol.send_at))),
                ("plan_broken", shift(inst.due_at, pol.plan_grace, tz, pol.send_at)),
            ):
                key = f"{prefix}-{kind.removeprefix('plan_')}"
                if key not in plan.done_steps:
                    points.append((at, key, kind, inst))
        return points

    async def _plan_tick(self, now: datetime, plan: PlanState) -> datetime | None | bool:
        late = [i for i in plan.installments if i.state == "pending" and now > i.due_at]
        if late:
            for inst in late:
                inst.state = "late"
            await self._record(
                f"plan{plan.seq}:late:{','.join(str(i.n) for i in late)}",
                [EventSpec("installment_late", {"plan_id": plan.plan_id, "n": late[0].n})],
                plan=PlanRecord(plan.plan_id, "active", installments=plan.installments),
            )
            return False
        points = sorted((p for p in self._plan_points(plan) if p[0] <= now), key=lambda p: p[0])
        broken = [p for p in points if p[2] == "plan_broken"]
        if broken:
            _, key, _, inst = broken[0]
            inst.state = "missed"
            plan.done_steps.append(key)
            await self._plan_broken(now, plan, inst)
            return False
        if points:
            # No burst: of the plan reminders due, only the latest goes out.
            *older, (at, key, kind, inst) = points
            plan.done_steps.extend(p[1] for p in older)
            plan.done_steps.append(key)
            inp = self.inp
            await self._deliver(
                SendReminderInput(
                    invoice_id=inp.invoice_id,
                    step=ScheduledStep(key=key, channel="email", template=kind, at=at),
                    balance_minor=inp.balance_minor,
                    skipped=[p[1] for p in older],
                    next_action=self._next_action(),
                    kind=kind,
                    installment=inst,
                )
            )
            return False
        upcoming = self._plan_points(plan)
        return min(p[0] for p in upcoming) if upcoming else None

    async def _plan_broken(self, now: datetime, plan: PlanState, inst: InstallmentState) -> None:
        inp = self.inp
        inp.plan = None
        await self._resume(
            now,
            "plan_broken",
            "workflow",
            [EventSpec("plan_broken", {"plan_id": plan.plan_id, "installment": inst.n})],
            plan=PlanRecord(plan_id=plan.plan_id, status="broken", installments=plan.installments),
            customer_counter="broken_plans",
        )

    def _allocate(self, plan: PlanState, amount: int) -> None:
        """Payments fill instalments in order; overpaying one rolls into the next."""
        for inst in plan.installments:
            if amount <= 0:
                break
            if inst.state in ("paid", "missed"):
                continue
            take = min(amount, inst.amount_minor - inst.paid_minor)
            inst.paid_minor += take
            amount -= take
            if inst.paid_minor >= inst.amount_minor:
                inst.state = "paid"

    # -- promises, pauses, resuming -----------------------------------------

    async def _promise_broken(self, now: datetime) -> None:
        inp = self.inp
        promise = inp.promise
        assert promise is not None
        inp.promise = None
        await self._resume(
            now,
            "promise_broken",
            "workflow",
            [
                EventSpec(
                    "promise_broken",
                    {
                        "promise_id": promise.promise_id,
                        "promised_minor": promise.amount_minor,
                        "paid_minor": promise.paid_since_minor,
                    },
                )
            ],
            promise=PromiseRecord(promise_id=promise.promise_id, status="broken"),
            customer_counter="broken_promises",
        )

    async def _resume(
        self,
        now: datetime,
        why: str,
        actor: str,
        events: list[EventSpec],
        dispute: DisputeRecord | None = None,
        plan: PlanRecord | None = None,
        promise: PromiseRecord | None = None,
        customer_counter: str | None = None,
    ) -> None:
        """Lift the hold; dunning goes on without a burst and escalates no earlier than
        ``resume_grace`` from now."""
        inp = self.inp
        inp.hold = None
        inp.pause = None
        grace_end = shift(now, inp.policy.resume_grace, inp.timezone, None)
        if inp.escalate_not_before is None or grace_end > inp.escalate_not_before:
            inp.escalate_not_before = grace_end
        inp.catch_up_note = why
        await self._record(
            f"resume:{why}:{workflow.uuid4()}",
            events,
            actor=actor,
            dispute=dispute,
            plan=plan,
            promise=promise,
            customer_counter=customer_counter,
        )

    # -- payments --------------------------------------------------------------

    async def _apply_payments(self) -> None:
        inp = self.inp
        while self._pending:
            payment = self._pending.pop(0)
            inp.applied_payment_ids.append(payment.payment_id)
            if payment.kind == "payment":
                record = self._take_payment(payment)
            else:
                record = self._reverse_payment(payment)
            record.next_action = self._next_action()
            moved = await workflow.execute_local_activity(
                "record_payment",
                record,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            if moved:  # histories from before segment moves recorded no result
                await self._switch_segment(SegmentMove(**moved))
            if payment.kind == "payment":
                await self._after_payment(payment)
                if inp.status == PAID:
                    await self._post_charges(None)  # interest up to the day it was paid

    async def _switch_segment(self, move: SegmentMove) -> None:
        """The payment moved the customer to another segment: a workflow of its own
        (SegmentSwitchWorkflow, started by this activity, not awaited) switches their open
        invoices, this one too, to the new policy: this invoice's switch is an update this
        loop answers, so it cannot wait for it here."""
        await workflow.execute_activity(
            "start_segment_switch",
            move,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    def _take_payment(self, payment: PaymentSignal) -> RecordPaymentInput:
        """Lower the balance; what is left over becomes credit; a payment inside the
        early-payment window that covers the discounted amount settles the invoice."""
        inp = self.inp
        taken = min(payment.amount_minor, inp.balance_minor)
        inp.balance_minor -= taken
        discount = 0
        if (
            0 < inp.balance_minor <= inp.discount_minor - inp.discount_taken_minor
            and inp.discount_until is not None
            and payment.paid_at is not None
            and payment.paid_at <= inp.discount_until
            and inp.status not in CLOSED_STATUSES
        ):
            discount = inp.balance_minor
            inp.discount_taken_minor += discount
            inp.balance_minor = 0
        if inp.balance_minor == 0 and inp.status not in CLOSED_STATUSES:
            inp.status = PAID
        self._moved(-(taken + discount), payment.paid_at)
        return RecordPaymentInput(
            invoice_id=inp.invoice_id,
            payment_id=payment.payment_id,
            amount_minor=payment.amount_minor,
            balance_after=inp.balance_minor,
            status_after=inp.status,
            next_action=None,
            overpaid_minor=payment.amount_minor - taken,
            discount_minor=discount,
        )

    def _reverse_payment(self, payment: PaymentSignal) -> RecordPaymentInput:
        """A refund or chargeback: the balance goes back up (never above the invoice amount;
        a discount earned by the reversed payment is lost with it). A paid invoice opens
        again and dunning goes on from where it stood, as after a pause."""
        inp = self.inp
        back = payment.amount_minor
        if inp.status == PAID and inp.discount_taken_minor:
            back += inp.discount_taken_minor
            inp.discount_taken_minor = 0
        before = inp.balance_minor
        inp.balance_minor = min(inp.amount_minor, inp.balance_minor + back)
        self._moved(inp.balance_minor - before)
        reopened = inp.status == PAID and inp.balance_minor > 0
        if reopened:
            inp.status = OPEN
            grace_end = shift(workflow.now(), inp.policy.resume_grace, inp.timezone, None)
            if inp.escalate_not_before is None or grace_end > inp.escalate_not_before:
                inp.escalate_not_before = grace_end
            inp.catch_up_note = "payment_reversed"
        return RecordPaymentInput(
            invoice_id=inp.invoice_id,
            payment_id=payment.payment_id,
            amount_minor=payment.amount_minor,
            balance_after=inp.balance_minor,
            status_after=inp.status,
            next_action=None,
            kind=payment.kind,
            reopened=reopened,
        )

    async def _after_payment(self, payment: PaymentSignal) -> None:
        """What a payment changes besides the balance: a plan's instalments, a promise, a
        dispute settled by paying."""
        inp = self.inp
        key = f"payment:{payment.payment_id}:effects"
        if inp.plan is not None:
            plan = inp.plan
            self._allocate(plan, payment.amount_minor)
            done = inp.status == PAID or all(i.state == "paid" for i in plan.installments)
            if done:
                inp.plan = None
                inp.hold = None if inp.hold == PLAN else inp.hold
            events = [EventSpec("plan_completed", {"plan_id": plan.plan_id})] if done else []
            status = "completed" if done else "active"
            plan_record = PlanRecord(plan.plan_id, status, installments=plan.installments)
            await self._record(key, events, plan=plan_record)
        elif inp.promise is not None:
            promise = inp.promise
            promise.paid_since_minor += payment.amount_minor
            if promise.paid_since_minor >= promise.amount_minor or inp.status == PAID:
                inp.promise = None
                events = [EventSpec("promise_kept", {"promise_id": promise.promise_id})]
                record = PromiseRecord(promise_id=promise.promise_id, status="kept")
                if inp.status == OPEN and inp.hold == PROMISE:
                    await self._resume(
                        workflow.now(), "promise_kept", "workflow", events, promise=record
                    )
                else:
                    await self._record(key, events, promise=record)
        if inp.status == PAID and inp.dispute is not None:
            dispute = inp.dispute
            inp.dispute = None
            await self._record(
                key + ":dispute",
                [EventSpec("dispute_closed", {"dispute_id": dispute.dispute_id, "by": "payment"})],
                dispute=DisputeRecord(dispute_id=dispute.dispute_id, status="closed"),
            )

    # -- specialist actions (queued by the update handlers) --------------------

    async def _run_commands(self) -> None:
        while self._commands:
            cmd = self._commands.pop(0)
            try:
                if self.inp.status in CLOSED_STATUSES:
                    raise refuse(f"invoice is already {self.inp.status}")
                await getattr(self, f"_do_{cmd.name}")(cmd)
            except ApplicationError as err:
                cmd.error = err
            cmd.done = True

    async def _submit(self, name: str, request: object) -> InvoiceState:
        cmd = _Command(name, request)
        self._commands.append(cmd)
        await workflow.wait_condition(lambda: cmd.done)
        if cmd.error is not None:
            raise cmd.error
        return self._state()

    def _today(self) -> date:
        return local_today(workflow.now(), self.inp.timezone)

    async def _do_open_dispute(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, OpenDisputeRequest)
        inp = self.inp
        self._check_dispute_opening(req)
        now = workflow.now()
        sla_at = shift(now, inp.policy.dispute_sla, inp.timezone, None)
        inp.status = DISPUTED
        inp.dispute = DisputeState(
            dispute_id=0, opened_at=now, sla_at=sla_at, amount_minor=req.amount_minor
        )
        result = await self._record(
            f"dispute:open:{workflow.uuid4()}",
            [EventSpec("dispute_opened", {"reason": req.reason, "amount_minor": req.amount_minor})],
            actor=req.actor,
            dispute=DisputeRecord(
                dispute_id=None,
                status="open",
                reason=req.reason,
                amount_minor=req.amount_minor,
                sla_at=sla_at,
            ),
        )
        assert result.dispute_id is not None
        inp.dispute.dispute_id = result.dispute_id

    def _check_dispute_opening(self, req: OpenDisputeRequest) -> None:
        inp = self.inp
        if inp.status == DISPUTED:
            raise refuse("the invoice already has an open dispute")
        if inp.status != OPEN:
            raise refuse(f"a dispute cannot be opened on an invoice that is {inp.status}")
        if req.amount_minor is not None and not 0 < req.amount_minor <= inp.balance_minor:
            raise refuse(
                f"disputed amount must be between 1 and the open balance {inp.balance_minor}",
                "InvalidInput",
            )

    async def _do_resolve_dispute(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, ResolveDisputeRequest)
        inp = self.inp
        self._check_resolution(req)
        dispute = inp.dispute
        assert dispute is not None
        credit = req.credit_minor if req.outcome == "upheld" else 0
        balance = inp.balance_minor - credit
        status = CREDITED if balance == 0 else OPEN
        events = [
            EventSpec(
                f"dispute_{req.outcome}",
                {"dispute_id": dispute.dispute_id, "credit_minor": credit, "note": req.note},
            )
        ]
        record = DisputeRecord(
            dispute_id=dispute.dispute_id,
            status=req.outcome,
            outcome_note=req.note,
            credit_minor=credit,
        )
        plan_record = None
        if credit and inp.plan is not None:
            # The plan's instalments summed to the old balance: it no longer holds.
            events.append(
                EventSpec("plan_cancelled", {"plan_id": inp.plan.plan_id, "why": "credit"})
            )
            plan_record = PlanRecord(
                plan_id=inp.plan.plan_id, status="cancelled", installments=inp.plan.installments
            )
            inp.plan = None
            inp.hold = None if inp.hold == PLAN else inp.hold
        inp.dispute = None
        inp.balance_minor = balance
        inp.status = status
        self._moved(-credit)
        if status == CREDITED:
            events.append(EventSpec(CREDITED, {"credit_minor": credit}))
        if status == OPEN and inp.hold is None:
            why = "dispute_rejected" if req.outcome == "rejected" else "dispute_upheld"
            await self._resume(
                workflow.now(), why, req.actor, events, dispute=record, plan=plan_record
            )
            return
        await self._record(
            f"dispute:{dispute.dispute_id}:resolved",
            events,
            actor=req.actor,
            dispute=record,
            plan=plan_record,
        )

    def _check_resolution(self, req: ResolveDisputeRequest) -> None:
        inp = self.inp
        if inp.dispute is None or inp.dispute.dispute_id != req.dispute_id:
            raise refuse(f"dispute {req.dispute_id} is not open on this invoice")
        if req.outcome not in ("upheld", "rejected"):
            raise refuse("outcome must be upheld or rejected", "InvalidInput")
        if req.outcome == "rejected" and req.credit_minor:
            raise refuse("a rejected dispute gives no credit", "InvalidInput")
        if not 0 <= req.credit_minor <= inp.balance_minor:
            raise refuse(
                f"credit must be between 0 and the open balance {inp.balance_minor}",
                "InvalidInput",
            )

    async def _do_set_plan(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, PlanRequest)
        inp = self.inp
        self._check_plan(req)
        installments = [
            InstallmentState(
                n=i + 1,
                due_date=item.due_date,
                due_at=default_due_at(date.fromisoformat(item.due_date), inp.timezone),
                amount_minor=item.amount_minor,
            )
            for i, item in enumerate(req.installments)
        ]
        superseded = inp.promise
        inp.promise = None  # a plan supersedes a promise
        inp.hold = PLAN
        inp.pause = None
        inp.plans_agreed += 1
        inp.plan = PlanState(plan_id=0, installments=installments, seq=inp.plans_agreed)
        result = await self._record(
            f"plan:set:{workflow.uuid4()}",
            [EventSpec("plan_agreed", {"installments": len(installments), "note": req.note})],
            actor=req.actor,
            plan=PlanRecord(
                plan_id=None, status="active", installments=installments, note=req.note
            ),
            promise=(
                PromiseRecord(promise_id=superseded.promise_id, status="superseded")
                if superseded
                else None
            ),
        )
        assert result.plan_id is not None
        inp.plan.plan_id = result.plan_id

    def _check_plan(self, req: PlanRequest) -> None:
        inp = self.inp
        if inp.status != OPEN:
            raise refuse(f"a payment plan cannot be agreed on an invoice that is {inp.status}")
        if inp.plan is not None:
            raise refuse("the invoice already has a payment plan; cancel it first")
        items = req.installments
        if not items:
            raise refuse("a plan needs at least one instalment", "InvalidInput")
        if len(items) > inp.policy.max_installments:
            raise refuse(
                f"at most {inp.policy.max_installments} instalments are allowed", "InvalidInput"
            )
        if any(i.amount_minor <= 0 for i in items):
            raise refuse("every instalment amount must be greater than 0", "InvalidInput")
        total = sum(i.amount_minor for i in items)
        if total != inp.balance_minor:
            raise refuse(
                f"instalments sum to {total}, the open balance is {inp.balance_minor}",
                "InvalidInput",
            )
        try:
            dates = [date.fromisoformat(i.due_date) for i in items]
        except ValueError:
            raise refuse("instalment due dates must be ISO dates", "InvalidInput") from None
        if dates[0] < self._today():
            raise refuse("the first instalment is due in the past", "InvalidInput")
        if any(b <= a for a, b in zip(dates, dates[1:], strict=False)):
            raise refuse("instalment due dates must be strictly increasing", "InvalidInput")

    async def _do_cancel_plan(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, ActorRequest)
        inp = self.inp
        plan = inp.plan
        if plan is None:
            raise refuse("the invoice has no payment plan")
        inp.plan = None
        events = [EventSpec("plan_cancelled", {"plan_id": plan.plan_id, "reason": req.reason})]
        record = PlanRecord(
            plan_id=plan.plan_id, status="cancelled", installments=plan.installments
        )
        if inp.hold == PLAN and inp.status == OPEN:
            await self._resume(workflow.now(), "plan_cancelled", req.actor, events, plan=record)
            return
        await self._record(f"plan:{plan.plan_id}:cancel", events, actor=req.actor, plan=record)

    async def _do_promise(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, PromiseRequest)
        inp = self.inp
        self._check_promise(req)
        promised = date.fromisoformat(req.promised_date)
        check_at = shift(
            default_due_at(promised, inp.timezone), inp.policy.promise_grace, inp.timezone, None
        )
        inp.hold = PROMISE
        inp.pause = None
        inp.promise = PromiseState(
            promise_id=0,
            promised_date=req.promised_date,
            amount_minor=req.amount_minor,
            check_at=check_at,
        )
        result = await self._record(
            f"promise:{workflow.uuid4()}",
            [
                EventSpec(
                    "promise_to_pay",
                    {
                        "promised_date": req.promised_date,
                        "amount_minor": req.amount_minor,
                        "note": req.note,
                    },
                )
            ],
            actor=req.actor,
            promise=PromiseRecord(
                promise_id=None,
                status="open",
                promised_date=req.promised_date,
                amount_minor=req.amount_minor,
            ),
        )
        assert result.promise_id is not None
        inp.promise.promise_id = result.promise_id

    def _check_promise(self, req: PromiseRequest) -> None:
        inp = self.inp
        if inp.status != OPEN:
            raise refuse(f"a promise cannot be recorded on an invoice that is {inp.status}")
        if inp.plan is not None:
            raise refuse("the invoice follows a payment plan; change the plan instead")
        if not 0 < req.amount_minor <= inp.balance_minor:
            raise refuse(
                f"promised amount must be between 1 and the open balance {inp.balance_minor}",
                "InvalidInput",
            )
        try:
            promised = date.fromisoformat(req.promised_date)
        except ValueError:
            raise refuse("promised_date must be an ISO date", "InvalidInput") from None
        if promised < self._today():
            raise refuse("promised_date is in the past", "InvalidInput")

    async def _do_pause(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, PauseRequest)
        inp = self.inp
        self._check_pause(req)
        until = None
        if req.until is not None:
            until = default_due_at(date.fromisoformat(req.until) - timedelta(days=1), inp.timezone)
            until += timedelta(seconds=1)  # 00:00 local on the given day
        inp.hold = PAUSED
        inp.pause = PauseState(reason=req.reason, until=until)
        await self._record(
            f"pause:{workflow.uuid4()}",
            [EventSpec("paused", {"reason": req.reason, "until": req.until})],
            actor=req.actor,
        )

    def _check_pause(self, req: PauseRequest) -> None:
        inp = self.inp
        if inp.status != OPEN:
            raise refuse(f"an invoice that is {inp.status} cannot be paused")
        if inp.hold is not None:
            raise refuse(f"the invoice is already on hold ({inp.hold})")
        if req.until is not None:
            try:
                until = date.fromisoformat(req.until)
            except ValueError:
                raise refuse("until must be an ISO date", "InvalidInput") from None
            if until <= self._today():
                raise refuse("until must be a future date", "InvalidInput")

    async def _do_resume(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, ActorRequest)
        if self.inp.hold != PAUSED:
            raise refuse("the invoice is not paused")
        await self._resume(
            workflow.now(), "resumed", req.actor, [EventSpec("resumed", {"reason": req.reason})]
        )

    async def _do_change_policy(self, cmd: _Command) -> None:
        """The new policy's steps from now on; its steps whose time has passed are recorded
        as skipped (never sent late in a burst), the steps already sent stay sent, and the
        escalation follows the new policy (no earlier than any resume grace)."""
        req = cmd.request
        assert isinstance(req, PolicyChangeRequest)
        inp = self.inp
        old = inp.policy
        now = workflow.now()
        inp.policy = req.policy
        inp.deferred = {}
        if req.segment is not None:
            inp.segment = req.segment
        self._schedule = build_schedule(req.policy, inp.due_at, inp.timezone, inp.country)
        self._escalate_at = escalation_at(req.policy, inp.due_at, inp.timezone)
        done = self._done()
        passed = [s.key for s in self._schedule if s.key not in done and s.at <= now]
        inp.skipped_steps.extend(passed)
        await self._record(
            f"policy:{req.policy.policy_id}:{now.isoformat()}",
            [
                EventSpec(
                    "policy_changed",
                    {
                        "from": old.name,
                        "to": req.policy.name,
                        "reason": req.reason,
                        "skipped": passed,
                    },
                )
            ],
            actor=req.actor,
        )

    def _check_send_now(self) -> ScheduledStep:
        inp = self.inp
        if inp.status != OPEN:
            raise refuse(f"the invoice is {inp.status}: no reminder goes out")
        if inp.hold is not None:
            raise refuse(f"reminders are on hold ({inp.hold})")
        step = self._next_step()
        if step is None:
            raise refuse("every reminder step has been sent; escalation is next")
        if step.at >= inp.due_at > workflow.now():
            raise refuse(
                "the invoice is not due yet and the next reminder is for after the due date"
            )
        return step

    async def _do_send_now(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, ActorRequest)
        step = self._check_send_now()
        # Earlier steps still unsent are due already and were sent or skipped by the loop, so
        # this is the step that would have gone out next: sent now, once, never again.
        now = workflow.now()
        allowed = self._window(now)
        if allowed > now:
            self._move(step, allowed)
            raise refuse(
                f"outside the customer's contact hours: step {step.key} goes out at "
                f"{allowed.isoformat()}"
            )
        outcome = await self._send_step(step, [], self._escalation_due_at(), requested_by=req.actor)
        if step.key not in self.inp.sent_steps:
            raise refuse(
                f"step {step.key} could not go out now: {outcome.detail or outcome.status}"
            )

    def _check_agency_ended(self, req: AgencyEndRequest) -> None:
        inp = self.inp
        if req.outcome not in ("recalled", "returned", "closed"):
            raise refuse("outcome must be recalled, returned or closed", "InvalidInput")
        if not req.reason.strip():
            raise refuse("a reason is required", "InvalidInput")
        at_agency = any(s.key == inp.stage and s.kind == AGENCY for s in self._ladder())
        if inp.status != ESCALATED or not at_agency:
            raise refuse("the invoice is not with a collection agency")

    async def _do_agency_ended(self, cmd: _Command) -> None:
        """The agency no longer works the invoice: it is ours again, and the ladder goes on
        (its next stage after that stage's wait, counted from now)."""
        req = cmd.request
        assert isinstance(req, AgencyEndRequest)
        self._check_agency_ended(req)
        inp = self.inp
        await self._activity(
            "end_placement",
            EndPlacementInput(
                invoice_id=inp.invoice_id,
                outcome=req.outcome,
                reason=req.reason,
                actor=req.actor,
                notify=req.outcome == "recalled",
            ),
        )
        inp.status = OPEN
        inp.ladder_last_at = workflow.now()
        nxt = self._next_stage()
        await self._record(
            f"agency:{req.outcome}:{workflow.uuid4()}",
            [
                EventSpec(
                    "escalation_resumed",
                    {"after": req.outcome, "next_stage": nxt.key if nxt else None},
                )
            ],
            actor=req.actor,
        )

    async def _do_write_off(self, cmd: _Command) -> None:
        req = cmd.request
        assert isinstance(req, ActorRequest)
        await self._close(WRITTEN_OFF, req.reason, req.actor)

    # -- recording -------------------------------------------------------------

    async def _record(
        self,
        dedupe_key: str,
        events: list[EventSpec],
        actor: str = "workflow",
        dispute: DisputeRecord | None = None,
        plan: PlanRecord | None = None,
        promise: PromiseRecord | None = None,
        task: TaskRecord | None = None,
        customer_counter: str | None = None,
    ) -> ChangeResult:
        """Record the state as it is now (the caller has changed it) with the change's events
        and rows, through the ``record_change`` activity, which retries until it succeeds."""
        inp = self.inp
        change = ChangeSet(
            invoice_id=inp.invoice_id,
            actor=actor,
            dedupe_key=dedupe_key,
            events=events,
            status=inp.status,
            hold=inp.hold,
            balance_minor=inp.balance_minor,
            next_action=self._next_action(),
            dispute=dispute,
            plan=plan,
            promise=promise,
            task=task,
            customer_counter=customer_counter,
        )
        result: ChangeResult = await workflow.execute_local_activity(
            "record_change",
            change,
            result_type=ChangeResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if result.moved is not None:
            await self._switch_segment(result.moved)
        return result

    async def _close(self, status: str, reason: str, actor: str) -> None:
        await self._activity(
            "record_closed",
            RecordClosedInput(
                invoice_id=self.inp.invoice_id, status=status, reason=reason, actor=actor
            ),
        )
        # Set only once recorded: the update answers after this, and the API then reads the
        # stored invoice.
        self.inp.status = status

    async def _activity(self, name: str, arg: object) -> None:
        """Run an activity. The ones that only write our own database (recording a payment,
        a closure, an outbox-channel reminder) run as local activities: no task queue round
        trip, about a third fewer history events. Hand-offs to other systems stay regular."""
        if name in LOCAL_ACTIVITIES:
            await workflow.execute_local_activity(
                name, arg, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY
            )
            return
        await workflow.execute_activity(
            name,
            arg,
            # An agency's endpoint (connect, send, answer: each up to its timeout) and the
            # legal documents take longer than a database write.
            start_to_close_timeout=PROVIDER_ACTIVITY_TIMEOUT
            if name in SLOW_ACTIVITIES
            else ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    # -- messages ------------------------------------------------------------

    @workflow.signal(name="payment_received")
    def payment_received(self, payment: PaymentSignal) -> None:
        """A stored payment to apply; the same payment id twice is applied once."""
        if payment.payment_id in self._seen_payments:
            return
        self._seen_payments.add(payment.payment_id)
        self._pending.append(payment)

    def _require_started(self) -> None:
        if self._inp is None:
            raise ApplicationError("the workflow has not started yet", type="NotReady")

    def _require_active(self) -> None:
        self._require_started()
        if self.inp.status in CLOSED_STATUSES:
            raise refuse(f"invoice is already {self.inp.status}")

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> InvoiceState:
        self._cancel = request
        await workflow.wait_condition(lambda: self.inp.status in CLOSED_STATUSES)
        return self._state()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        self._require_active()
        if self._cancel is not None:
            raise ApplicationError("a cancellation is already in progress", type="InvalidState")
        if not request.reason.strip():
            raise ApplicationError("a reason is required", type="InvalidInput")

    @workflow.update(name="open_dispute")
    async def open_dispute(self, request: OpenDisputeRequest) -> InvoiceState:
        return await self._submit("open_dispute", request)

    @open_dispute.validator
    def _validate_open_dispute(self, request: OpenDisputeRequest) -> None:
        self._require_active()
        self._check_dispute_opening(request)

    @workflow.update(name="resolve_dispute")
    async def resolve_dispute(self, request: ResolveDisputeRequest) -> InvoiceState:
        return await self._submit("resolve_dispute", request)

    @resolve_dispute.validator
    def _validate_resolve_dispute(self, request: ResolveDisputeRequest) -> None:
        self._require_active()
        self._check_resolution(request)

    @workflow.update(name="set_plan")
    async def set_plan(self, request: PlanRequest) -> InvoiceState:
        return await self._submit("set_plan", request)

    @set_plan.validator
    def _validate_set_plan(self, request: PlanRequest) -> None:
        self._require_active()
        self._check_plan(request)

    @workflow.update(name="cancel_plan")
    async def cancel_plan(self, request: ActorRequest) -> InvoiceState:
        return await self._submit("cancel_plan", request)

    @cancel_plan.validator
    def _validate_cancel_plan(self, request: ActorRequest) -> None:
        self._require_active()
        if self.inp.plan is None:
            raise refuse("the invoice has no payment plan")

    @workflow.update(name="promise")
    async def promise(self, request: PromiseRequest) -> InvoiceState:
        return await self._submit("promise", request)

    @promise.validator
    def _validate_promise(self, request: PromiseRequest) -> None:
        self._require_active()
        self._check_promise(request)

    @workflow.update(name="pause")
    async def pause(self, request: PauseRequest) -> InvoiceState:
        return await self._submit("pause", request)

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        self._require_active()
        self._check_pause(request)

    @workflow.update(name="resume")
    async def resume(self, request: ActorRequest) -> InvoiceState:
        return await self._submit("resume", request)

    @resume.validator
    def _validate_resume(self, request: ActorRequest) -> None:
        self._require_active()
        if self.inp.hold != PAUSED:
            raise refuse("the invoice is not paused")

    @workflow.update(name="write_off")
    async def write_off(self, request: ActorRequest) -> InvoiceState:
        return await self._submit("write_off", request)

    @write_off.validator
    def _validate_write_off(self, request: ActorRequest) -> None:
        self._require_active()
        if not request.reason.strip():
            raise refuse("a reason is required", "InvalidInput")

    @workflow.update(name="change_policy")
    async def change_policy(self, request: PolicyChangeRequest) -> InvoiceState:
        """Follow another policy from the next step on (a customer changed segment)."""
        return await self._submit("change_policy", request)

    @change_policy.validator
    def _validate_change_policy(self, request: PolicyChangeRequest) -> None:
        self._require_active()
        if not request.policy.steps:
            raise refuse("the policy has no steps", "InvalidInput")

    @workflow.update(name="agency_ended")
    async def agency_ended(self, request: AgencyEndRequest) -> InvoiceState:
        """The invoice comes back from the agency: recalled by us, returned or closed by it."""
        return await self._submit("agency_ended", request)

    @agency_ended.validator
    def _validate_agency_ended(self, request: AgencyEndRequest) -> None:
        self._require_active()
        self._check_agency_ended(request)

    @workflow.update(name="send_now")
    async def send_now(self, request: ActorRequest) -> InvoiceState:
        """Send the next reminder step now instead of at its time (one click, or a bulk job)."""
        return await self._submit("send_now", request)

    @send_now.validator
    def _validate_send_now(self, request: ActorRequest) -> None:
        self._require_active()
        self._check_send_now()

    @workflow.query(name="state")
    def state(self) -> InvoiceState:
        return self._state()


__all__ = ["InvoiceWorkflow", "refuse"]
