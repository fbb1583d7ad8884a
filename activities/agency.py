"""Hand-off of an invoice to a collection agency: the activities that place an invoice and
end a placement.

Thin adapters: they open a session and call ``arflow.agency.escalation`` with the adapter
factory (``arflow.agency.placement``: a drop folder, a signed webhook). A failure of the
agency raises, and Temporal retries with backoff, or after the agency's ``Retry-After`` (the
domain puts a task on the worklist the first time); an unknown invoice or outcome fails for
good. Every attempt sends the same request: its timestamp is the activity's first scheduled
time, so the agency's ``Idempotency-Key`` dedupes a retry after a lost answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import activity

from activities.failures import final_on, not_found_is_final
from arflow.agency import escalation
from arflow.agency.placement import AdapterFactory, adapter_factory
from arflow.config import Settings
from arflow.db import SessionFactory
from arflow.errors import Invalid
from workflows.types import EndPlacementInput, EscalateInput


def first_scheduled() -> datetime | None:
    """When Temporal first scheduled the running activity: the same on every retry (None
    outside an activity: the domain takes the current time)."""
    return activity.info().scheduled_time if activity.in_activity() else None


class AgencyActivities:
    """``escalate`` places an invoice with its agency; ``end_placement`` ends a placement
    (telling the agency on a recall); see ``arflow.agency.escalation``."""

    def __init__(self, sessions: SessionFactory, adapter_for: AdapterFactory) -> None:
        self.sessions = sessions
        self.adapter_for = adapter_for

    @classmethod
    def from_settings(cls, sessions: SessionFactory, settings: Settings) -> AgencyActivities:
        return cls(
            sessions,
            adapter_factory(
                settings.agency_folder,
                settings.agency_timeout_seconds,
                root=settings.data_dir,
                allow_loopback=settings.agency_loopback_allowed,
            ),
        )

    @activity.defn(name="escalate")
    def escalate(self, inp: EscalateInput) -> None:
        """Hand the invoice to its agency and record the placement (once)."""
        with self.sessions() as session, not_found_is_final():
            escalation.escalate(session, self.adapter_for, inp, first_scheduled())

    @activity.defn(name="end_placement")
    def end_placement(self, inp: EndPlacementInput) -> None:
        """The agency no longer works the invoice: record it (once) and, on a recall
        (``notify``), tell the agency first."""
        with final_on(Invalid, "InvalidInput"):
            escalation.check_outcome(inp.outcome)
        with self.sessions() as session, not_found_is_final():
            escalation.end_placement(session, self.adapter_for, inp, first_scheduled())

    def all(self) -> list[Any]:
        return [self.escalate, self.end_placement]
