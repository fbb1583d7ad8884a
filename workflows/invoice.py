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

After the last reminder the escalation ladder runs (``_ladder_tick``): notices, the agency
hand-off, the legal stage. Late charges are posted by the ``post_charges`` activity.

The decisions are pure functions in their own modules (``ladder``, ``plans``, ``payments``,
``disputes``, ``holds``, ``commands``, ``progress``, ``reminders``): this module runs them and
the activities.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Unpack

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import (
        amendments,
        commands,
        disputes,
        holds,
        ladder,
        options,
        payments,
        plans,
        progress,
        reminders,
        trust,
    )
    from workflows.commands import refuse
    from workflows.options import (
        ACTIVITY_RETRY,
        ACTIVITY_TIMEOUT,
        LOCAL_ACTIVITIES,
        PROVIDER_ACTIVITY_TIMEOUT,
        SLOW_ACTIVITIES,
    )
    from workflows.schedule import local_today
    from workflows.search import SEGMENT, STAGE, STATUS
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
        SUPERSEDED,
        WRITTEN_OFF,
        ActorRequest,
        AgencyEndRequest,
        CancelRequest,
        ChangeResult,
        CheckCommandInput,
        CommandCheck,
        CreditNoteRequest,
        CustomerChangeRequest,
        CustomerZone,
        DueDateRequest,
        EndPlacementInput,
        EventSpec,
        InvoiceState,
        InvoiceWorkflowInput,
        LadderStage,
        LoadCustomerZoneInput,
        LoadedPayment,
        LoadPaymentInput,
        NextAction,
        OpenDisputeRequest,
        PauseRequest,
        PaymentSignal,
        PlanRequest,
        PlanState,
        PolicyChangeRequest,
        PromiseRequest,
        RecordClosedInput,
        ResolveDisputeRequest,
        Rows,
        ScheduledStep,
        SegmentMove,
        SendOutcome,
        SendReminderInput,
    )

# A refund that overtakes its payment is parked, not dropped (workflows/payments.py).
PARK_REVERSALS = "park-early-reversals"
# Continue-as-new at our own bound too, not only when the server suggests it.
OWN_HISTORY_BOUND = "own-history-bound"


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
        self._cancel_refused: ApplicationError | None = None
        self._guarded_seen = 0  # guarded updates the loop came to apply in this run
        self._seen_payments: set[int] = set()
        self._pending: list[PaymentSignal] = []
        self._commands: list[_Command] = []
        self._schedule, self._escalate_at = progress.schedule_for(inp)
        self._indexed: tuple[str, str, str] | None = None

    # -- state -------------------------------------------------------------

    @property
    def inp(self) -> InvoiceWorkflowInput:
        assert self._inp is not None, "workflow input not set yet"
        return self._inp

    def _escalation_due_at(self) -> datetime:
        return ladder.escalation_due_at(self.inp, self._escalate_at)

    def _next_action(self) -> NextAction | None:
        return progress.next_action(self.inp, self._schedule, self._escalate_at)

    def _state(self) -> InvoiceState:
        return progress.invoice_state(self.inp, self._next_action())

    def _window(self, at: datetime) -> datetime:
        """``at``, or the next instant the customer may be contacted."""
        return ladder.window(self.inp, at)

    def _today(self) -> date:
        return local_today(workflow.now(), self.inp.timezone)

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
                await self._cancel_invoice(self._cancel)
            if inp.status in CLOSED_STATUSES:
                break
            if await self._interest_tick():
                continue
            wake_at = await self._tick()
            if wake_at is False:
                continue  # something was done: look again before sleeping
            if self._continue_as_new_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._pending and not self._commands and self._cancel is None:
                    inp.pending_payments = []
                    workflow.continue_as_new(inp)
                continue
            timeout = progress.sleep_for(inp, wake_at, workflow.now())
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

    def _continue_as_new_due(self) -> bool:
        """Time for a fresh run: the server suggests it, or this run reached our own bound
        (``options.CONTINUE_AS_NEW_AT_EVENTS``), so a run's length does not depend on how the
        server is configured. Patched: a run already past the bound when this was deployed
        keeps waiting for the server's suggestion."""
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        return info.get_current_history_length() >= options.CONTINUE_AS_NEW_AT_EVENTS and (
            workflow.patched(OWN_HISTORY_BOUND)
        )

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
            events, task = disputes.overdue(dispute)
            await self._record(f"dispute:{dispute.dispute_id}:overdue", events, task=task)
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
            events, rows = holds.promise_broken(inp)
            await self._resume(now, "promise_broken", "workflow", events, **rows)
            return False
        if inp.hold == PLAN and inp.plan:
            return await self._plan_tick(now, inp.plan)
        if holds.small_balance(inp):
            # No reminder, no escalation: a specialist decides (write off), or a payment ends it.
            if inp.small_balance_raised:
                return None
            key, events, task = holds.small_balance_task(inp, now)
            await self._record(key, events, task=task)
            return False
        return await self._dunning_tick(now)

    async def _dunning_tick(self, now: datetime) -> datetime | None | bool:
        inp = self.inp
        escalate_at = self._escalation_due_at()
        send, skip, ladder_turn = progress.dunning_due(inp, self._schedule, self._escalate_at, now)
        if ladder_turn:
            # The escalation ladder: earlier unsent steps are recorded as skipped, not sent late.
            return await self._ladder_tick(now, skip + ([send] if send else []))
        if send is not None:
            await self._post_charges(send.key)
            await self._send_step(send, skip, escalate_at)
            return False
        if inp.catch_up_note not in reminders.NEWS_NOTES:
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
            skipped = [s.key for s in skip] if n == 0 else []
            send_input = reminders.step_input(
                inp, attempt, skipped, self._next_action(), escalate_at, requested_by, n == 0
            )
            outcome = await self._deliver(send_input)
            inp.sent_steps.pop()
            if outcome.status == SUPERSEDED:  # skipped on the timeline meanwhile: so be it
                inp.skipped_steps.append(send.key)
                return outcome
            if outcome.status in reminders.DELIVERED:
                inp.sent_steps.append(send.key)
                inp.catch_up_note = None
                return outcome
            if outcome.status == "capped" and outcome.retry_at is not None:
                at = reminders.defer_step(inp, send, outcome.retry_at)
                key, events = reminders.deferred("step", send.key, at, outcome.detail)
                await self._record(key, events)
                return outcome
        inp.skipped_steps.append(send.key)
        key, events, task = reminders.undeliverable("step", send.key, workflow.now())
        await self._record(key, events, task=task)
        return outcome

    async def _deliver(self, inp: SendReminderInput) -> SendOutcome:
        """The send activity with the policy's caps and the workflow's clock filled in."""
        reminders.with_caps(inp, self.inp.policy, workflow.now())
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

    # -- escalation ladder ---------------------------------------------------

    async def _ladder_tick(
        self, now: datetime, unsent: list[ScheduledStep]
    ) -> datetime | None | bool:
        """Carry out the next ladder stage when it is due. Reminder steps never sent by then
        are recorded as skipped (never sent late)."""
        inp = self.inp
        stage = ladder.next_stage(inp)
        if stage is None:
            return None
        at = ladder.stage_due_at(inp, stage, self._escalate_at)
        if now < at:
            return at
        skipped = [s.key for s in unsent]
        inp.skipped_steps.extend(skipped)
        if inp.segment and inp.segment in stage.skip_segments:
            events = ladder.skip_stage(inp, stage, at, skipped)
            await self._record(f"stage:{stage.key}:skipped", events)
            return False
        if inp.ladder_deferred is None:  # not a notice's second try after a cap
            await self._post_charges(stage.key)  # its fees first: its message states them
        if stage.kind == NOTICE:
            if not await self._notice(stage, at, skipped):
                return False  # held back by a cap: tried again at the time it gave
        elif (handoff := ladder.handoff(inp, stage, skipped)) is not None:
            await self._activity(*handoff)
        ladder.stage_done(inp, stage, at)
        return False

    async def _notice(self, stage: LadderStage, at: datetime, skipped: list[str]) -> bool:
        """A notice on every channel of the stage (a letter and an email, say), each once.
        False when a contact cap holds the rest back until the time it gives."""
        inp = self.inp
        failed = []
        for channel in stage.channels:
            tag = f"{stage.key}:{channel}"
            if tag in inp.ladder_sent:
                continue
            nxt = ladder.after_stage(inp, stage, at, self._escalate_at)
            outcome = await self._deliver(
                reminders.notice_input(inp, stage, channel, at, skipped, nxt)
            )
            skipped = []
            if outcome.status == "capped" and outcome.retry_at is not None:
                inp.ladder_deferred = self._window(outcome.retry_at)
                key, events = reminders.deferred(
                    "stage", stage.key, inp.ladder_deferred, outcome.detail
                )
                await self._record(key, events)
                return False
            inp.ladder_sent.append(tag)
            if outcome.status not in reminders.DELIVERED:
                failed.append(channel)
        inp.catch_up_note = None
        if failed and len(failed) == len(stage.channels):
            key, events, task = reminders.undeliverable("stage", stage.key, workflow.now(), failed)
            await self._record(key, events, task=task)
        return True

    # -- late charges ----------------------------------------------------------

    async def _interest_tick(self) -> bool:
        """Post interest when a period has ended (the latest one, if several have)."""
        inp = self.inp
        due = ladder.interest_period(inp, workflow.now())
        if due is None:
            return False
        inp.interest_posts, at = due
        await self._post_charges(None, local_today(at, inp.timezone))
        return True

    async def _post_charges(self, stage: str | None, until: date | None = None) -> None:
        """Post what the policy charges now (``ladder.charges_to_post``), each charge once."""
        charges = ladder.charges_to_post(self.inp, stage, until, self._today())
        if charges is None:
            return
        await workflow.execute_local_activity(
            "post_charges",
            charges,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    # -- payment plans -------------------------------------------------------

    async def _plan_tick(self, now: datetime, plan: PlanState) -> datetime | None | bool:
        inp = self.inp
        late = plans.mark_late(plan, now)
        if late is not None:
            key, events, record = late
            await self._record(key, events, plan=record)
            return False
        points = plans.due_points(inp, plan, now)
        if broken := [p for p in points if p[2] == "plan_broken"]:
            events, rows = plans.miss(inp, plan, broken[0])
            await self._resume(now, "plan_broken", "workflow", events, **rows)
            return False
        if points:
            (at, key, kind, inst), skipped = plans.latest_reminder(plan, points)
            await self._deliver(
                SendReminderInput(
                    invoice_id=inp.invoice_id,
                    step=ScheduledStep(key=key, channel="email", template=kind, at=at),
                    balance_minor=inp.balance_minor,
                    skipped=skipped,
                    next_action=self._next_action(),
                    kind=kind,
                    installment=inst,
                )
            )
            return False
        return plans.next_point_at(inp, plan)

    # -- promises, pauses, resuming -----------------------------------------

    async def _resume(
        self, now: datetime, why: str, actor: str, events: list[EventSpec], **rows: Unpack[Rows]
    ) -> None:
        """Lift the hold (``holds.lift``) and record it with the change's events and rows."""
        holds.lift(self.inp, now, why)
        await self._record(f"resume:{why}:{workflow.uuid4()}", events, actor=actor, **rows)

    # -- payments --------------------------------------------------------------

    async def _apply_payments(self) -> None:
        inp = self.inp
        while self._pending:
            payment = self._pending.pop(0)
            if self._trusting(trust.PAYMENTS_FROM_ROWS, str(payment.payment_id)):
                stored = await self._stored_payment(payment.payment_id)
                if stored is None:
                    # Not seen after all: the payment may yet be stored under that id.
                    self._seen_payments.discard(payment.payment_id)
                    continue
                payment = stored
            inp.applied_payment_ids.append(payment.payment_id)
            # Histories from before reversals were parked replay without parking.
            park = payment.kind == "payment" or workflow.patched(PARK_REVERSALS)
            record = payments.apply(inp, payment, workflow.now(), park)
            self._closed_drops_hold()
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

    async def _stored_payment(self, payment_id: int) -> PaymentSignal | None:
        """The payment a signal names, as stored: its amount, currency, kind and date come
        from our database, never from the signal (which anyone who reaches Temporal can
        send). None when it is refused; the activity recorded why.

        A local activity (a database read, like ``record_payment`` a write): it can run again
        when its workflow task is retried, after ``record_payment`` marked the payment
        applied, so the activity takes a payment this invoice's timeline already shows
        applied as the one to apply (the workflow's own ``_seen_payments`` keep it from
        being applied twice)."""
        loaded: LoadedPayment = await workflow.execute_local_activity(
            "load_payment",
            LoadPaymentInput(invoice_id=self.inp.invoice_id, payment_id=payment_id),
            result_type=LoadedPayment,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return loaded.payment

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

    async def _after_payment(self, payment: PaymentSignal) -> None:
        """What a payment changes besides the balance: a plan's instalments, a promise, a
        dispute settled by paying."""
        inp = self.inp
        key = f"payment:{payment.payment_id}:effects"
        if inp.plan is not None:
            events, plan_record = plans.apply_payment(inp, payment.amount_minor)
            await self._record(key, events, plan=plan_record)
        elif inp.promise is not None:
            kept = holds.promise_payment(inp, payment.amount_minor)
            if kept is not None:
                events, record = kept
                if inp.status == OPEN and inp.hold == PROMISE:
                    await self._resume(
                        workflow.now(), "promise_kept", "workflow", events, promise=record
                    )
                else:
                    await self._record(key, events, promise=record)
        settled = disputes.settled_by_payment(inp)
        if settled is not None:
            events, dispute_record = settled
            await self._record(key + ":dispute", events, dispute=dispute_record)

    # -- specialist actions (queued by the update handlers) --------------------

    async def _run_commands(self) -> None:
        while self._commands:
            cmd = self._commands.pop(0)
            try:
                commands.check_not_closed(self.inp)
                await self._check_recorded(cmd.name, cmd.request)
                await getattr(self, f"_do_{cmd.name}")(cmd.request)
            except ApplicationError as err:
                cmd.error = err
            cmd.done = True

    async def _check_recorded(self, name: str, request: object) -> None:
        """Refuse an update that carries money or state unless the domain recorded it (an
        ``invoice_commands`` row of this invoice, name and fingerprint): one sent straight to
        Temporal, past the API, is refused and the refusal recorded."""
        if name not in trust.GUARDED_UPDATES:
            return
        self._guarded_seen += 1
        if not self._trusting(trust.RECORDED_COMMANDS, str(self._guarded_seen)):
            return
        check: CommandCheck = await workflow.execute_local_activity(
            "check_command",
            CheckCommandInput(
                invoice_id=self.inp.invoice_id,
                name=name,
                command_id=getattr(request, "command_id", None),
                fingerprint=trust.fingerprint(request),
                key=f"command:{name}:{workflow.uuid4()}",
            ),
            result_type=CommandCheck,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if check.reason is not None:
            raise refuse(f"{name} refused: {check.reason}")

    def _trusting(self, patch: str, occurrence: str) -> bool:
        """Whether to take the path that trusts only our rows (``workflow.patched``). The SDK
        memoizes a patch per run: a run that passed ``patch`` under the old code keeps False
        for it. So each later occurrence there asks a patch of its own, and is guarded from
        the deploy on too (one marker each, only in runs older than the patch)."""
        return workflow.patched(patch) or workflow.patched(f"{patch}:{occurrence}")

    async def _cancel_invoice(self, request: CancelRequest) -> None:
        """The cancellation the ``cancel`` update asked for, if the domain recorded it."""
        try:
            await self._check_recorded("cancel", request)
        except ApplicationError as err:
            self._cancel, self._cancel_refused = None, err
            return
        await self._close(CANCELLED, request.reason, request.actor)

    async def _submit(self, name: str, request: object) -> InvoiceState:
        cmd = _Command(name, request)
        self._commands.append(cmd)
        await workflow.wait_condition(lambda: cmd.done)
        if cmd.error is not None:
            raise cmd.error
        return self._state()

    async def _do_open_dispute(self, req: OpenDisputeRequest) -> None:
        inp = self.inp
        commands.check_dispute_opening(inp, req)
        events, record = disputes.open_dispute(inp, req, workflow.now())
        result = await self._record(
            f"dispute:open:{workflow.uuid4()}", events, actor=req.actor, dispute=record
        )
        assert result.dispute_id is not None and inp.dispute is not None
        inp.dispute.dispute_id = result.dispute_id

    async def _do_resolve_dispute(self, req: ResolveDisputeRequest) -> None:
        commands.check_resolution(self.inp, req)
        res = disputes.resolve(self.inp, req, workflow.now())
        self._closed_drops_hold()
        if res.resume is not None:
            await self._resume(workflow.now(), res.resume, req.actor, res.events, **res.rows())
            return
        key = f"dispute:{res.dispute.dispute_id}:resolved"
        await self._record(key, res.events, actor=req.actor, **res.rows())

    async def _do_set_plan(self, req: PlanRequest) -> None:
        inp = self.inp
        commands.check_plan(inp, req, self._today())
        events, record, superseded = plans.agree(inp, req)
        result = await self._record(
            f"plan:set:{workflow.uuid4()}",
            events,
            actor=req.actor,
            plan=record,
            promise=superseded,
        )
        assert result.plan_id is not None and inp.plan is not None
        inp.plan.plan_id = result.plan_id

    async def _do_cancel_plan(self, req: ActorRequest) -> None:
        inp = self.inp
        commands.check_cancel_plan(inp)
        events, record = plans.cancel(inp, req.reason)
        if inp.hold == PLAN and inp.status == OPEN:
            await self._resume(workflow.now(), "plan_cancelled", req.actor, events, plan=record)
            return
        await self._record(f"plan:{record.plan_id}:cancel", events, actor=req.actor, plan=record)

    async def _do_promise(self, req: PromiseRequest) -> None:
        inp = self.inp
        commands.check_promise(inp, req, self._today())
        events, record = holds.promise(inp, req)
        result = await self._record(
            f"promise:{workflow.uuid4()}", events, actor=req.actor, promise=record
        )
        assert result.promise_id is not None and inp.promise is not None
        inp.promise.promise_id = result.promise_id

    async def _do_pause(self, req: PauseRequest) -> None:
        commands.check_pause(self.inp, req, self._today())
        events = holds.pause(self.inp, req)
        await self._record(f"pause:{workflow.uuid4()}", events, actor=req.actor)

    async def _do_resume(self, req: ActorRequest) -> None:
        commands.check_resume(self.inp)
        await self._resume(
            workflow.now(), "resumed", req.actor, [EventSpec("resumed", {"reason": req.reason})]
        )

    async def _do_change_policy(self, req: PolicyChangeRequest) -> None:
        """The new policy's steps from now on (``progress.follow_policy``)."""
        now = workflow.now()
        self._schedule, self._escalate_at, events = progress.follow_policy(self.inp, req, now)
        await self._record(
            f"policy:{req.policy.policy_id}:{now.isoformat()}", events, actor=req.actor
        )

    async def _do_credit_note(self, req: CreditNoteRequest) -> None:
        amendments.check_credit_note(self.inp, req)
        events, plan_record = amendments.credit(self.inp, req, workflow.now())
        self._closed_drops_hold()
        key = f"credit-note:{req.credit_note_id}"
        await self._record(key, events, actor=req.actor, plan=plan_record)

    async def _do_change_due_date(self, req: DueDateRequest) -> None:
        """The schedule of the new due date from now on (``amendments.move_due_date``)."""
        amendments.check_due_date(self.inp, req)
        now = workflow.now()
        self._schedule, self._escalate_at, events = amendments.move_due_date(self.inp, req, now)
        await self._record(
            f"due-date:{workflow.uuid4()}",
            events,
            actor=req.actor,
            due_at=self.inp.due_at,
            due_date=req.due_date,
        )

    async def _do_customer_changed(self, req: CustomerChangeRequest) -> None:
        """The customer's time zone or country changed: the stored ones, loaded by invoice id
        (the request carries none), replace the workflow's, and the steps not sent yet are
        timed again (``progress.move_customer``). Nothing sent goes out again."""
        zone: CustomerZone = await workflow.execute_local_activity(
            "load_customer_zone",
            LoadCustomerZoneInput(invoice_id=self.inp.invoice_id),
            result_type=CustomerZone,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        events = progress.move_customer(self.inp, zone, workflow.now())
        if not events:
            return
        self._schedule, self._escalate_at = progress.schedule_for(self.inp)
        await self._record(f"customer:zone:{workflow.uuid4()}", events, actor=req.actor)

    def _check_send_now(self) -> ScheduledStep:
        step = progress.next_step(self.inp, self._schedule, self._escalate_at)
        return commands.check_send_now(self.inp, step, workflow.now())

    async def _do_send_now(self, req: ActorRequest) -> None:
        step = self._check_send_now()
        # Earlier steps still unsent are due already and were sent or skipped by the loop, so
        # this is the step that would have gone out next: sent now, once, never again.
        now = workflow.now()
        allowed = self._window(now)
        if allowed > now:
            reminders.move(self.inp, step, allowed)
            raise commands.outside_hours(step, allowed)
        outcome = await self._send_step(step, [], self._escalation_due_at(), requested_by=req.actor)
        if step.key not in self.inp.sent_steps:
            raise commands.not_sent(step, outcome)

    async def _do_agency_ended(self, req: AgencyEndRequest) -> None:
        """The agency ended the placement: it is ours again, and the ladder goes on."""
        commands.check_agency_ended(self.inp, req)
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
        events = ladder.back_from_agency(inp, req, workflow.now())
        await self._record(f"agency:{req.outcome}:{workflow.uuid4()}", events, actor=req.actor)

    async def _do_write_off(self, req: ActorRequest) -> None:
        await self._close(WRITTEN_OFF, req.reason, req.actor)

    # -- recording -------------------------------------------------------------

    async def _record(
        self,
        dedupe_key: str,
        events: list[EventSpec],
        actor: str = "workflow",
        **rows: Unpack[Rows],
    ) -> ChangeResult:
        """Record the state as it is now (the caller has changed it) with the change's events
        and rows, through the ``record_change`` activity, which retries until it succeeds."""
        change = progress.change_set(
            self.inp, dedupe_key, events, actor, self._next_action(), **rows
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
        self._closed_drops_hold()

    def _closed_drops_hold(self) -> None:
        """A closed invoice is on no hold. The database clears the hold when it records the
        close (``record_closed``, ``record_payment``); without this the workflow's state kept
        saying ``paused`` and a promise kept by the paying payment wrote ``promise`` back onto
        the paid row. Patched: runs that closed before this keep their recorded results."""
        inp = self.inp
        if (
            inp.status in CLOSED_STATUSES
            and inp.hold is not None
            and workflow.patched("closed-drops-hold")
        ):
            inp.hold = None

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

    def _require_active(self) -> None:
        commands.require_started(self._inp)
        commands.check_not_closed(self.inp)

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> InvoiceState:
        self._cancel, self._cancel_refused = request, None
        await workflow.wait_condition(
            lambda: self.inp.status in CLOSED_STATUSES or self._cancel_refused is not None
        )
        if self._cancel_refused is not None and self.inp.status not in CLOSED_STATUSES:
            raise self._cancel_refused
        return self._state()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        self._require_active()
        commands.check_cancel(request, self._cancel is not None)

    @workflow.update(name="open_dispute")
    async def open_dispute(self, request: OpenDisputeRequest) -> InvoiceState:
        return await self._submit("open_dispute", request)

    @open_dispute.validator
    def _validate_open_dispute(self, request: OpenDisputeRequest) -> None:
        self._require_active()
        commands.check_dispute_opening(self.inp, request)

    @workflow.update(name="resolve_dispute")
    async def resolve_dispute(self, request: ResolveDisputeRequest) -> InvoiceState:
        return await self._submit("resolve_dispute", request)

    @resolve_dispute.validator
    def _validate_resolve_dispute(self, request: ResolveDisputeRequest) -> None:
        self._require_active()
        commands.check_resolution(self.inp, request)

    @workflow.update(name="set_plan")
    async def set_plan(self, request: PlanRequest) -> InvoiceState:
        return await self._submit("set_plan", request)

    @set_plan.validator
    def _validate_set_plan(self, request: PlanRequest) -> None:
        self._require_active()
        commands.check_plan(self.inp, request, self._today())

    @workflow.update(name="cancel_plan")
    async def cancel_plan(self, request: ActorRequest) -> InvoiceState:
        return await self._submit("cancel_plan", request)

    @cancel_plan.validator
    def _validate_cancel_plan(self, request: ActorRequest) -> None:
        self._require_active()
        commands.check_cancel_plan(self.inp)

    @workflow.update(name="promise")
    async def promise(self, request: PromiseRequest) -> InvoiceState:
        return await self._submit("promise", request)

    @promise.validator
    def _validate_promise(self, request: PromiseRequest) -> None:
        self._require_active()
        commands.check_promise(self.inp, request, self._today())

    @workflow.update(name="pause")
    async def pause(self, request: PauseRequest) -> InvoiceState:
        return await self._submit("pause", request)

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        self._require_active()
        commands.check_pause(self.inp, request, self._today())

    @workflow.update(name="resume")
    async def resume(self, request: ActorRequest) -> InvoiceState:
        return await self._submit("resume", request)

    @resume.validator
    def _validate_resume(self, request: ActorRequest) -> None:
        self._require_active()
        commands.check_resume(self.inp)

    @workflow.update(name="write_off")
    async def write_off(self, request: ActorRequest) -> InvoiceState:
        return await self._submit("write_off", request)

    @write_off.validator
    def _validate_write_off(self, request: ActorRequest) -> None:
        self._require_active()
        commands.check_write_off(request)

    @workflow.update(name="change_policy")
    async def change_policy(self, request: PolicyChangeRequest) -> InvoiceState:
        """Follow another policy from the next step on (a customer changed segment)."""
        return await self._submit("change_policy", request)

    @change_policy.validator
    def _validate_change_policy(self, request: PolicyChangeRequest) -> None:
        self._require_active()
        commands.check_change_policy(request)

    @workflow.update(name="customer_changed")
    async def customer_changed(self, request: CustomerChangeRequest) -> InvoiceState:
        """The customer's time zone or country changed: the next steps follow the stored ones."""
        return await self._submit("customer_changed", request)

    @customer_changed.validator
    def _validate_customer_changed(self, request: CustomerChangeRequest) -> None:
        self._require_active()

    @workflow.update(name="agency_ended")
    async def agency_ended(self, request: AgencyEndRequest) -> InvoiceState:
        """The invoice comes back from the agency: recalled by us, returned or closed by it."""
        return await self._submit("agency_ended", request)

    @agency_ended.validator
    def _validate_agency_ended(self, request: AgencyEndRequest) -> None:
        self._require_active()
        commands.check_agency_ended(self.inp, request)

    @workflow.update(name="credit_note")
    async def credit_note(self, request: CreditNoteRequest) -> InvoiceState:
        """A credit note lowers the open balance (credited when nothing is left)."""
        return await self._submit("credit_note", request)

    @credit_note.validator
    def _validate_credit_note(self, request: CreditNoteRequest) -> None:
        self._require_active()
        amendments.check_credit_note(self.inp, request)

    @workflow.update(name="change_due_date")
    async def change_due_date(self, request: DueDateRequest) -> InvoiceState:
        """A corrected due date: the schedule is recomputed, nothing sent is sent again."""
        return await self._submit("change_due_date", request)

    @change_due_date.validator
    def _validate_change_due_date(self, request: DueDateRequest) -> None:
        self._require_active()
        amendments.check_due_date(self.inp, request)

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
