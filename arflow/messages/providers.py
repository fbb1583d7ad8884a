"""Email through SendGrid and SMS through Twilio, with their official SDKs.

Both implement ``arflow.messages.channels.Channel`` and map every way a request can end to the
delivery rule in ``activities.channels``: accepted (a ``DeliveryResult`` with the provider's
message id), ``TransientDeliveryError`` (known not accepted: connection failed before the
request went out, 429, 5xx), ``PermanentDeliveryError`` (any other 4xx) or
``AmbiguousDeliveryError`` (the request went out, no answer: timeout, connection reset). A 429's
(or 503's) ``Retry-After`` becomes the error's ``next_retry_delay``, so Temporal's retry waits
for it instead of the policy's backoff (Twilio's SDK drops the headers from its exception:
``_TwilioHttp`` keeps them). Neither
SDK retries on its own here (SendGrid's client uses urllib without retries; Twilio's uses
``requests`` with its default of no retries), so one ``deliver`` is at most one request.

Both SDKs take their base URL from the settings, so tests (and a staging sandbox) point the
real client code at a local fake server.
"""

from __future__ import annotations

import base64
import http.client
import logging
import threading
import urllib.error
from datetime import timedelta
from typing import Any, NoReturn

import requests
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment as SendGridAttachment,
)
from sendgrid.helpers.mail import (
    Cc,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Header,
    Mail,
    ReplyTo,
    To,
)
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client as TwilioClient
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from arflow.config import Settings
from arflow.messages.channels import (
    AmbiguousDeliveryError,
    Channel,
    ChannelRouter,
    DeliveryResult,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)

log = logging.getLogger("arflow.providers")

DEFAULT_TIMEOUT = 5.0  # seconds; below the send activity's start-to-close timeout (10 s)
SMS_OPT_OUT = "Reply STOP to opt out"
#: Twilio error codes that say the number itself cannot take our messages (block the channel).
#: https://www.twilio.com/docs/api/errors
TWILIO_UNREACHABLE = {
    21211: "failed",  # invalid 'To' phone number
    21214: "failed",  # 'To' phone number cannot be reached
    21612: "failed",  # cannot route to this number
    21614: "failed",  # 'To' number is not a valid mobile number
    21610: "stop",  # the recipient replied STOP (unsubscribed recipient)
    30003: "failed",  # unreachable destination handset
    30005: "failed",  # unknown destination handset
    30006: "failed",  # landline or unreachable carrier
}


def _retry_after(headers: Any) -> timedelta | None:
    """A ``Retry-After`` header in seconds, capped at 10 minutes (dates are ignored)."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return timedelta(seconds=min(max(seconds, 1), 600))


def _http_error(provider: str, status: int, detail: str, headers: Any = None) -> NoReturn:
    reason = (f"{provider} answered {status}" + (f": {detail}" if detail else ""))[:480]
    if status == 429 or status >= 500 or status == 408:
        raise TransientDeliveryError(reason, status=status, retry_after=_retry_after(headers))
    raise PermanentDeliveryError(reason, status=status)


class SendGridEmailChannel:
    """Email via SendGrid's v3 mail send: text and HTML, attachments, one-click unsubscribe.

    ``outbox_id`` and ``invoice_id`` go along as custom args, which SendGrid echoes in every
    event webhook call, so ``POST /v1/webhooks/sendgrid`` finds the outbox row.
    """

    external = True

    def __init__(
        self,
        api_key: str,
        from_email: str,
        base_url: str = "https://api.sendgrid.com",
        reply_to: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not From(from_email).email or (reply_to and not ReplyTo(reply_to).email):
            raise ValueError(f"not an email address: {from_email!r} / {reply_to!r}")
        self.from_email = from_email
        self.reply_to = reply_to or None
        self.timeout = timeout
        self.client = SendGridAPIClient(api_key, host=base_url.rstrip("/"))
        # python_http_client passes this to urllib for every request made from this client.
        self.client.client.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> SendGridEmailChannel:
        return cls(
            api_key=settings.sendgrid_api_key,
            from_email=settings.email_from,
            base_url=settings.sendgrid_base_url,
            reply_to=settings.email_reply_to or None,
            timeout=settings.provider_timeout_seconds,
        )

    def mail(self, message: OutboundMessage) -> dict[str, Any]:
        """The v3 mail send request body for ``message``."""
        if not message.recipient:
            raise PermanentDeliveryError("no email address")
        if not To(message.recipient).email:
            raise PermanentDeliveryError(f"not an email address: {message.recipient!r}")
        sender = From(self.from_email)
        if message.sender_name:
            sender = From(sender.email, message.sender_name)
        mail = Mail(
            from_email=sender,
            to_emails=To(message.recipient),
            subject=message.subject,
            plain_text_content=message.body,
            html_content=message.html,
        )
        for address in message.cc:
            mail.add_cc(Cc(address))
        if message.reply_to or self.reply_to:
            mail.reply_to = ReplyTo(message.reply_to or self.reply_to)
        if message.unsubscribe_url:
            # RFC 8058 one-click unsubscribe: mail clients POST to the URL.
            mail.header = Header("List-Unsubscribe", f"<{message.unsubscribe_url}>")
            mail.header = Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        for att in message.attachments:
            mail.attachment = SendGridAttachment(
                FileContent(base64.b64encode(att.content).decode("ascii")),
                FileName(att.filename),
                FileType(att.mime),
                Disposition("attachment"),
            )
        mail.custom_arg = CustomArg("outbox_id", str(message.outbox_id))
        mail.custom_arg = CustomArg("invoice_id", str(message.invoice_id))
        body: dict[str, Any] = mail.get()
        return body

    def deliver(self, message: OutboundMessage) -> DeliveryResult:
        body = self.mail(message)  # errors here happen before anything is sent
        try:
            response = self.client.send(body)
        except SendGridHTTPError as exc:
            detail = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else ""
            _http_error("SendGrid", int(exc.status_code), detail[:300], exc.headers)
        except urllib.error.URLError as exc:
            # urllib wraps only what fails while connecting and sending the request.
            raise TransientDeliveryError(f"SendGrid not reached: {exc.reason}") from exc
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise AmbiguousDeliveryError(f"SendGrid sent no answer: {exc!r}") from exc
        except OSError as exc:
            raise AmbiguousDeliveryError(f"SendGrid request ended: {exc!r}") from exc
        status = int(response.status_code)
        if not 200 <= status < 300:  # urllib raises for 4xx/5xx; 1xx/3xx should not happen
            _http_error("SendGrid", status, "unexpected answer", response.headers)
        provider_id = response.headers.get("X-Message-Id") if response.headers else None
        log.info(
            "email accepted",
            extra={"outbox_id": message.outbox_id, "provider_id": provider_id},
        )
        return DeliveryResult(provider_id=provider_id)


class TwilioSmsChannel:
    """SMS via Twilio's Messages API, with a status callback naming the outbox row."""

    external = True

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_: str,
        public_url: str,
        base_url: str = "https://api.twilio.com",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.from_ = from_
        self.public_url = public_url.rstrip("/")
        self.timeout = timeout
        self.http = _TwilioHttp(timeout=timeout)
        self.client = TwilioClient(account_sid, auth_token, http_client=self.http)
        self.client.api.base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioSmsChannel:
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            from_=settings.twilio_from,
            public_url=settings.public_url,
            base_url=settings.twilio_base_url,
            timeout=settings.provider_timeout_seconds,
        )

    def text(self, message: OutboundMessage) -> str:
        """The SMS text: the caller's short body, the pay link and the opt-out line."""
        text = message.body.strip()
        if message.pay_url and message.pay_url not in text:
            text = f"{text}\n{message.pay_url}"
        if "reply stop" not in text.lower():
            text = f"{text}\n{SMS_OPT_OUT}"
        return text

    def status_callback(self, outbox_id: int) -> str:
        return f"{self.public_url}/v1/webhooks/twilio/status?outbox_id={outbox_id}"

    def deliver(self, message: OutboundMessage) -> DeliveryResult:
        if not message.recipient:
            raise PermanentDeliveryError("no phone number")
        sender: dict[str, str] = (
            {"messaging_service_sid": self.from_}
            if self.from_.startswith("MG")
            else {"from_": self.from_}
        )
        try:
            sent = self.client.messages.create(
                to=message.recipient,
                body=self.text(message),
                status_callback=self.status_callback(message.outbox_id),
                **sender,
            )
        except TwilioRestException as exc:
            status, code = int(exc.status), exc.code
            if status == 429 or status >= 500 or status == 408:
                raise TransientDeliveryError(
                    f"Twilio answered {status}: {exc.msg}"[:480],
                    status=status,
                    code=code,
                    retry_after=_retry_after(self.http.last_headers()),
                ) from exc
            raise PermanentDeliveryError(
                f"Twilio answered {status} (code {code}): {exc.msg}"[:480],
                status=status,
                code=code,
                block_reason=TWILIO_UNREACHABLE.get(code or 0),
            ) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise TransientDeliveryError(f"Twilio not reached: {exc}") from exc
        except requests.exceptions.Timeout as exc:  # the read timeout: the request went out
            raise AmbiguousDeliveryError(f"Twilio sent no answer: {exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise TransientDeliveryError(f"Twilio not reached: {exc}") from exc
            raise AmbiguousDeliveryError(f"Twilio connection ended: {exc}") from exc
        except (requests.exceptions.RequestException, ValueError) as exc:
            # a broken answer to a request that went out (bad JSON, chunked encoding ...)
            raise AmbiguousDeliveryError(f"Twilio answer unreadable: {exc!r}") from exc
        provider_id = getattr(sent, "sid", None)
        log.info(
            "sms accepted",
            extra={"outbox_id": message.outbox_id, "provider_id": provider_id},
        )
        return DeliveryResult(provider_id=provider_id)


class _TwilioHttp(TwilioHttpClient):
    """Twilio's HTTP client, keeping the headers of the last answer on this thread: a
    ``TwilioRestException`` drops them, and a 429's ``Retry-After`` is there. Thread-local,
    since the activity threads share one client."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._answers = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self._answers.headers = None
        response = super().request(*args, **kwargs)
        self._answers.headers = response.headers
        return response

    def last_headers(self) -> Any:
        """The headers of this thread's last answer (None: no answer came)."""
        return getattr(self._answers, "headers", None)


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when ``requests`` failed to open the connection (so nothing was sent)."""
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, MaxRetryError):
        inner = inner.reason
    return isinstance(inner, NewConnectionError | ConnectTimeoutError)


def channel_for(settings: Settings) -> ChannelRouter:
    """The channels the settings configure: SendGrid for email and Twilio for SMS when their
    credentials are set, the outbox-only channel for everything else."""
    routes: dict[str, Channel] = {}
    if settings.sendgrid_api_key:
        routes["email"] = SendGridEmailChannel.from_settings(settings)
    if settings.twilio_account_sid and settings.twilio_auth_token:
        routes["sms"] = TwilioSmsChannel.from_settings(settings)
    return ChannelRouter(routes)
