"""Outbound channels behind one interface.

The activity writes every message to the outbox table first (unique per invoice, step and
channel), then hands it to a channel. The core's default channel is the outbox itself plus a
log line; real email and SMS adapters implement the same ``deliver``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("arflow.channels")


@dataclass(frozen=True)
class OutboundMessage:
    outbox_id: int  # also the idempotency key a provider adapter must pass on
    invoice_id: int
    step_key: str
    channel: str
    recipient: str | None
    subject: str
    body: str


@dataclass(frozen=True)
class DeliveryResult:
    provider_id: str | None = None


class Channel(Protocol):
    #: False when the outbox row *is* the delivery (no provider call that could fail after it).
    external: bool

    def deliver(self, message: OutboundMessage) -> DeliveryResult: ...


class OutboxOnlyChannel:
    """Default channel: the rendered message stays in the outbox and goes to the log."""

    external = False

    def deliver(self, message: OutboundMessage) -> DeliveryResult:
        log.info(
            "reminder recorded in outbox",
            extra={
                "invoice_id": message.invoice_id,
                "step": message.step_key,
                "channel": message.channel,
                "outbox_id": message.outbox_id,
            },
        )
        return DeliveryResult(provider_id=f"outbox-{message.outbox_id}")
