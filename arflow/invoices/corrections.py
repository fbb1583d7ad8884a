"""A customer's corrected details (``PATCH /v1/customers/{id}``) and what they set off.

One ``customer_changed`` event on the customer's timeline per correction, listing each field
that changed (old -> new); a correction that changes nothing records nothing. Viewers see it
masked (``arflow.customers.changes.shown_to``).

- A new email, phone or postal address is a new address for its channels (email; SMS and
  call; letter). A block that belongs to the old address (a bounce, a drop, a number that
  failed) does not hold the new one: it is lifted. Where the channel is open now, the steps no
  channel could take are a task no more (``tasks.contact_fixed``). An opt-out (unsubscribed,
  a spam report, SMS STOP) or a specialist's block stays, and so do those tasks. The event
  says what became of each channel.
- A new time zone or country reaches the open invoices' workflows after the commit, as the
  ``customer_changed`` update, which carries nothing to trust: each workflow loads the stored
  zone and country by invoice id (``load_customer_zone``) and times its next steps again. A
  workflow that is closed or missing is skipped. When Temporal does not answer, the correction
  stays saved and the answer is still 200, not 503: the details are right, only the workflows
  lag, and a retry of the whole request must not look like a failed save. The ``workflows``
  summary names the invoices pending, a ``customer_change_pending`` event records them, and
  the next PATCH of the customer (the same one again will do) sends the update to its open
  invoices again, until a ``customer_change_delivered`` event closes the matter.
- The locale and the addresses need no workflow: the send activity reads them from the
  customer's row for every message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select
from temporalio.client import Client

from arflow.access import Principal
from arflow.config import Settings
from arflow.customers import changes
from arflow.customers.events import record_customer_event
from arflow.customers.profiles import get_customer
from arflow.errors import Unavailable, not_found
from arflow.invoices import tasks
from arflow.invoices.service import update_each
from models import Customer, CustomerEvent, Invoice
from models.customer import CustomerUpdate, CustomerWorkflows
from workflows.types import CLOSED_STATUSES, CustomerChangeRequest, CustomerZone

PENDING = "customer_change_pending"
DELIVERED = "customer_change_delivered"


@dataclass
class Correction:
    """What a correction changed, and what became of its invoices' workflows."""

    customer: Customer
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)  # channel -> what became of it
    workflows: CustomerWorkflows = field(default_factory=CustomerWorkflows)

    @property
    def zone_changed(self) -> bool:
        return bool(changes.ZONE_FIELDS & self.changes.keys())


async def update_customer(
    session: Session,
    client: Client | None,
    settings: Settings,
    customer_id: int,
    body: CustomerUpdate,
    who: Principal,
) -> Correction:
    """Correct the customer's details (``correct_customer``, committed), then bring their open
    invoices' workflows the new zone and country (``reach_workflows``) when those changed or
    an earlier change has not reached them all. ``NotFound`` for an unknown customer."""
    correction = await asyncio.to_thread(correct_customer, session, customer_id, body, who.actor)
    if correction.zone_changed or await asyncio.to_thread(change_pending, session, customer_id):
        correction.workflows = await reach_workflows(
            session, client, settings, customer_id, who.actor
        )
        await asyncio.to_thread(session.refresh, correction.customer)  # expired by the updates
    return correction


def correct_customer(
    session: Session, customer_id: int, body: CustomerUpdate, actor: str
) -> Correction:
    """Set the fields given that differ from the stored ones, open the channels a new address
    frees, record one ``customer_changed`` event (none when nothing differs), commit. Touches
    no workflow."""
    customer = get_customer(session, customer_id)
    assert customer.id is not None
    correction = Correction(customer, changes.correct(customer, body))
    if not correction.changes:
        return correction
    session.add(customer)
    for name, channels in changes.ADDRESS_CHANNELS.items():
        address = correction.changes.get(name, {}).get("to")
        if address is None:  # unchanged, or removed: no new address
            continue
        for channel in channels:
            outcome = changes.new_address(session, customer.id, channel, address)
            correction.channels[channel] = outcome
            if not outcome.startswith("still blocked"):
                tasks.contact_fixed(session, customer.id, channel, actor)
    data: dict[str, Any] = {"changes": correction.changes}
    if correction.channels:
        data["channels"] = correction.channels
    record_customer_event(session, customer.id, changes.CHANGED, data, actor)
    session.commit()
    session.refresh(customer)
    return correction


def change_pending(session: Session, customer_id: int) -> bool:
    """Whether the customer's last change of zone or country has not reached every open
    invoice's workflow yet (a ``customer_change_pending`` event not followed by a
    ``customer_change_delivered`` one)."""
    last = session.exec(
        select(CustomerEvent.kind)
        .where(
            CustomerEvent.customer_id == customer_id,
            col(CustomerEvent.kind).in_([PENDING, DELIVERED]),
        )
        .order_by(col(CustomerEvent.id).desc())
        .limit(1)
    ).first()
    return last == PENDING


async def reach_workflows(
    session: Session, client: Client | None, settings: Settings, customer_id: int, actor: str
) -> CustomerWorkflows:
    """Send ``customer_changed`` to each open invoice's workflow (``update_each``) and record
    the outcome on the customer's timeline: ``customer_change_delivered``, or
    ``customer_change_pending`` with the invoices Temporal did not answer for."""
    invoice_ids = await asyncio.to_thread(_open_invoices, session, customer_id)
    summary = CustomerWorkflows()
    if client is None:
        summary.pending = dict.fromkeys(invoice_ids, "Temporal is not connected")
    else:
        states, failed = await update_each(
            session,
            client,
            settings,
            invoice_ids,
            "customer_changed",
            lambda _: CustomerChangeRequest(actor=actor),
        )
        summary.updated = sorted(states)
        for invoice_id, exc in failed.items():
            if isinstance(exc, Unavailable):
                summary.pending[invoice_id] = exc.message
            else:  # no running workflow, or one closing: it has no next step to time
                summary.skipped[invoice_id] = exc.message
    await asyncio.to_thread(_record_outcome, session, customer_id, summary, actor)
    return summary


def _open_invoices(session: Session, customer_id: int) -> list[int]:
    ids = session.exec(
        select(Invoice.id).where(
            Invoice.customer_id == customer_id, col(Invoice.status).not_in(CLOSED_STATUSES)
        )
    ).all()
    return sorted(i for i in ids if i is not None)


def _record_outcome(
    session: Session, customer_id: int, summary: CustomerWorkflows, actor: str
) -> None:
    if summary.pending:
        kind = PENDING
        data: dict[str, Any] = {
            "invoice_ids": sorted(summary.pending),
            "reasons": {str(k): v for k, v in sorted(summary.pending.items())},
        }
    else:
        kind = DELIVERED
        data = {"invoice_ids": summary.updated, "skipped": sorted(summary.skipped)}
    record_customer_event(session, customer_id, kind, data, actor)
    session.commit()


def load_customer_zone(session: Session, invoice_id: int) -> CustomerZone:
    """The stored zone and country of the invoice's customer (the ``load_customer_zone``
    activity: the workflow's ``customer_changed`` update takes nothing else)."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise not_found("invoice", invoice_id)
    customer = get_customer(session, invoice.customer_id)
    return CustomerZone(timezone=customer.timezone, country=customer.country)
