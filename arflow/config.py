"""Settings: one pydantic-settings class, from the environment (``ARFLOW_*``) and ``.env``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from enum import StrEnum
from functools import lru_cache
from typing import Literal
from urllib.parse import quote

from limits import parse as parse_limit
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.reference import payment_reference

DEFAULT_WEBHOOK_SECRET = "dev-webhook-secret-change-me"
DEFAULT_API_KEYS = "dev-admin-key:admin,dev-specialist-key:specialist,dev-viewer-key:viewer"
DEFAULT_SESSION_SECRET = "dev-session-secret-change-me"
DEFAULT_LINK_SECRET = "dev-link-secret-change-me"
#: The largest ``portal_attachment_max_bytes`` (the portal's dispute form takes three).
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
#: Environments that may run with the development defaults above; any other value (the
#: default ``production`` included) refuses to start with them or with short secrets.
RELAXED_ENVIRONMENTS = ("development", "test")
MIN_SECRET_LENGTH = 32
GENERATE_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")


def same_secret(a: str | bytes, b: str | bytes) -> bool:
    """``hmac.compare_digest`` on UTF-8 bytes: on ``str`` it raises for non-ASCII text (a
    token typed or forged with an accent would be a 500 instead of a refusal)."""
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


class Role(StrEnum):
    """API roles; each one may do what the roles below it may do."""

    viewer = "viewer"
    specialist = "specialist"
    admin = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "specialist": 1, "admin": 2}[self.value]


class Settings(BaseSettings):
    """Everything that differs between a laptop and production."""

    model_config = SettingsConfigDict(env_prefix="ARFLOW_", env_file=".env", extra="ignore")

    environment: str = Field(
        default="production",
        description="production (the default: refuses development or short secrets), "
        "development (set by `arflow run` for its children) or test",
    )
    database_url: str = "sqlite:///./arflow.db"
    temporal_address: str = Field(
        default="",
        description="host:port of a Temporal frontend; empty starts the embedded dev server",
    )
    temporal_namespace: str = "default"
    task_queue: str = "arflow-invoices"
    workflow_sandbox_passthrough: bool = Field(
        default=True,
        description="import the workflows package once instead of per run (see worker.py)",
    )
    workflow_id_prefix: str = Field(
        default="",
        description="prepended to invoice-{id}, for several deployments in one namespace",
    )
    api_keys: str = DEFAULT_API_KEYS
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    webhook_tolerance_seconds: int = 300
    session_secret: str = Field(
        default=DEFAULT_SESSION_SECRET,
        description="signs the web dashboard's session cookie (/app)",
    )
    session_idle_seconds: int = Field(
        default=12 * 3600, ge=60, description="a dashboard session unused this long ends"
    )
    session_absolute_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        description="a dashboard session ends this long after sign-in, however much it is used",
    )
    link_secret: str = Field(
        default=DEFAULT_LINK_SECRET,
        description="signs the pay and unsubscribe links sent to customers",
    )
    link_key_id: str = Field(
        default="k1",
        pattern=r"^[A-Za-z0-9_-]{1,16}$",
        description="the id of link_secret, written into every link's token (kid.mac)",
    )
    link_secrets_old: str = Field(
        default="",
        description="former link secrets as kid:secret,kid:secret: links signed with them "
        "stay valid (rotation); remove an entry to end its links",
    )
    metrics_token: str = Field(
        default="",
        description="bearer token that GET /metrics requires; empty: /metrics is served "
        "without one in development and test, and not at all otherwise",
    )
    api_docs: bool | None = Field(
        default=None,
        description="serve /docs, /redoc and /openapi.json; default on in development and "
        "test, off otherwise",
    )
    auth_failures_per_minute: int = Field(
        default=10,
        ge=1,
        description="failed API-key and dashboard sign-in attempts one client address may "
        "make per minute before it gets 429 (counted per process)",
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    data_dir: str = "./data"
    confirm_payments: bool = Field(
        default=True,
        description="email the customer a confirmation of each payment received "
        "(arflow.messages.confirmations)",
    )
    agency_dir: str = Field(
        default="", description="folder for agency placement files; default data_dir/agency"
    )
    legal_dir: str = Field(
        default="", description="folder for legal-stage documents; default data_dir/legal"
    )
    agency_allow_loopback: bool = Field(
        default=True,
        description="let agency webhooks reach loopback addresses (local fake agencies); "
        "honoured in development and test only",
    )
    agency_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=30,
        description="seconds an agency webhook has for each step (connect, send, answer)",
    )
    temporal_ui_url: str = "http://127.0.0.1:8233"
    public_url: str = Field(
        default="http://127.0.0.1:8000", description="where customers reach us (links, callbacks)"
    )
    pay_link_template: str = Field(
        default="{public_url}/pay/{reference}?t={token}",
        description="payment page of an invoice; fields: public_url, reference, number, "
        "external_id, id, token (a signature of the reference: our own /pay page checks it)",
    )
    portal_link_days: int = Field(
        default=30,
        ge=1,
        le=366,
        description="days a customer's portal link works after it was sent",
    )
    portal_rate_limit: str = Field(
        default="120/minute",
        description="requests per client address to the customer portal, e.g. 120/minute",
    )
    portal_fresh_link_limit: str = Field(
        default="5/hour",
        description="requests for a fresh portal link per client address, e.g. 5/hour; "
        "a customer gets at most 3 fresh links an hour whatever the address",
    )
    webhook_rate_limit: str = Field(
        default="3000/minute",
        description="requests per client address to the provider webhooks, e.g. 120/minute",
    )
    portal_attachment_max_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=1024,
        le=MAX_ATTACHMENT_BYTES,
        description="largest document a customer may attach to a dispute in the portal "
        "(at most 10 MiB: the dispute form's body limit allows three of them)",
    )
    stripe_checkout_origin: str = Field(
        default="https://checkout.stripe.com",
        description="where Stripe's hosted checkout lives: the portal's forms may send the "
        "customer there (Content-Security-Policy form-action)",
    )
    default_locale: str = Field(
        default="en",
        pattern=r"^[a-z]{2}([_-][A-Za-z]{2})?$",
        description="language of messages for customers whose locale has no templates "
        "(templates: en, de, fr; de-AT falls back to de, then to this)",
    )
    statement_inbox: str = Field(
        default="", description="folder of bank statement files; default data_dir/inbox"
    )
    search_attributes: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="set ArflowStatus/Stage/Segment on workflows; auto: if registered",
    )
    bulk_concurrency: int = Field(
        default=8, ge=1, le=64, description="invoices a bulk job works on at once"
    )
    statement_run_cron: str = Field(
        default="0 7 * * *",
        description="when the daily run sends the monthly statements due that day (cron, UTC)",
    )
    customer_review_cron: str = Field(
        default="0 5 * * *",
        description="when the daily review re-evaluates customers' segments and credit holds "
        "(cron, UTC)",
    )
    statement_import_cron: str = Field(
        default="0 6 * * *", description="when the daily statement import runs (cron, UTC)"
    )
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="json (one object per line) or text; default text in development, else json",
    )
    worker_max_cached_workflows: int = Field(
        default=1000,
        ge=0,
        le=100_000,
        description="the worker's sticky cache: workflow runs kept in memory between tasks "
        "(the SDK's default, 1000; bench/README.md measures the memory per cached run); "
        "0 replays every task from its history",
    )
    worker_max_concurrent_workflow_tasks: int = Field(
        default=100,
        ge=2,
        le=1000,
        description="workflow tasks the worker runs at once (the SDK's default, 100)",
    )
    worker_metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="the worker's Prometheus port; 0 turns it off"
    )
    worker_identity: str = Field(
        default="",
        max_length=200,
        description="the worker's name in Temporal (each task's history event says which "
        "worker ran it; give each of N workers its own); empty: the SDK's pid@host",
    )
    # -- outbound channels: email and SMS go to the outbox only while these are empty ------
    sendgrid_api_key: str = Field(default="", description="SendGrid API key; empty: no email")
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_webhook_public_key: str = Field(
        default="",
        description="the event webhook's ECDSA verification key (base64, as SendGrid shows it)",
    )
    sendgrid_inbound_public_key: str = Field(
        default="",
        description="Inbound Parse (customer replies): the public key of the parse setting's "
        "security policy (base64, as SendGrid returns it); empty: the route answers 401",
    )
    email_from: str = Field(default="", description='sender, e.g. "Acme AR <ar@acme.example>"')
    email_reply_to: str = Field(default="", description="Reply-To of reminders; empty: none")
    twilio_account_sid: str = Field(default="", description="Twilio account SID; empty: no SMS")
    twilio_auth_token: str = Field(default="", description="also verifies Twilio's webhooks")
    twilio_from: str = Field(default="", description="sending number (E.164) or service SID")
    twilio_base_url: str = "https://api.twilio.com"
    # -- card payments (customer portal): off while the key or the webhook secret is empty ---
    stripe_api_key: str = Field(
        default="", repr=False, description="Stripe secret API key; empty: no card payments"
    )
    stripe_webhook_secret: str = Field(
        default="",
        repr=False,
        description="signing secret (whsec_...) of the Stripe webhook endpoint "
        "/v1/webhooks/stripe; empty: no card payments",
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com",
        description="Stripe API base URL (tests point it at a local fake)",
    )
    provider_max_per_second: float = Field(
        default=0,
        ge=0,
        description="at most this many activities per second on the task queue (provider "
        "sends are activities there); 0: no limit",
    )
    update_wait_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="how long a request waits for an invoice's workflow to answer a change "
        "(a busy or stopped worker); past it the answer is 503 and the change may still be "
        "applied: the same request with the same Idempotency-Key learns its outcome",
    )
    provider_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="request timeout of the email and SMS providers; keep it well below the "
        "send activity's start-to-close timeout, or a retry may send while a call still waits",
    )
    # -- documents (invoice copy, letters, statements) ----------------------------------------
    company_name: str = Field(default="", description="seller name on invoice copies, letters")
    company_address: str = Field(default="", description="seller postal address, one per line")
    company_iban: str = Field(default="", description="the account customers pay to")
    # -- encryption of Temporal payloads (arflow/codec.py) ------------------------------------
    codec_keys: str = Field(
        default="",
        repr=False,
        description='"kid:base64key,kid:base64key" (AES, 16/24/32 bytes): the first encrypts '
        "what goes to Temporal, all decrypt; empty: payloads are stored in clear (required "
        "in production)",
    )
    bank_accounts: str = Field(
        default="",
        description="IBANs of our accounts, comma-separated: statement lines of other accounts "
        "are reported, not applied; default: company_iban",
    )

    @model_validator(mode="after")
    def _refuse_weak_secrets_outside_development(self) -> Settings:
        self.link_keys()  # fail at start-up on a malformed ARFLOW_LINK_SECRETS_OLD
        if self.environment not in RELAXED_ENVIRONMENTS:
            self._check_secrets()
        if self.sendgrid_api_key and not self.email_from:
            raise ValueError("ARFLOW_EMAIL_FROM must be set with ARFLOW_SENDGRID_API_KEY")
        if bool(self.twilio_account_sid) != bool(self.twilio_auth_token):
            raise ValueError("set both ARFLOW_TWILIO_ACCOUNT_SID and ARFLOW_TWILIO_AUTH_TOKEN")
        if self.twilio_account_sid and not self.twilio_from:
            raise ValueError("ARFLOW_TWILIO_FROM must be set with ARFLOW_TWILIO_ACCOUNT_SID")
        self.parsed_api_keys()  # fail at start-up on a malformed key list
        try:
            self.pay_url(1, "INV-1", "ext-1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ARFLOW_PAY_LINK_TEMPLATE is malformed: {exc!r}") from None
        return self

    def _check_secrets(self) -> None:
        """Fail closed: the development defaults and short secrets are refused, naming the
        setting and how to make a good value."""
        where = f"ARFLOW_ENVIRONMENT={self.environment}"
        for name, value, default in (
            ("ARFLOW_WEBHOOK_SECRET", self.webhook_secret, DEFAULT_WEBHOOK_SECRET),
            ("ARFLOW_SESSION_SECRET", self.session_secret, DEFAULT_SESSION_SECRET),
            ("ARFLOW_LINK_SECRET", self.link_secret, DEFAULT_LINK_SECRET),
        ):
            if value == default:
                raise ValueError(f"{name} must be set with {where}; {GENERATE_HINT}")
            if len(value) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"{name} is shorter than {MIN_SECRET_LENGTH} characters; {GENERATE_HINT}"
                )
        for kid, secret in self.link_keys().items():
            if len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"ARFLOW_LINK_SECRETS_OLD: the secret of {kid!r} is shorter than "
                    f"{MIN_SECRET_LENGTH} characters"
                )
        if self.api_keys == DEFAULT_API_KEYS:
            raise ValueError(
                f"ARFLOW_API_KEYS must be set with {where} (key:role,key:role); "
                f"{GENERATE_HINT} (one per key)"
            )
        dev_keys = Settings.model_construct(api_keys=DEFAULT_API_KEYS).parsed_api_keys()
        for key, role in self.parsed_api_keys().items():
            if key in dev_keys:
                raise ValueError(
                    f"ARFLOW_API_KEYS holds the development {role.value} key; {GENERATE_HINT}"
                )
            if len(key) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"ARFLOW_API_KEYS: a {role.value} key is shorter than "
                    f"{MIN_SECRET_LENGTH} characters; {GENERATE_HINT}"
                )
        if self.metrics_token and len(self.metrics_token) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"ARFLOW_METRICS_TOKEN is shorter than {MIN_SECRET_LENGTH} characters; "
                f"{GENERATE_HINT}"
            )

    @model_validator(mode="after")
    def _rate_limits_valid(self) -> Settings:
        """A limit the ``limits`` library cannot read fails at start-up, not per request."""
        for name in ("portal_rate_limit", "portal_fresh_link_limit", "webhook_rate_limit"):
            try:
                parse_limit(getattr(self, name))
            except ValueError:
                raise ValueError(
                    f"ARFLOW_{name.upper()}: {getattr(self, name)!r} is not a rate limit "
                    "like 120/minute"
                ) from None
        return self

    @model_validator(mode="after")
    def _codec_keys_valid(self) -> Settings:
        self.parsed_codec_keys()  # fail at start-up on a malformed key list
        if self.environment not in RELAXED_ENVIRONMENTS and not self.codec_keys:
            raise ValueError(
                f"ARFLOW_CODEC_KEYS must be set with ARFLOW_ENVIRONMENT={self.environment} "
                '(kid:base64key; README, "Encrypted payloads")'
            )
        return self

    def parsed_codec_keys(self) -> list[tuple[str, bytes]]:
        """``kid:base64key,...`` as (kid, key) pairs, the encrypting one first; raises
        ValueError naming the bad entry's key id (never the key)."""
        keys: list[tuple[str, bytes]] = []
        for entry in filter(None, (e.strip() for e in self.codec_keys.split(","))):
            kid, sep, encoded = (part.strip() for part in entry.partition(":"))
            if not sep or not kid:
                raise ValueError("ARFLOW_CODEC_KEYS entries are kid:base64key")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise ValueError(f"ARFLOW_CODEC_KEYS key {kid!r} is not base64") from None
            if len(key) not in (16, 24, 32):
                raise ValueError(
                    f"ARFLOW_CODEC_KEYS key {kid!r} has {len(key)} bytes; AES needs 16, 24 or 32"
                )
            if kid in dict(keys):
                raise ValueError(f"ARFLOW_CODEC_KEYS names key id {kid!r} twice")
            keys.append((kid, key))
        return keys

    def parsed_api_keys(self) -> dict[str, Role]:
        """``key:role,key:role`` as a mapping; raises ValueError naming the bad entry."""
        keys: dict[str, Role] = {}
        for entry in filter(None, (e.strip() for e in self.api_keys.split(","))):
            key, sep, role = entry.rpartition(":")
            if not sep or not key:
                raise ValueError(f"ARFLOW_API_KEYS entry {entry!r} is not key:role")
            try:
                keys[key] = Role(role)
            except ValueError:
                raise ValueError(
                    f"ARFLOW_API_KEYS entry for role {role!r}: roles are admin, specialist, viewer"
                ) from None
        return keys

    def workflow_id(self, invoice_id: int | None) -> str:
        """The id of an invoice's workflow: ``invoice-{id}`` (no personal data)."""
        return f"{self.workflow_id_prefix}invoice-{invoice_id}"

    def pay_url(self, invoice_id: int, number: str, external_id: str) -> str:
        """The invoice's payment link, from ``pay_link_template``."""
        return self.pay_link_template.format(
            public_url=self.public_url.rstrip("/"),
            reference=payment_reference(invoice_id),
            number=quote(number, safe=""),
            external_id=quote(external_id, safe=""),
            id=invoice_id,
            token=self.pay_token(payment_reference(invoice_id)),
        )

    def pay_token(self, reference: str) -> str:
        """What makes a pay link unguessable (references are sequential)."""
        return self.link_token("pay", reference)

    def link_keys(self) -> dict[str, str]:
        """Link signing keys by id: the current one and ``link_secrets_old`` (rotation)."""
        keys: dict[str, str] = {}
        for entry in filter(None, (e.strip() for e in self.link_secrets_old.split(","))):
            kid, sep, secret = entry.partition(":")
            if not sep or not secret or not _KEY_ID.fullmatch(kid):
                raise ValueError(
                    "ARFLOW_LINK_SECRETS_OLD entries are kid:secret (kid: letters, digits, _ -)"
                )
            keys[kid] = secret
        keys[self.link_key_id] = self.link_secret
        return keys

    def link_token(self, purpose: str, message: str) -> str:
        """``<kid>.<mac>``: an HMAC of ``message`` for ``purpose`` (pay, unsubscribe) under
        the current link key, whose id it names so that rotated keys still verify."""
        return f"{self.link_key_id}.{_link_mac(self.link_secret, purpose, message)}"

    def link_token_valid(self, purpose: str, message: str, token: str) -> bool:
        """True when ``token`` is ``link_token(purpose, message)`` under a known key; any
        other text (an old-format token, an unknown key id, non-ASCII) is False."""
        kid, sep, mac = token.partition(".")
        secret = self.link_keys().get(kid) if sep else None
        return secret is not None and same_secret(mac, _link_mac(secret, purpose, message))

    @property
    def is_relaxed(self) -> bool:
        """Development or test: development defaults allowed, docs and metrics open."""
        return self.environment in RELAXED_ENVIRONMENTS

    @property
    def serves_api_docs(self) -> bool:
        return self.is_relaxed if self.api_docs is None else self.api_docs

    @property
    def our_ibans(self) -> list[str]:
        """Our accounts (``bank_accounts``, else ``company_iban``), upper case without spaces."""
        listed = self.bank_accounts or self.company_iban
        return [iban.replace(" ", "").upper() for iban in listed.split(",") if iban.strip()]

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("text" if self.environment == "development" else "json")

    @property
    def print_folder(self) -> str:
        """Where letters wait for the print-and-mail service, one folder per day."""
        return f"{self.data_dir.rstrip('/')}/print"

    @property
    def external_delivery(self) -> bool:
        """True when a provider sends email or SMS (sends then run as regular activities)."""
        return bool(self.sendgrid_api_key or (self.twilio_account_sid and self.twilio_auth_token))

    @property
    def stripe_enabled(self) -> bool:
        """True when card payments through Stripe Checkout are configured (key and webhook
        secret both set); otherwise the portal offers bank transfer only."""
        return bool(self.stripe_api_key and self.stripe_webhook_secret)

    @property
    def inbox_folder(self) -> str:
        return self.statement_inbox or f"{self.data_dir.rstrip('/')}/inbox"

    @property
    def agency_folder(self) -> str:
        return self.agency_dir or f"{self.data_dir.rstrip('/')}/agency"

    @property
    def is_development(self) -> bool:
        """development or test: local addresses and plain http are allowed for agencies."""
        return self.environment in ("development", "test")

    @property
    def agency_loopback_allowed(self) -> bool:
        return self.agency_allow_loopback and self.is_development

    @property
    def legal_folder(self) -> str:
        """Where the legal stage's generated documents (claim summaries) are written."""
        return self.legal_dir or f"{self.data_dir.rstrip('/')}/legal"


def _link_mac(secret: str, purpose: str, message: str) -> str:
    key = hashlib.sha256(f"link:{purpose}:".encode() + secret.encode()).digest()
    # 128 bits in base64url (22 characters, not 32 in hex): the pay link fits an SMS whole.
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@lru_cache
def get_settings() -> Settings:
    return Settings()
