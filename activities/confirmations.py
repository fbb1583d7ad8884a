"""The confirmation workflow's activity: one confirmation email, at most once
(``arflow.messages.confirmations``)."""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.failures import not_found_is_final
from arflow.db import SessionFactory
from arflow.messages.confirmations import ConfirmationSender
from workflows.confirmations import ConfirmationInput


class ConfirmationActivities:
    def __init__(self, sessions: SessionFactory, sender: ConfirmationSender) -> None:
        self.sessions = sessions
        self.sender = sender

    @activity.defn(name="send_confirmation")
    def send_confirmation(self, inp: ConfirmationInput) -> str:
        with self.sessions() as session, not_found_is_final():
            return self.sender.send(session, inp)

    def all(self) -> list[Any]:
        return [self.send_confirmation]
