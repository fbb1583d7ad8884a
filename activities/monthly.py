"""Monthly statements of account: a daily schedule runs ``send_statements``; the domain
(``arflow.messages.statements``) picks the customers whose statement day is today and sends
each one statement, at most once per month, inside their contact window (a statement
outside it is deferred: the pass answers when the earliest window opens, and the run's
workflow passes again then)."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import activity

from arflow.db import SessionFactory
from arflow.messages import statements
from arflow.messages.channels import Channel, TransientDeliveryError
from arflow.messages.documents import Seller
from models.types import utcnow
from workflows.types import StatementPass, StatementRun

OUTCOMES = ("sent", "skipped", "deferred", "blocked", "failed")


class MonthlyStatementActivities:
    def __init__(
        self,
        sessions: SessionFactory,
        channel: Channel,
        seller: Seller,
        portal_url: Callable[[int], str] | None = None,
    ) -> None:
        self.sessions = sessions
        self.channel = channel
        self.seller = seller
        self.portal_url = portal_url  # customer id -> a fresh signed portal link

    @activity.defn(name="send_statements")
    def send_statements(self, run: StatementRun) -> StatementPass:
        """One pass: ``run.at`` picks the customers whose day it is, ``run.now`` (default
        ``at``) is checked against their contact windows. A provider's transient error for
        one customer does not stop the others; it fails the pass at the end, and the retry
        sends that customer's statement (still ``queued``) and skips the ones already sent."""
        at = run.at or utcnow()
        now = run.now or at
        result = StatementPass(counts=dict.fromkeys(OUTCOMES, 0))
        transient: TransientDeliveryError | None = None
        with self.sessions() as session:
            for customer, today in statements.due_today(session, at):
                activity.heartbeat(customer.id)
                try:
                    link = self.portal_url(customer.id) if self.portal_url and customer.id else None
                    outcome = statements.send_statement(
                        session, self.channel, self.seller, customer, today, now, link
                    )
                except TransientDeliveryError as exc:
                    transient = transient or exc
                    continue
                result.counts[outcome.status] = result.counts.get(outcome.status, 0) + 1
                if outcome.until is not None and (
                    result.next_at is None or outcome.until < result.next_at
                ):
                    result.next_at = outcome.until
        if transient is not None:
            raise transient
        return result

    def all(self) -> list[object]:
        return [self.send_statements]
