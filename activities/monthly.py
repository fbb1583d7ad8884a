"""Monthly statements of account: a daily schedule runs ``send_statements``; the domain
(``arflow.messages.statements``) picks the customers whose statement day is today and sends
each one statement, at most once per month."""

from __future__ import annotations

from temporalio import activity

from arflow.db import SessionFactory
from arflow.messages import statements
from arflow.messages.channels import Channel
from arflow.messages.documents import Seller
from models.types import utcnow
from workflows.types import StatementRun


class MonthlyStatementActivities:
    def __init__(self, sessions: SessionFactory, channel: Channel, seller: Seller) -> None:
        self.sessions = sessions
        self.channel = channel
        self.seller = seller

    @activity.defn(name="send_statements")
    def send_statements(self, run: StatementRun) -> dict[str, int]:
        at = run.at or utcnow()
        counts = {"sent": 0, "skipped": 0, "blocked": 0, "failed": 0}
        with self.sessions() as session:
            for customer, today in statements.due_today(session, at):
                activity.heartbeat(customer.id)
                outcome = statements.send_statement(
                    session, self.channel, self.seller, customer, today
                )
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def all(self) -> list[object]:
        return [self.send_statements]
