"""One payment plan across several invoices of one customer (an account-level action).

Everything is checked first, against fresh balances: the invoices (the customer's, open, one
currency, no plan, not disputed), the sum, the dates and each invoice's ``max_installments``
after the oldest-first allocation (``arflow.invoices.account_plan``). Then each invoice, oldest
first, gets its own part through the same call as the one-invoice route
(``actions.agree_plan``: the recorded ``set_plan`` update). When one refuses after others
agreed (paid or disputed meanwhile), the plans agreed in this request are cancelled again
(``cancel_plan``, reason "account plan failed: ...") and the failed attempt is on the
customer's timeline (``account_plan_failed``); a plan agreed is one ``account_plan_agreed``
event there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.config import Settings
from arflow.customers.behaviour import today_for
from arflow.customers.events import record_customer_event
from arflow.errors import Conflict, DomainError, conflict, not_found, unprocessable
from arflow.invoices import actions
from arflow.invoices.account_plan import Instalment, Owing, Share, allocate
from arflow.invoices.service import public
from models import Customer, DunningPolicy, Invoice, PaymentPlan
from models.account_plan import AccountPlanCreate, AccountPlanPublic, AccountPlanShare
from models.collection import InstallmentIn, PlanCreate
from models.types import utcnow
from workflows.types import DISPUTED, OPEN


def _with_plan(session: Session, ids: list[int]) -> set[int]:
    """Those of ``ids`` whose latest plan is active."""
    rows = session.exec(
        select(PaymentPlan.invoice_id).where(
            col(PaymentPlan.invoice_id).in_(ids), PaymentPlan.status == "active"
        )
    ).all()
    return set(rows)


def _given(session: Session, customer_id: int, ids: list[int]) -> list[Invoice]:
    """The invoices ``invoice_ids`` names: each the customer's, open, not disputed, no plan."""
    if len(set(ids)) != len(ids):
        raise unprocessable("invoice_ids: each invoice may be named once")
    found = {i.id: i for i in session.exec(select(Invoice).where(col(Invoice.id).in_(ids))).all()}
    for ident in ids:
        inv = found.get(ident)
        if inv is None or inv.customer_id != customer_id:
            raise unprocessable(
                f"invoice_ids: invoice {ident} is not an invoice of customer {customer_id}",
                {"field": "invoice_ids", "invoice_id": ident},
            )
        if inv.status == DISPUTED:
            raise conflict(f"invoice {ident} is disputed", {"invoice_id": ident})
        if inv.status != OPEN:
            raise conflict(f"invoice {ident} is already {inv.status}", {"invoice_id": ident})
    planned = _with_plan(session, ids)
    if planned:
        first = min(planned)
        raise conflict(
            f"invoice {first} already has a payment plan; cancel it first", {"invoice_id": first}
        )
    invoices = [found[i] for i in ids]
    currencies = sorted({i.currency for i in invoices})
    if len(currencies) > 1:
        raise unprocessable(
            f"invoice_ids: the invoices are in several currencies ({', '.join(currencies)}); "
            "a plan covers one currency",
            {"field": "invoice_ids", "currencies": currencies},
        )
    return invoices


def _all_open(session: Session, customer_id: int) -> list[Invoice]:
    """Every open invoice of the customer without a plan and not disputed, in one currency."""
    rows = list(
        session.exec(
            select(Invoice)
            .where(Invoice.customer_id == customer_id, Invoice.status == OPEN)
            .order_by(col(Invoice.id))
        ).all()
    )
    planned = _with_plan(session, [i.id for i in rows if i.id is not None])
    invoices = [i for i in rows if i.id not in planned]
    if not invoices:
        raise unprocessable(
            f"customer {customer_id} has no open invoice without a plan (and not disputed)"
        )
    currencies = sorted({i.currency for i in invoices})
    if len(currencies) > 1:
        raise unprocessable(
            f"invoice_ids: customer {customer_id}'s open invoices are in several currencies "
            f"({', '.join(currencies)}); pick the invoices of one currency with invoice_ids",
            {"field": "invoice_ids", "currencies": currencies},
        )
    return invoices


def _owing(session: Session, invoices: list[Invoice]) -> list[Owing]:
    owing = []
    for inv in invoices:
        assert inv.id is not None
        policy = session.get(DunningPolicy, inv.policy_id)
        assert policy is not None  # a foreign key
        owing.append(Owing(inv.id, inv.due_date, inv.balance_minor, policy.max_installments))
    return owing


def plan_for(
    session: Session, customer_id: int, body: AccountPlanCreate
) -> tuple[str, list[Share]]:
    """Check the request against fresh rows and allocate it: (currency, shares, oldest first).
    404 for an unknown customer; 422 for a bad request; 409 for an invoice that cannot take a
    plan now (closed, disputed, on a plan)."""
    session.expire_all()  # balances read fresh
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id)
    if body.invoice_ids is not None:
        invoices = _given(session, customer_id, body.invoice_ids)
    else:
        invoices = _all_open(session, customer_id)
    today = today_for(customer, utcnow())
    if body.installments[0].due_date < today:
        raise unprocessable(
            "installments: the first instalment is due in the past",
            {"field": "installments", "today": today.isoformat()},
        )
    items = [Instalment(i.due_date, i.amount_minor) for i in body.installments]
    return invoices[0].currency, allocate(_owing(session, invoices), items)


def _plan_body(share: Share, note: str) -> PlanCreate:
    return PlanCreate(
        installments=[
            InstallmentIn(due_date=i.due_date, amount_minor=i.amount_minor)
            for i in share.installments
        ],
        note=note,
    )


def _parts(shares: list[Share]) -> dict[str, Any]:
    return {
        str(s.invoice_id): [
            {"due_date": i.due_date.isoformat(), "amount_minor": i.amount_minor}
            for i in s.installments
        ]
        for s in shares
    }


def _record(
    session: Session, customer_id: int, kind: str, data: dict[str, Any], actor: str
) -> None:
    record_customer_event(session, customer_id, kind, data, actor)
    session.commit()


async def agree_account_plan(
    session: Session,
    client: Client,
    settings: Settings,
    customer_id: int,
    body: AccountPlanCreate,
    actor: str,
) -> AccountPlanPublic:
    """Agree one plan across several invoices of the customer (see the module). On success the
    allocation per invoice with each invoice's state; a refusal part-way is a 409 naming the
    invoice and its reason, with the plans agreed before it cancelled."""
    currency, shares = await asyncio.to_thread(plan_for, session, customer_id, body)
    agreed: list[tuple[Share, Invoice]] = []
    for share in shares:
        try:
            invoice = await actions.agree_plan(
                session, client, settings, share.invoice_id, _plan_body(share, body.note), actor
            )
        except DomainError as exc:
            await _undo(session, client, settings, customer_id, agreed, share, exc, actor)
            raise  # not reached: _undo raises
        agreed.append((share, invoice))
    data = {
        "invoice_ids": [s.invoice_id for s in shares],
        "currency": currency,
        "total_minor": sum(s.total_minor for s in shares),
        "installments": _parts(shares),
        "note": body.note,
    }
    await asyncio.to_thread(_record, session, customer_id, "account_plan_agreed", data, actor)
    return AccountPlanPublic(
        customer_id=customer_id,
        currency=currency,
        total_minor=data["total_minor"],
        note=body.note,
        invoices=[
            AccountPlanShare.model_validate(
                {
                    "invoice_id": s.invoice_id,
                    "installments": [
                        {"due_date": i.due_date, "amount_minor": i.amount_minor}
                        for i in s.installments
                    ],
                    "invoice": public(inv, settings),
                }
            )
            for s, inv in agreed
        ],
    )


async def _undo(
    session: Session,
    client: Client,
    settings: Settings,
    customer_id: int,
    agreed: list[tuple[Share, Invoice]],
    refused: Share,
    exc: DomainError,
    actor: str,
) -> None:
    """Invoice ``refused`` said no: cancel the plans agreed before it in this request, record
    the failed attempt on the customer's timeline, and raise naming the invoice: a 409 when
    any had been agreed, else the refusal's own kind (422 for a bad request, 409 for state)."""
    reason = f"account plan failed: invoice {refused.invoice_id} refused: {exc.message}"
    cancelled, not_cancelled = [], []
    for share, _ in agreed:
        try:
            await actions.by_actor(
                session, client, settings, share.invoice_id, "cancel_plan", reason, actor
            )
            cancelled.append(share.invoice_id)
        except DomainError as err:  # paid meanwhile too: recorded, the others still cancelled
            not_cancelled.append({"invoice_id": share.invoice_id, "reason": err.message})
    details: dict[str, Any] = {
        "invoice_id": refused.invoice_id,
        "reason": exc.message,
        "cancelled": cancelled,
        "not_cancelled": not_cancelled,
    }
    await asyncio.to_thread(_record, session, customer_id, "account_plan_failed", details, actor)
    if agreed:
        raise Conflict(
            f"invoice {refused.invoice_id} refused its part of the plan ({exc.message}); the "
            f"plans agreed before it in this request were cancelled",
            details,
            code="refused",
        ) from exc
    raise type(exc)(
        f"invoice {refused.invoice_id} refused its part of the plan: {exc.message}",
        details,
        code=exc.code,
    ) from exc
