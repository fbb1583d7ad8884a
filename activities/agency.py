"""Hand-off of an invoice to a collection agency: the adapters (a drop folder, a signed
webhook) and the activities that place an invoice and end a placement.

Every adapter call is idempotent per invoice (a retry rewrites the same file, or sends the
same idempotency key), so Temporal may retry an activity as often as it likes. Any failure
raises, and Temporal retries with backoff; the first failure for an invoice also puts a task
on the specialists' worklist, closed again once the call goes through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from arflow.agency.placement import (
    BUILTIN_AGENCY,
    END_OUTCOMES,
    ENDED_KEY,
    PLACED,
    PLACEMENT_FAILED,
    RECALL_FAILED,
    AdapterFactory,
    PlacementRequest,
    RecallRequest,
    adapter_factory,
    placement_of,
    record_end,
)
from arflow.config import Settings
from arflow.db import SessionFactory
from arflow.invoices.timeline import (
    add_event,
    already_recorded,
    commit_once,
    record_skipped,
    set_next_action,
)
from models import Agency, AgencyPlacement, Customer, Invoice, Task
from models.types import utcnow
from workflows.types import ESCALATED, EndPlacementInput, EscalateInput

log = logging.getLogger("arflow.agency")
T = TypeVar("T")


class AgencyActivities:
    """``escalate`` places an invoice with its agency; ``end_placement`` ends a placement
    (telling the agency on a recall). Which agency: the one the ladder stage names; else the
    active default one, else the first active one; with none configured, the built-in drop
    folder ``file-drop``."""

    def __init__(self, sessions: SessionFactory, adapter_for: AdapterFactory) -> None:
        self.sessions = sessions
        self.adapter_for = adapter_for

    @classmethod
    def from_settings(cls, sessions: SessionFactory, settings: Settings) -> AgencyActivities:
        return cls(
            sessions, adapter_factory(settings.agency_folder, settings.agency_timeout_seconds)
        )

    @staticmethod
    def _invoice(session: Session, invoice_id: int) -> Invoice:
        invoice = session.get(Invoice, invoice_id)
        if invoice is None:
            raise ApplicationError(f"invoice {invoice_id} not found", non_retryable=True)
        return invoice

    @activity.defn(name="escalate")
    def escalate(self, inp: EscalateInput) -> None:
        """Hand the invoice to its agency and record the placement (once)."""
        with self.sessions() as session:
            invoice = self._invoice(session, inp.invoice_id)
            if placement_of(session, inp.invoice_id) is not None:
                return  # a retry of an attempt that committed
            customer = session.get(Customer, invoice.customer_id)
            assert customer is not None
            adapter = self._guarded(
                session,
                inp.invoice_id,
                PLACEMENT_FAILED,
                inp.agency or "default",
                lambda: self.adapter_for(self._agency_to_place_with(session, inp.agency)),
            )
            now = utcnow()
            request = PlacementRequest(
                invoice_id=inp.invoice_id,
                invoice_number=invoice.number,
                customer_external_id=customer.external_id,
                customer_name=customer.name,
                customer_email=customer.email,
                customer_phone=customer.phone,
                customer_address=customer.address,
                amount_minor=inp.balance_minor,
                currency=inp.currency,
                due_date=invoice.due_date.isoformat(),
                placed_at=now,
                stage=inp.stage,
            )
            reference = self._guarded(
                session,
                inp.invoice_id,
                PLACEMENT_FAILED,
                adapter.name,
                lambda: adapter.place(request),
            )
            session.add(
                AgencyPlacement(
                    invoice_id=inp.invoice_id,
                    agency=adapter.name,
                    stage=inp.stage,
                    status=PLACED,
                    amount_minor=inp.balance_minor,
                    currency=inp.currency,
                    reference=reference,
                    placed_at=now,
                )
            )
            record_skipped(session, inp.invoice_id, inp.skipped, "escalation was already due")
            add_event(
                session,
                inp.invoice_id,
                "escalated",
                {
                    "agency": adapter.name,
                    "stage": inp.stage,
                    "amount_minor": inp.balance_minor,
                    "reference": reference,
                },
                dedupe_key="status:escalated",
            )
            invoice.status = ESCALATED
            invoice.escalation_stage = inp.stage
            invoice.updated_at = now
            set_next_action(invoice, None)
            session.add(invoice)
            self._settle_tasks(session, inp.invoice_id, PLACEMENT_FAILED)
            commit_once(session, inp.invoice_id, "status:escalated")

    @activity.defn(name="end_placement")
    def end_placement(self, inp: EndPlacementInput) -> None:
        """The agency no longer works the invoice: record it (once) and, on a recall
        (``notify``), tell the agency first."""
        if inp.outcome not in END_OUTCOMES:
            raise ApplicationError(
                f"unknown placement outcome {inp.outcome!r}",
                type="InvalidInput",
                non_retryable=True,
            )
        with self.sessions() as session:
            if already_recorded(session, inp.invoice_id, ENDED_KEY):
                return  # a retry of an attempt that committed
            invoice = self._invoice(session, inp.invoice_id)
            placement = placement_of(session, inp.invoice_id)
            if placement is None:
                log.warning("invoice %s ends a placement it never had", inp.invoice_id)
            elif inp.notify and placement.status == PLACED:
                name, reference = placement.agency, placement.reference
                request = RecallRequest(
                    invoice_id=inp.invoice_id,
                    invoice_number=invoice.number,
                    reference=reference,
                    reason=inp.reason,
                    recalled_at=utcnow(),
                )
                self._guarded(
                    session,
                    inp.invoice_id,
                    RECALL_FAILED,
                    name,
                    lambda: self.adapter_for(self._agency_named(session, name)).recall(request),
                )
                self._settle_tasks(session, inp.invoice_id, RECALL_FAILED)
            record_end(session, inp.invoice_id, placement, inp.outcome, inp.reason, inp.actor)
            commit_once(session, inp.invoice_id, ENDED_KEY)

    def all(self) -> list[Any]:
        return [self.escalate, self.end_placement]

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _agency_to_place_with(session: Session, name: str | None) -> Agency | None:
        """The agency a stage names (it must be active); None: the active default agency,
        else the first active one, else None (the built-in drop folder)."""
        if name is not None:
            agency = session.exec(select(Agency).where(Agency.name == name)).first()
            if agency is None and name == BUILTIN_AGENCY:
                return None
            if agency is None or not agency.active:
                state = "unknown" if agency is None else "not active"
                raise ApplicationError(f"agency {name!r} is {state}", type="AgencyUnavailable")
            return agency
        return session.exec(
            select(Agency)
            .where(col(Agency.active).is_(True))
            .order_by(col(Agency.is_default).desc(), col(Agency.id))
        ).first()

    @staticmethod
    def _agency_named(session: Session, name: str) -> Agency | None:
        """The agency a placement went to (active or not); None: the built-in drop folder."""
        agency = session.exec(select(Agency).where(Agency.name == name)).first()
        if agency is None and name != BUILTIN_AGENCY:
            raise ApplicationError(f"agency {name!r} is unknown", type="AgencyUnavailable")
        return agency

    def _guarded(
        self, session: Session, invoice_id: int, task_kind: str, agency: str, call: Callable[[], T]
    ) -> T:
        """``call()``; when it fails, the first failure for the invoice puts a ``task_kind``
        task on the worklist, then the error goes to Temporal (which retries)."""
        try:
            return call()
        except Exception as exc:
            session.rollback()
            log.warning("agency %s, invoice %s: %s", agency, invoice_id, exc)
            self._flag(session, invoice_id, task_kind, agency, exc)
            raise

    @staticmethod
    def _flag(session: Session, invoice_id: int, kind: str, agency: str, exc: Exception) -> None:
        seen = session.exec(
            select(Task.id).where(Task.invoice_id == invoice_id, Task.kind == kind)
        ).first()
        if seen is not None:
            return
        session.add(
            Task(
                invoice_id=invoice_id,
                kind=kind,
                due_at=utcnow(),
                data={"agency": agency, "error": f"{type(exc).__name__}: {exc}"[:500]},
            )
        )
        session.commit()

    @staticmethod
    def _settle_tasks(session: Session, invoice_id: int, kind: str) -> None:
        """The call went through: a failure task still open is done (the caller commits)."""
        for task in session.exec(
            select(Task).where(
                Task.invoice_id == invoice_id, Task.kind == kind, Task.status == "open"
            )
        ).all():
            task.status = "done"
            task.data = task.data | {"resolved": "the agency took it on a later attempt"}
            session.add(task)
