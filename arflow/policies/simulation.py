"""Policy simulation on past invoices: what a draft policy (or a version) would have done to
them, given what really happened, next to what was really sent.

The decisions are the workflow's own (``workflows.simulation`` runs ``InvoiceWorkflow``'s loop
on a clock of its own); this module loads the invoices and their facts from the database in a
few bulk queries (payments, disputes, promises, plans, pauses, credit notes and closes from the
invoices' timelines, with the payment and plan rows they name), runs each customer's invoices
together (the daily contact cap counts across them) and sums the results.

The result types are plain dataclasses (ints, strings, instants), so a job workflow can carry
them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from arflow.errors import NotFound, conflict, unprocessable
from arflow.policies import versions
from models import Customer, DunningPolicy, Invoice, OutboxMessage, Payment, PaymentPlan
from models.invoice import COUNTED_STATUSES, InvoiceEvent
from models.policy import DunningPolicyCreate
from models.simulation import SimulationRequest
from workflows import simulation as sim
from workflows.charges import COMPENSATION, FEE, INTEREST
from workflows.confirmations import CONFIRM_PREFIX
from workflows.simulation import Fact, SimCharge, SimInvoice, SimSend, SimStage
from workflows.types import PolicySpec

CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's limits
MAX_SYNC_INVOICES = 2_000  # above this the API asks for a job
FACT_KINDS = (
    "payment_applied",
    "payment_reversed",
    "dispute_opened",
    "dispute_upheld",
    "dispute_rejected",
    "promise_to_pay",
    "plan_agreed",
    "plan_cancelled",
    "paused",
    "resumed",
    "credit_note",
    "written_off",
    "cancelled",
)
SENT_KINDS = ("reminder_sent",)
CHANNELS = ("email", "sms", "letter", "call")


@dataclass
class SimulationWindow:
    """The past invoices to simulate: issued between two dates (both included), optionally
    of one segment (the customer's) or one customer."""

    issued_from: date
    issued_to: date
    segment: str | None = None
    customer_id: int | None = None


@dataclass
class RealSend:
    """A message really sent (a ``reminder_sent`` event: dunning step, notice, plan reminder)."""

    key: str
    channel: str
    at: datetime


@dataclass
class InvoiceSimulation:
    """One invoice: what the simulated policy would have done, and what was really sent."""

    invoice_id: int
    number: str
    customer_id: int
    currency: str
    amount_minor: int
    timezone: str
    due_at: datetime
    sends: list[SimSend] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    charges: list[SimCharge] = field(default_factory=list)
    stages: list[SimStage] = field(default_factory=list)
    status: str = "open"
    paid_at: datetime | None = None
    first_escalation_at: datetime | None = None
    escalated_before_payment: bool | None = None
    ignored_facts: list[str] = field(default_factory=list)
    real_sends: list[RealSend] = field(default_factory=list)

    def charged(self, kind: str) -> int:
        return sum(c.amount_minor for c in self.charges if c.kind == kind)


@dataclass
class SimulationTotals:
    """The sums over a simulation's invoices. Weeks are ISO weeks (``2026-W14``) of the
    customer's local date; money is per currency, in minor units."""

    invoices: int = 0
    sends: int = 0
    sends_by_channel: dict[str, int] = field(default_factory=dict)
    sends_by_week: dict[str, dict[str, int]] = field(default_factory=dict)
    moved_by: dict[str, int] = field(default_factory=dict)
    real_sends: int = 0
    real_sends_by_channel: dict[str, int] = field(default_factory=dict)
    real_sends_by_week: dict[str, dict[str, int]] = field(default_factory=dict)
    fees_minor: dict[str, int] = field(default_factory=dict)
    interest_minor: dict[str, int] = field(default_factory=dict)
    compensation_minor: dict[str, int] = field(default_factory=dict)
    escalations: int = 0  # invoices that reached an escalation stage
    escalations_by_stage: dict[str, int] = field(default_factory=dict)
    escalations_before_payment: int = 0  # ...before the payment that paid them in full
    paid: int = 0
    ignored_facts: int = 0


# -- the policy ------------------------------------------------------------------------------


def draft_spec(body: DunningPolicyCreate) -> PolicySpec:
    """The spec of a draft policy (validated like a create, never stored); its id is 0."""
    policy = DunningPolicy.model_validate(
        body.model_dump() | {"steps": [s.model_dump() for s in body.steps]}
    )
    policy.id = 0
    return policy.spec()


# -- which invoices --------------------------------------------------------------------------


def select_invoices(session: Session, window: SimulationWindow) -> list[int]:
    """The ids of the invoices ``window`` names, in id order."""
    stmt = select(Invoice.id).where(
        col(Invoice.issued_on) >= window.issued_from, col(Invoice.issued_on) <= window.issued_to
    )
    if window.customer_id is not None:
        stmt = stmt.where(Invoice.customer_id == window.customer_id)
    if window.segment is not None:
        stmt = stmt.join(Customer, col(Customer.id) == col(Invoice.customer_id)).where(
            Customer.segment == window.segment
        )
    return [i for i in session.exec(stmt.order_by(col(Invoice.id))).all() if i is not None]


def count_invoices(session: Session, window: SimulationWindow) -> int:
    return len(select_invoices(session, window))


# -- loading the facts ----------------------------------------------------------------------


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), CHUNK):
        yield list(ids[i : i + CHUNK])


def _fact(
    event: InvoiceEvent, paid_at: dict[int, datetime], plans: dict[int, list[dict[str, Any]]]
) -> Fact | None:
    """The fact an event of the timeline records; None for one the workflow itself caused."""
    data, at, kind = event.data, event.at, event.kind
    amount = int(data.get("amount_minor") or 0)
    if kind == "payment_applied":
        pid = int(data.get("payment_id") or 0)
        return Fact(at, sim.PAYMENT, amount, paid_at=paid_at.get(pid), ref=pid)
    if kind == "payment_reversed":
        pid = int(data.get("payment_id") or 0)
        return Fact(at, sim.PAYMENT, amount, payment_kind=str(data.get("kind", "refund")), ref=pid)
    if kind == "dispute_opened":
        return Fact(at, sim.DISPUTE_OPENED, amount, ref=int(data.get("dispute_id") or 0))
    if kind in ("dispute_upheld", "dispute_rejected"):
        outcome = kind.removeprefix("dispute_")
        credit = int(data.get("credit_minor") or 0)
        return Fact(at, sim.DISPUTE_RESOLVED, credit, outcome=outcome)
    if kind == "promise_to_pay":
        return Fact(at, sim.PROMISE_MADE, amount, on=str(data.get("promised_date")))
    if kind == "plan_agreed":
        rows = plans.get(int(data.get("plan_id") or 0), [])
        items = [(str(i["due_date"]), int(i["amount_minor"])) for i in rows]
        return Fact(at, sim.PLAN_AGREED, installments=items)
    if kind == "plan_cancelled":
        # A specialist's cancel gives a reason; a credit's (``why``) follows from the credit.
        return None if "why" in data else Fact(at, sim.PLAN_CANCELLED)
    if kind == "paused":
        until = data.get("until")
        return Fact(at, sim.PAUSED_FACT, on=str(until) if until else None)
    if kind == "resumed":
        # A specialist's resume gives a reason; the end of a timed pause is the workflow's.
        return Fact(at, sim.RESUMED) if "reason" in data else None
    if kind == "credit_note":
        return Fact(at, sim.CREDIT_NOTE, amount, ref=int(data.get("credit_note_id") or 0))
    if kind in ("written_off", "cancelled"):
        return Fact(at, kind)
    return None


@dataclass
class _Loaded:
    invoice: SimInvoice
    number: str
    real: list[RealSend]


def load(session: Session, invoice_ids: Sequence[int]) -> list[_Loaded]:
    """The invoices with their facts, confirmations and real sends: five queries per
    ``CHUNK`` ids."""
    out: list[_Loaded] = []
    for ids in _chunks(sorted(set(invoice_ids))):
        rows = session.exec(
            select(Invoice, Customer)
            .join(Customer, col(Customer.id) == col(Invoice.customer_id))
            .where(col(Invoice.id).in_(ids))
            .order_by(col(Invoice.id))
        ).all()
        paid_at = {
            pid: at
            for pid, at in session.exec(
                select(Payment.id, Payment.paid_at).where(col(Payment.invoice_id).in_(ids))
            ).all()
            if pid is not None
        }
        plans = {
            pid: list(items)
            for pid, items in session.exec(
                select(PaymentPlan.id, PaymentPlan.installments).where(
                    col(PaymentPlan.invoice_id).in_(ids)
                )
            ).all()
            if pid is not None
        }
        messages: dict[int, list[datetime]] = defaultdict(list)
        for invoice_id, at in session.exec(
            select(OutboxMessage.invoice_id, OutboxMessage.created_at).where(
                col(OutboxMessage.invoice_id).in_(ids),
                col(OutboxMessage.step_key).startswith(CONFIRM_PREFIX),
                col(OutboxMessage.channel).in_(sim.MESSAGE_CHANNELS),
                col(OutboxMessage.status).in_(COUNTED_STATUSES),
            )
        ).all():
            messages[invoice_id].append(at)
        facts: dict[int, list[Fact]] = defaultdict(list)
        real: dict[int, list[RealSend]] = defaultdict(list)
        events = session.exec(
            select(InvoiceEvent)
            .where(
                col(InvoiceEvent.invoice_id).in_(ids),
                col(InvoiceEvent.kind).in_(FACT_KINDS + SENT_KINDS),
            )
            .order_by(col(InvoiceEvent.invoice_id), col(InvoiceEvent.id))
        ).all()
        for event in events:
            if event.kind in SENT_KINDS:
                data = event.data
                real[event.invoice_id].append(
                    RealSend(str(data.get("step")), str(data.get("channel", "email")), event.at)
                )
                continue
            fact = _fact(event, paid_at, plans)
            if fact is not None:
                facts[event.invoice_id].append(fact)
        for invoice, customer in rows:
            assert invoice.id is not None
            out.append(
                _Loaded(
                    SimInvoice(
                        invoice_id=invoice.id,
                        customer_id=invoice.customer_id,
                        currency=invoice.currency,
                        amount_minor=invoice.amount_minor,
                        due_at=invoice.due_at,
                        timezone=customer.timezone,
                        country=customer.country,
                        segment=customer.segment,
                        discount_minor=invoice.discount_minor,
                        discount_until=invoice.discount_until,
                        start_at=invoice.created_at,
                        facts=facts.get(invoice.id, []),
                        messages=messages.get(invoice.id, []),
                    ),
                    invoice.number,
                    real.get(invoice.id, []),
                )
            )
    return out


# -- running it ----------------------------------------------------------------------------


def simulate(
    session: Session, policy: PolicySpec, invoice_ids: Sequence[int], now: datetime
) -> list[InvoiceSimulation]:
    """What ``policy`` would have done to the invoices ``invoice_ids`` up to ``now``, in id
    order. A customer's invoices among them run together (the daily cap counts across them)."""
    loaded = load(session, invoice_ids)
    by_customer: dict[int, list[_Loaded]] = defaultdict(list)
    for item in loaded:
        by_customer[item.invoice.customer_id].append(item)
    results: dict[int, InvoiceSimulation] = {}
    for items in by_customer.values():
        items.sort(key=lambda i: (i.invoice.due_at, i.invoice.invoice_id))
        outcomes = sim.simulate_customer(policy, [i.invoice for i in items], now)
        for item, outcome in zip(items, outcomes, strict=True):
            inv = item.invoice
            results[inv.invoice_id] = InvoiceSimulation(
                invoice_id=inv.invoice_id,
                number=item.number,
                customer_id=inv.customer_id,
                currency=inv.currency,
                amount_minor=inv.amount_minor,
                timezone=inv.timezone,
                due_at=inv.due_at,
                sends=outcome.sends,
                skipped=outcome.skipped,
                charges=outcome.charges,
                stages=outcome.stages,
                status=outcome.status,
                paid_at=outcome.paid_at,
                first_escalation_at=outcome.first_escalation_at,
                escalated_before_payment=outcome.escalated_before_payment,
                ignored_facts=outcome.ignored_facts,
                real_sends=item.real,
            )
    return [results[i] for i in sorted(results)]


# -- summing up ------------------------------------------------------------------------------


def iso_week(at: datetime, timezone: str) -> str:
    year, week, _ = at.astimezone(ZoneInfo(timezone)).isocalendar()
    return f"{year}-W{week:02d}"


def _count(into: dict[str, int], key: str, n: int = 1) -> None:
    into[key] = into.get(key, 0) + n


def totals(results: Sequence[InvoiceSimulation]) -> SimulationTotals:
    out = SimulationTotals(invoices=len(results))
    for r in results:
        for s in r.sends:
            out.sends += 1
            _count(out.sends_by_channel, s.channel)
            _count(out.sends_by_week.setdefault(iso_week(s.at, r.timezone), {}), s.channel)
            for why in s.moved_by:
                _count(out.moved_by, why)
        for real in r.real_sends:
            out.real_sends += 1
            _count(out.real_sends_by_channel, real.channel)
            week = out.real_sends_by_week.setdefault(iso_week(real.at, r.timezone), {})
            _count(week, real.channel)
        for kind, into in (
            (FEE, out.fees_minor),
            (INTEREST, out.interest_minor),
            (COMPENSATION, out.compensation_minor),
        ):
            if amount := r.charged(kind):
                _count(into, r.currency, amount)
        if r.stages:
            out.escalations += 1
            for stage in r.stages:
                _count(out.escalations_by_stage, stage.key)
        if r.escalated_before_payment:
            out.escalations_before_payment += 1
        if r.paid_at is not None:
            out.paid += 1
        out.ignored_facts += len(r.ignored_facts)
    out.sends_by_week = dict(sorted(out.sends_by_week.items()))
    out.real_sends_by_week = dict(sorted(out.real_sends_by_week.items()))
    return out


CSV_HEADER = [
    "invoice_id",
    "number",
    "customer_id",
    "currency",
    "amount_minor",
    "due_at",
    "sends",
    *(f"sends_{c}" for c in CHANNELS),
    "moved",
    "real_sends",
    "fees_minor",
    "interest_minor",
    "compensation_minor",
    "first_escalation",
    "first_escalation_at",
    "escalated_before_payment",
    "paid_at",
    "status",
    "send_keys",
]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def csv_rows(results: Sequence[InvoiceSimulation]) -> list[list[str]]:
    """The header and one row per invoice, as strings (the caller writes the CSV)."""
    rows = [list(CSV_HEADER)]
    for r in results:
        by_channel = {c: sum(1 for s in r.sends if s.channel == c) for c in CHANNELS}
        row: list[object] = [
            r.invoice_id,
            r.number,
            r.customer_id,
            r.currency,
            r.amount_minor,
            r.due_at,
            len(r.sends),
            *(by_channel[c] for c in CHANNELS),
            sum(1 for s in r.sends if s.moved_by),
            len(r.real_sends),
            r.charged(FEE),
            r.charged(INTEREST),
            r.charged(COMPENSATION),
            r.stages[0].key if r.stages else None,
            r.first_escalation_at,
            r.escalated_before_payment,
            r.paid_at,
            r.status,
            " ".join(f"{s.key}:{s.channel}" for s in r.sends),
        ]
        rows.append([_text(v) for v in row])
    return rows


__all__ = [
    "InvoiceSimulation",
    "RealSend",
    "SimulationResult",
    "SimulationTotals",
    "SimulationWindow",
    "csv_rows",
    "draft_spec",
    "run_request",
    "select_invoices",
    "simulate",
    "totals",
]


# -- the synchronous request (POST /v1/policies/simulate) --------------------------------------


@dataclass
class SimulationResult:
    policy: str
    window: SimulationWindow
    totals: SimulationTotals
    invoices: list[InvoiceSimulation] | None = None


def three_years_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 3)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 3, day=28)


def check_window(window: SimulationWindow) -> None:
    """422 for a window that ends before it starts or spans more than three years."""
    if window.issued_to < window.issued_from:
        raise unprocessable("issued_to is before issued_from")
    if window.issued_to > three_years_after(window.issued_from):
        raise unprocessable("the window is longer than 3 years: choose a shorter one")


def requested_spec(session: Session, req: SimulationRequest) -> PolicySpec:
    """The policy a request names: its draft, or a stored policy's version (default: its
    current one)."""
    if (req.policy is None) == (req.policy_id is None):
        raise unprocessable("give exactly one of policy (a draft) and policy_id")
    if req.policy is not None:
        if req.version is not None:
            raise unprocessable("version goes with policy_id, not with a draft")
        return draft_spec(req.policy)
    assert req.policy_id is not None
    stored = session.get(DunningPolicy, req.policy_id)
    if stored is None:
        raise unprocessable(f"unknown policy {req.policy_id}")
    if req.version is None:
        return stored.spec()
    try:
        return versions.load_spec(session, req.policy_id, req.version)
    except NotFound:
        raise unprocessable(f"policy {req.policy_id} has no version {req.version}") from None


def run_request(
    session: Session, req: SimulationRequest, now: datetime, limit: int | None = None
) -> SimulationResult:
    """A simulation answered at once: at most ``limit`` invoices (409 above, run it as a
    job); per-invoice results when asked."""
    window = SimulationWindow(req.issued_from, req.issued_to, req.segment, req.customer_id)
    check_window(window)
    spec = requested_spec(session, req)
    ids = select_invoices(session, window)
    limit = MAX_SYNC_INVOICES if limit is None else limit
    if len(ids) > limit:
        raise conflict(
            f"{len(ids)} invoices match: more than {limit} run as a job "
            "(POST /v1/policies/simulations)",
            {"invoices": len(ids), "limit": limit},
        )
    results = simulate(session, spec, ids, now)
    return SimulationResult(
        policy=spec.name,
        window=window,
        totals=totals(results),
        invoices=results if req.per_invoice else None,
    )
