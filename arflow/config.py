"""Settings: one pydantic-settings class, from the environment (``ARFLOW_*``) and ``.env``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from enum import StrEnum
from functools import lru_cache
from typing import Literal
from urllib.parse import quote

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.reference import payment_reference

DEFAULT_WEBHOOK_SECRET = "dev-webhook-secret-change-me"
DEFAULT_API_KEYS = "dev-admin-key:admin,dev-specialist-key:specialist,dev-viewer-key:viewer"
DEFAULT_SESSION_SECRET = "dev-session-secret-change-me"


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

    environment: str = Field(default="development", description="development, test or production")
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
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    data_dir: str = "./data"
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
    worker_metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="the worker's Prometheus port; 0 turns it off"
    )
    # -- outbound channels: email and SMS go to the outbox only while these are empty ------
    sendgrid_api_key: str = Field(default="", description="SendGrid API key; empty: no email")
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_webhook_public_key: str = Field(
        default="",
        description="the event webhook's ECDSA verification key (base64, as SendGrid shows it)",
    )
    email_from: str = Field(default="", description='sender, e.g. "Acme AR <ar@acme.example>"')
    email_reply_to: str = Field(default="", description="Reply-To of reminders; empty: none")
    twilio_account_sid: str = Field(default="", description="Twilio account SID; empty: no SMS")
    twilio_auth_token: str = Field(default="", description="also verifies Twilio's webhooks")
    twilio_from: str = Field(default="", description="sending number (E.164) or service SID")
    twilio_base_url: str = "https://api.twilio.com"
    provider_max_per_second: float = Field(
        default=0,
        ge=0,
        description="at most this many activities per second on the task queue (provider "
        "sends are activities there); 0: no limit",
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
    def _refuse_default_secrets_outside_development(self) -> Settings:
        if self.environment not in ("development", "test"):
            if self.webhook_secret == DEFAULT_WEBHOOK_SECRET:
                raise ValueError("ARFLOW_WEBHOOK_SECRET must be set outside development")
            if self.api_keys == DEFAULT_API_KEYS:
                raise ValueError("ARFLOW_API_KEYS must be set outside development")
            if self.session_secret == DEFAULT_SESSION_SECRET:
                raise ValueError("ARFLOW_SESSION_SECRET must be set outside development")
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

    @model_validator(mode="after")
    def _codec_keys_valid(self) -> Settings:
        self.parsed_codec_keys()  # fail at start-up on a malformed key list
        if self.environment == "production" and not self.codec_keys:
            raise ValueError("ARFLOW_CODEC_KEYS must be set in production")
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
        key = hashlib.sha256(b"pay:" + self.webhook_secret.encode()).digest()
        return hmac.new(key, reference.encode(), hashlib.sha256).hexdigest()[:20]

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


@lru_cache
def get_settings() -> Settings:
    return Settings()
