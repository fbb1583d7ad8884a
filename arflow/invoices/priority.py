"""Where a task stands on the worklist: what working it is expected to recover, and, for a call,
whether the call may be placed now.

**Expected recovery** = the invoice's open balance x the probability that it is paid:

    p = history x promises x age x dispute

- ``history`` = (paid + 1.6) / (paid + written_off + 2): the share of the customer's settled
  invoices (paid or written off) that were paid, pulled toward 80 % while they have few (a
  prior worth two invoices: a new customer starts at 80 %, one paid invoice gives 87 %, one
  written off 53 %);
- ``promises`` = 0.9 ^ min(broken promises + broken plans, 4): each broken word costs a tenth;
- ``age`` = 1 / (1 + days overdue / 180): an invoice 180 days overdue is half as likely to be
  paid as one due today (1 before the due date);
- ``dispute`` = 0.5 while the invoice is disputed (it may end in a credit).

The worklist is ordered by expected recovery, highest first, then by age (the oldest task
first); each row carries the figures in words (``TaskPriority.why``). Amounts of different
currencies are compared at face value: arflow keeps no exchange rates, so a team working in
several currencies filters the worklist by currency for a strict order.

**Calls**: a call task shows the customer's local time and whether a call may be placed now:
inside the policy's contact window (``workflows.schedule.contact_allowed``, the rule every
send follows) and within Reg F's limits (``arflow.invoices.calls.call_capped``, the rule the
send path applies: no call within the cooldown after a conversation, at most the weekly
attempts per invoice; this task's own attempt is not counted against it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, func, select

from arflow.invoices.calls import call_capped
from models import Customer, DunningPolicy, Invoice, Task
from models.collection import CallWindow, TaskItem, TaskPriority
from models.types import parse_duration
from workflows.schedule import contact_allowed
from workflows.types import DISPUTED

PRIOR_SHARE = Decimal("0.8")
PRIOR_WEIGHT = 2
BROKEN_FACTOR = Decimal("0.9")
MAX_BROKEN = 4
HALF_LIFE_DAYS = 180
DISPUTE_FACTOR = Decimal("0.5")

Row = TypeVar("Row", Invoice, Customer, DunningPolicy)


def probability(
    paid: int, written_off: int, broken: int, days_overdue: int, disputed: bool
) -> tuple[Decimal, list[str]]:
    """``p`` of the module's formula, rounded to 0.01, and its factors in words."""
    history = (Decimal(paid) + PRIOR_SHARE * PRIOR_WEIGHT) / (paid + written_off + PRIOR_WEIGHT)
    p = history
    words = [f"paid {paid} of {paid + written_off} settled invoices ({_pct(history)})"]
    if broken:
        p *= BROKEN_FACTOR ** min(broken, MAX_BROKEN)
        words.append(f"{broken} broken promise(s) or plan(s)")
    if days_overdue > 0:
        p /= 1 + Decimal(days_overdue) / HALF_LIFE_DAYS
        words.append(f"{days_overdue} days overdue")
    if disputed:
        p *= DISPUTE_FACTOR
        words.append("disputed")
    return p.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), words


def _pct(value: Decimal) -> str:
    return f"{(value * 100).quantize(Decimal('1'), rounding=ROUND_HALF_UP)} %"


def annotate(session: Session, items: list[TaskItem], now: datetime) -> None:
    """Fill ``priority`` on each item and ``call`` on call tasks (a few grouped queries for
    the whole list, none per row)."""
    invoices = _by_id(session, Invoice, {i.invoice_id for i in items})
    customers = _by_id(session, Customer, {inv.customer_id for inv in invoices.values()})
    settled = _settled(session, customers)
    for item in items:
        invoice = invoices[item.invoice_id]
        customer = customers[invoice.customer_id]
        paid, written_off = settled.get(invoice.customer_id, (0, 0))
        today = now.astimezone(ZoneInfo(customer.timezone)).date()
        overdue = max(0, (today - invoice.due_date).days)
        p, words = probability(
            paid,
            written_off,
            customer.broken_promises + customer.broken_plans,
            overdue,
            invoice.status == DISPUTED,
        )
        expected = int(
            (Decimal(invoice.balance_minor) * p).to_integral_value(rounding=ROUND_HALF_UP)
        )
        item.priority = TaskPriority(
            expected_minor=expected,
            balance_minor=invoice.balance_minor,
            currency=invoice.currency,
            probability=p,
            why=f"{_pct(p)} likely to be paid: " + ", ".join(words),
        )
    calls = [i for i in items if i.kind == "call" and i.status != "done"]
    if calls:
        _call_windows(session, calls, invoices, customers, now)


def by_priority(items: Iterable[TaskItem]) -> list[TaskItem]:
    """Highest expected recovery first, then the oldest task (``annotate`` ran)."""
    return sorted(
        items,
        key=lambda i: (-(i.priority.expected_minor if i.priority else 0), i.created_at, i.id),
    )


def _call_windows(
    session: Session,
    calls: list[TaskItem],
    invoices: dict[int, Invoice],
    customers: dict[int, Customer],
    now: datetime,
) -> None:
    policies = _by_id(session, DunningPolicy, {invoices[c.invoice_id].policy_id for c in calls})
    attempts: dict[int, list[Task]] = {}
    for task in session.exec(
        select(Task)
        .where(col(Task.invoice_id).in_({c.invoice_id for c in calls}), Task.kind == "call")
        .order_by(col(Task.created_at), col(Task.id))
    ):
        attempts.setdefault(task.invoice_id, []).append(task)
    for item in calls:
        invoice = invoices[item.invoice_id]
        customer = customers[invoice.customer_id]
        policy = policies[invoice.policy_id].spec()
        local = now.astimezone(ZoneInfo(customer.timezone))
        window = contact_allowed(now, policy, customer.timezone, customer.country)
        cooldown = parse_duration(policy.call_cooldown)
        assert isinstance(cooldown, timedelta)
        others = [t for t in attempts.get(item.invoice_id, []) if t.id != item.id]
        capped = call_capped(others, now, cooldown, policy.max_calls_per_week)
        why, allowed_from = None, None
        if window > now:
            why, allowed_from = "outside the customer's contact hours", window
        if capped is not None and (allowed_from is None or capped[1] > allowed_from):
            why, allowed_from = capped
        item.call = CallWindow(
            customer_local_time=local.strftime("%a %H:%M") + f" ({customer.timezone})",
            allowed_now=why is None,
            why=why,
            allowed_from=allowed_from,
        )


def _by_id(session: Session, model: type[Row], ids: set[int]) -> dict[int, Row]:
    if not ids:
        return {}
    rows = session.exec(select(model).where(col(model.id).in_(ids))).all()
    return {row.id: row for row in rows if row.id is not None}


def _settled(session: Session, customers: dict[int, Customer]) -> dict[int, tuple[int, int]]:
    """(paid, written off) invoices per customer, in one grouped query."""
    if not customers:
        return {}
    rows = session.exec(
        select(Invoice.customer_id, Invoice.status, func.count(col(Invoice.id)))
        .where(
            col(Invoice.customer_id).in_(customers),
            col(Invoice.status).in_(("paid", "written_off")),
        )
        .group_by(col(Invoice.customer_id), col(Invoice.status))
    ).all()
    out: dict[int, tuple[int, int]] = {}
    for customer_id, status, n in rows:
        paid, written_off = out.get(customer_id, (0, 0))
        out[customer_id] = (paid + n, written_off) if status == "paid" else (paid, written_off + n)
    return out
