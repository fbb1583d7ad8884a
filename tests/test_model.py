"""A property-based model of one invoice's collection (hypothesis ``RuleBasedStateMachine``) on
the time-skipping server with the real worker, API and SQLite.

Random sequences of specialist actions (dispute, resolve, plan, promise, pause, resume,
cancel, write-off, send-now), signed payment and refund webhooks and time jumps. After every
step, once the workflow has settled, the invariants hold:

- at most one outbox row per (invoice, step, channel);
- 0 <= balance <= amount;
- a closed invoice sends nothing and escalates nothing after its close (until a refund or
  chargeback reopens a paid one);
- every accepted action is on the timeline; a refused one (409/422) changes nothing;
- the workflow's ``state`` query equals the database row (status, balance, hold).

The normal suite runs a few short derandomized examples (reproducible); run it longer by hand
with ``ARFLOW_MODEL_EXAMPLES=200 ARFLOW_MODEL_STEPS=30``.

Hypothesis drives the machine synchronously: it runs in a thread of its own while the test's
event loop (where the harness, the worker and the time-skipping server's client live) runs
each rule's coroutine (``asyncio.run_coroutine_threadsafe``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlmodel import Session
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from models import Invoice
from tests.conftest import Harness
from tests.webhook import signed_payment
from workflows.invoice import InvoiceWorkflow
from workflows.types import CLOSED_STATUSES

T = TypeVar("T")

EXAMPLES = int(os.environ.get("ARFLOW_MODEL_EXAMPLES", "12"))
STEPS = int(os.environ.get("ARFLOW_MODEL_STEPS", "20"))
LONG = "ARFLOW_MODEL_EXAMPLES" in os.environ or "ARFLOW_MODEL_STEPS" in os.environ
AMOUNT = 120_000
REFUSED = (404, 409, 422)
# Timeline kinds that show an accepted action was carried out (one of them, per action).
RECORDED_AS = {
    "dispute": {"dispute_opened"},
    "resolve": {"dispute_upheld", "dispute_rejected"},
    "plan": {"plan_agreed"},
    "cancel_plan": {"plan_cancelled"},
    "promise": {"promise_to_pay"},
    "pause": {"paused"},
    "resume": {"resumed"},
    "cancel": {"cancelled"},
    "write_off": {"written_off"},
    "send_now": {"reminder_sent", "reminder_undeliverable", "reminder_blocked"},
    "payment": {"payment_applied", "payment_after_close"},
    "refund": {"payment_applied", "reversal_after_close", "payment_reversed"},
}
# Kinds that are a send or an escalation: none may follow the close of an invoice.
ACTIVITY_KINDS = {"reminder_sent", "escalated", "legal_stage", "notice_sent"}


@dataclass(frozen=True)
class Seen:
    """What the database says about the invoice at one moment."""

    status: str
    balance_minor: int
    hold: str | None
    events: int
    outbox: int


class InvoiceModel(RuleBasedStateMachine):
    """One fresh invoice per example, acted on through the API and the signed webhook."""

    h: Harness
    loop: asyncio.AbstractEventLoop
    outcomes: Counter[tuple[str, int]]  # (action, HTTP status): how much each path was taken

    def __init__(self) -> None:
        super().__init__()
        self.invoice_id = 0
        self.workflow_id = ""
        self.closed_outbox: int | None = None  # outbox rows when the invoice was seen closed

    # -- plumbing ------------------------------------------------------------------------

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout=120)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a synchronous database read on the loop's thread (SQLite connections stay
        on the thread that made them)."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped())

    def seen(self) -> Seen:
        def read() -> Seen:
            with Session(self.h.engine) as s:
                inv = s.get(Invoice, self.invoice_id)
                assert inv is not None
                status, balance, hold = inv.status, inv.balance_minor, inv.hold
            return Seen(
                status,
                balance,
                hold,
                len(self.h.events(self.invoice_id)),
                len(self.h.outbox(self.invoice_id)),
            )

        return self.call(read)

    async def _state(self) -> Any:
        handle = self.h.client.get_workflow_handle_for(InvoiceWorkflow.run, self.workflow_id)
        return await handle.query(InvoiceWorkflow.state)

    def settle(self) -> None:
        """Wait until the workflow has done what it was told (payments are signals: the
        webhook answers before they are applied) and its state matches the database."""

        async def wait() -> None:
            for _ in range(100):
                db = self.seen_sync()
                try:
                    state = await self._state()
                except (RPCError, WorkflowQueryFailedError):
                    await asyncio.sleep(0.05)
                    continue
                if (state.status, state.balance_minor, state.hold) == db[:3]:
                    return
                await asyncio.sleep(0.05)

        self.run(wait())

    def seen_sync(self) -> tuple[str, int, str | None]:
        with Session(self.h.engine) as s:
            inv = s.get(Invoice, self.invoice_id)
            assert inv is not None
            return inv.status, inv.balance_minor, inv.hold

    def act(self, name: str, request: Callable[[], Awaitable[httpx.Response]]) -> None:
        """Do one action; accepted: its event is on the timeline; refused: nothing changed."""
        before = self.seen()
        resp = self.run(request())
        self.settle()
        after = self.seen()
        self.outcomes[(name, resp.status_code)] += 1
        if resp.status_code in REFUSED:
            assert after == before, f"{name} refused ({resp.status_code}) but changed {after}"
            return
        assert resp.status_code in (200, 201), f"{name}: {resp.status_code} {resp.text}"
        kinds = self.run(self._recorded(before.events, RECORDED_AS[name]))
        assert set(kinds) & RECORDED_AS[name], f"{name} accepted, timeline got {kinds}"
        self.settle()

    async def _recorded(self, skip: int, wanted: set[str]) -> list[str]:
        """The kinds of the events after the first ``skip``, once one of ``wanted`` is there
        (a payment is a signal: the webhook answers before the workflow records it)."""
        kinds: list[str] = []
        for _ in range(100):
            kinds = [e.kind for e in self.h.events(self.invoice_id)[skip:]]
            if set(kinds) & wanted:
                break
            await asyncio.sleep(0.05)
        return kinds

    async def post(self, path: str, body: Any = None, role: str = "specialist") -> httpx.Response:
        return await self.h.post(f"/v1/invoices/{self.invoice_id}{path}", body, role=role)

    async def today(self) -> Any:
        return (await self.h.env.get_current_time()).date()

    # -- lifecycle -----------------------------------------------------------------------

    @initialize()
    def new_invoice(self) -> None:
        async def make() -> dict[str, Any]:
            today = await self.today()
            cust = await self.h.customer()
            return await self.h.invoice(
                cust["id"],
                issued_on=today.isoformat(),
                due_date=(today + timedelta(days=10)).isoformat(),
                amount_minor=AMOUNT,
            )

        inv = self.run(make())
        self.invoice_id, self.workflow_id = inv["id"], inv["workflow_id"]
        self.settle()

    def teardown(self) -> None:
        if not self.workflow_id:
            return

        async def stop() -> None:
            try:
                await self.h.client.get_workflow_handle(self.workflow_id).terminate("example over")
            except RPCError:
                pass  # completed already

        self.run(stop())

    # -- rules ---------------------------------------------------------------------------

    @rule()
    def dispute(self) -> None:
        self.act("dispute", lambda: self.post("/disputes", {"reason": "model"}))

    @rule(
        outcome=st.sampled_from(["rejected", "upheld"]),
        credit=st.sampled_from([0, 1, 20_000, "balance", "more"]),
    )
    def resolve(self, outcome: str, credit: int | str) -> None:
        async def do() -> httpx.Response:
            disputes = (await self.h.get(f"/v1/invoices/{self.invoice_id}/disputes")).json()
            open_ = [d["id"] for d in disputes if d["status"] == "open"]
            balance = self.seen_sync()[1]
            amount = {"balance": balance, "more": balance + 1}.get(str(credit), credit)
            body: dict[str, Any] = {"outcome": outcome, "note": "model"}
            if outcome == "upheld":
                body["credit_minor"] = amount
            dispute_id = open_[0] if open_ else 1_000_000
            return await self.post(f"/disputes/{dispute_id}/resolve", body, role="admin")

        self.act("resolve", do)

    @rule(first=st.integers(-1, 40), parts=st.integers(1, 3), short=st.booleans())
    def plan(self, first: int, parts: int, short: bool) -> None:
        async def do() -> httpx.Response:
            today = await self.today()
            balance = self.seen_sync()[1] - (1 if short else 0)
            each = [balance // parts] * parts
            each[-1] += balance - sum(each)
            items = [
                {
                    "due_date": (today + timedelta(days=first + 10 * i)).isoformat(),
                    "amount_minor": a,
                }
                for i, a in enumerate(each)
            ]
            return await self.post("/payment-plan", {"installments": items})

        self.act("plan", do)

    @rule()
    def cancel_plan(self) -> None:
        async def do() -> httpx.Response:
            return await self.h.http.delete(
                f"/v1/invoices/{self.invoice_id}/payment-plan", headers=self.h.as_role("admin")
            )

        self.act("cancel_plan", do)

    @rule(days=st.integers(-1, 30), amount=st.sampled_from([1, 50_000, AMOUNT]))
    def promise(self, days: int, amount: int) -> None:
        async def do() -> httpx.Response:
            promised = (await self.today()) + timedelta(days=days)
            body = {"promised_date": promised.isoformat(), "amount_minor": amount}
            return await self.post("/promise", body)

        self.act("promise", do)

    @rule(until=st.one_of(st.none(), st.integers(0, 20)))
    def pause(self, until: int | None) -> None:
        async def do() -> httpx.Response:
            body: dict[str, Any] = {"reason": "model"}
            if until is not None:
                body["until"] = ((await self.today()) + timedelta(days=until)).isoformat()
            return await self.post("/pause", body)

        self.act("pause", do)

    @rule()
    def resume(self) -> None:
        self.act("resume", lambda: self.post("/resume", {"reason": "model"}))

    @rule(amount=st.sampled_from([1, 30_000, 45_000, "balance", "more"]))
    def payment(self, amount: int | str) -> None:
        self._money("payment", amount)

    @rule(amount=st.sampled_from([1, 30_000, AMOUNT]))
    def refund(self, amount: int) -> None:
        self._money("refund", amount)

    def _money(self, kind: str, amount: int | str) -> None:
        async def do() -> httpx.Response:
            balance = self.seen_sync()[1]
            minor = {"balance": balance, "more": balance + 10_000}.get(str(amount), amount)
            return await signed_payment(
                self.h,
                event_id=f"evt_{uuid.uuid4().hex}",
                invoice_id=self.invoice_id,
                amount_minor=max(int(minor), 1),
                type=kind,
            )

        self.act(kind, do)

    @rule(how=st.sampled_from(["cancel", "write_off"]))
    def close(self, how: str) -> None:
        """Cancel or write off (one rule: closing ends the example's interesting part)."""
        path = "/cancel" if how == "cancel" else "/write-off"
        self.act(how, lambda: self.post(path, {"reason": "model"}, role="admin"))

    @rule()
    def send_now(self) -> None:
        self.act("send_now", lambda: self.post("/send-now"))

    @rule(days=st.sampled_from([1, 3, 8, 20, 50]))
    def jump(self, days: int) -> None:
        self.run(self.h.env.sleep(timedelta(days=days)))
        self.settle()

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def one_send_per_step_and_channel(self) -> None:
        if not self.invoice_id:
            return
        rows = self.call(lambda: self.h.outbox(self.invoice_id))
        twice = [k for k, n in Counter((m.step_key, m.channel) for m in rows).items() if n > 1]
        assert not twice, f"sent twice: {twice}"

    @invariant()
    def balance_within_bounds(self) -> None:
        if not self.invoice_id:
            return
        balance = self.seen_sync_on_loop()[1]
        assert 0 <= balance <= AMOUNT, balance

    @invariant()
    def closed_sends_and_escalates_nothing(self) -> None:
        if not self.invoice_id:
            return
        events = self.call(lambda: self.h.events(self.invoice_id))
        closed_at = None
        for i, e in enumerate(events):
            if e.kind in CLOSED_STATUSES:
                closed_at = i
            elif closed_at is not None and e.kind in ACTIVITY_KINDS:
                # a reversal reopens a paid invoice: dunning goes on from there
                reopened = any(x.kind == "reopened" for x in events[closed_at:i])
                assert reopened, f"{e.kind} after {events[closed_at].kind}: {_kinds(events)}"
        seen = self.seen()
        if seen.status in CLOSED_STATUSES:
            if self.closed_outbox is None:
                self.closed_outbox = seen.outbox
            assert seen.outbox == self.closed_outbox, "a closed invoice sent a message"
        else:
            self.closed_outbox = None

    @invariant()
    def workflow_state_equals_database(self) -> None:
        if not self.invoice_id:
            return

        async def both() -> tuple[Any, tuple[str, int, str | None]]:
            return await self._state(), self.seen_sync()

        state, db = self.run(both())
        assert (state.status, state.balance_minor, state.hold) == db, f"workflow {state} != {db}"

    def seen_sync_on_loop(self) -> tuple[str, int, str | None]:
        return self.call(self.seen_sync)


def _kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


@pytest.mark.slow  # in the normal suite (about 80 s); longer by hand: see the docstring
@pytest.mark.timeout(0 if LONG else 240)
async def test_invoice_model(h: Harness) -> None:
    """Random action sequences keep the invariants (see the module docstring)."""
    outcomes: Counter[tuple[str, int]] = Counter()
    loop = asyncio.get_running_loop()
    machine = type("Model", (InvoiceModel,), {"h": h, "loop": loop, "outcomes": outcomes})
    config = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    await asyncio.to_thread(run_state_machine_as_test, machine, settings=config)
    print("actions taken (action, status): count", sorted(outcomes.items()))


# -- what the model found: a closed invoice kept its hold in the workflow ---------------------


async def _held_then_closed(h: Harness, hold: str, close: str) -> tuple[Any, Any]:
    """An invoice put on ``hold`` and then closed by ``close``: (workflow result, db row)."""
    today = (await h.env.get_current_time()).date()
    cust = await h.customer()
    inv = await h.invoice(cust["id"], due_date=(today + timedelta(days=10)).isoformat())
    path = f"/v1/invoices/{inv['id']}"
    if hold == "paused":
        resp = await h.post(f"{path}/pause", {"reason": "talks"})
    else:
        promised = (today + timedelta(days=20)).isoformat()
        resp = await h.post(f"{path}/promise", {"promised_date": promised, "amount_minor": 1})
    assert (resp.status_code, resp.json()["hold"]) == (200, hold), resp.text
    if close == "cancel":
        resp = await h.post(f"{path}/cancel", {"reason": "duplicate"}, role="admin")
        assert resp.status_code == 200, resp.text
    else:
        resp = await signed_payment(h, invoice_id=inv["id"], amount_minor=inv["amount_minor"])
        assert resp.status_code == 200, resp.text
    handle = h.client.get_workflow_handle_for(InvoiceWorkflow.run, inv["workflow_id"])
    result = await handle.result()
    with Session(h.engine) as s:
        row = s.get(Invoice, inv["id"])
    return result, row


@pytest.mark.parametrize(
    ("hold", "close"), [("paused", "cancel"), ("paused", "pay"), ("promise", "pay")]
)
async def test_a_closed_invoice_is_on_no_hold_in_the_workflow_and_the_database(
    h: Harness, hold: str, close: str
) -> None:
    """Closing an invoice lifts its hold: the database row said ``hold=None`` while the
    workflow's state still said ``paused`` (and a promise kept by the payment that paid the
    invoice wrote ``promise`` back onto the paid row)."""
    result, row = await _held_then_closed(h, hold, close)
    assert result.status == row.status == ("cancelled" if close == "cancel" else "paid")
    assert (result.hold, row.hold) == (None, None)
