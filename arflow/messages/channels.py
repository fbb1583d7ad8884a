"""Outbound channels behind one interface.

The activity writes every message to the outbox table first (unique per invoice, step and
channel), then hands it to a channel. The core's default channel is the outbox itself plus a
log line; the email (SendGrid) and SMS (Twilio) adapters in ``activities.providers``
implement the same ``deliver``, and ``providers.channel_for(settings)`` routes each message by its
``channel`` to the adapter configured for it.

**The delivery rule.** Neither SendGrid's mail send nor Twilio's message create accepts an
idempotency key, so a request that went out may never be sent again automatically. Every
adapter answers ``deliver`` with a ``DeliveryResult`` or one of three errors:

- ``TransientDeliveryError``: the provider did *not* accept the message, and it is known:
  the connection failed before the request was sent, or the answer was 429 or 5xx. Let it
  propagate: Temporal retries the activity (after ``Retry-After`` when the provider gave one).
- ``PermanentDeliveryError``: a 4xx that can never succeed (bad address, recipient opted out,
  rejected). Not retryable. The caller records the outbox row ``failed`` with the reason, may
  block the channel for the customer (``block_reason``), and falls back to another channel.
- ``AmbiguousDeliveryError``: the request went out and no answer came (timeout or connection
  reset after sending). The provider may or may not have the message. Not retryable. The
  caller records the outbox row ``uncertain``; a provider webhook (delivered, bounce) may
  settle it later, a person may resend it; nothing resends it automatically.

All three are ``temporalio`` ``ApplicationError``s with their class name as ``type``, and the
two that must not be retried are ``non_retryable``: a caller that forgets to catch them fails
the activity instead of sending the message twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlmodel import Session
from temporalio.exceptions import ApplicationError

from models.types import utcnow

if TYPE_CHECKING:
    pass

log = logging.getLogger("arflow.channels")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime: str = "application/pdf"


@dataclass(frozen=True)
class OutboundMessage:
    outbox_id: int  # the provider adapters pass it on (custom args, status callback)
    invoice_id: int
    step_key: str
    channel: str
    recipient: str | None
    subject: str
    body: str  # plain text; the SMS text for ``sms``
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    pay_url: str | None = None
    unsubscribe_url: str | None = None
    customer_id: int | None = None
    sender_name: str | None = None  # shown as the sender (the assigned collector)
    reply_to: str | None = None  # replies go here instead of the team's address
    cc: tuple[str, ...] = ()  # email: the customer's additional contacts, as copies


@dataclass(frozen=True)
class DeliveryResult:
    provider_id: str | None = None


class DeliveryError(ApplicationError):
    """A channel could not deliver a message; see the module docstring for the three kinds."""

    retryable = False

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(
            reason,
            type=type(self).__name__,
            non_retryable=not self.retryable,
            next_retry_delay=retry_after,
        )
        self.reason = reason
        self.status = status  # the provider's HTTP status, when it answered
        self.code = code  # the provider's own error code (Twilio), when it gave one


class TransientDeliveryError(DeliveryError):
    """Known not accepted (connection refused, 429, 5xx): retry the activity."""

    retryable = True


class PermanentDeliveryError(DeliveryError):
    """Rejected for good (bad address, opted out): record ``failed``, use another channel."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        code: int | None = None,
        block_reason: str | None = None,
    ) -> None:
        super().__init__(reason, status=status, code=code)
        #: a ``ContactBlock`` reason when the address itself is unusable (opted out, invalid)
        self.block_reason = block_reason


class AmbiguousDeliveryError(DeliveryError):
    """Sent, no answer: record ``uncertain`` and never resend automatically."""


class Channel(Protocol):
    #: False when the outbox row *is* the delivery (no provider call that could fail after it).
    @property
    def external(self) -> bool: ...

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


class ChannelRouter:
    """A ``Channel`` that hands each message to the adapter for its ``channel``.

    Channels without an adapter (``call``, ``letter``, and email or SMS while no provider is
    configured) go to the default, the outbox-only channel.
    """

    def __init__(self, routes: Mapping[str, Channel], default: Channel | None = None) -> None:
        self.routes = dict(routes)
        self.default: Channel = default or OutboxOnlyChannel()

    def channel(self, name: str) -> Channel:
        return self.routes.get(name, self.default)

    def is_external(self, channel: str) -> bool:
        """True when a message on ``channel`` goes to a provider (commit the row first)."""
        return self.channel(channel).external

    @property
    def external(self) -> bool:
        """True when any routed channel is external (callers should ask ``is_external``)."""
        return self.default.external or any(c.external for c in self.routes.values())

    def deliver(self, message: OutboundMessage) -> DeliveryResult:
        return self.channel(message.channel).deliver(message)


class RecordedSend(Protocol):
    """A row that records one message's delivery (a statement, a fresh portal link)."""

    status: str
    detail: str | None
    provider_id: str | None
    sent_at: datetime | None


def deliver_and_record(
    session: Session, channel: Channel, message: OutboundMessage, row: RecordedSend
) -> str:
    """Hand ``message`` to ``channel`` and write on ``row`` what happened (commits): ``sent``
    with the provider's id; ``failed`` (refused for good) or ``uncertain`` (it may have gone:
    never resent) with the reason; a transient refusal puts the row back to ``queued`` and is
    raised, for the activity's retry. Answers the row's status."""
    try:
        result = channel.deliver(message)
    except TransientDeliveryError as exc:
        row.status, row.detail = "queued", exc.reason[:500]  # known not accepted: retried
        session.add(row)
        session.commit()
        raise
    except PermanentDeliveryError as exc:
        row.status, row.detail = "failed", exc.reason[:500]
    except AmbiguousDeliveryError as exc:
        row.status, row.detail = "uncertain", exc.reason[:500]
    else:
        row.status, row.provider_id, row.sent_at = "sent", result.provider_id, utcnow()
        row.detail = None
    session.add(row)
    session.commit()
    return row.status
