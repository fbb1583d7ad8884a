"""Settings: one pydantic-settings class, from the environment (``ARFLOW_*``) and ``.env``."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_WEBHOOK_SECRET = "dev-webhook-secret-change-me"
DEFAULT_API_KEYS = "dev-admin-key:admin,dev-specialist-key:specialist,dev-viewer-key:viewer"


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
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    data_dir: str = "./data"
    agency_dir: str = Field(
        default="", description="folder for agency placement files; default data_dir/agency"
    )
    temporal_ui_url: str = "http://127.0.0.1:8233"

    @model_validator(mode="after")
    def _refuse_default_secrets_outside_development(self) -> Settings:
        if self.environment not in ("development", "test"):
            if self.webhook_secret == DEFAULT_WEBHOOK_SECRET:
                raise ValueError("ARFLOW_WEBHOOK_SECRET must be set outside development")
            if self.api_keys == DEFAULT_API_KEYS:
                raise ValueError("ARFLOW_API_KEYS must be set outside development")
        self.parsed_api_keys()  # fail at start-up on a malformed key list
        return self

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

    @property
    def agency_folder(self) -> str:
        return self.agency_dir or f"{self.data_dir.rstrip('/')}/agency"


@lru_cache
def get_settings() -> Settings:
    return Settings()
