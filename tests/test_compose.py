"""The production deployment description: docker-compose.yml, Dockerfile and the settings they feed.

Static checks only (no Docker needed): the compose file parses, names the services we deploy,
passes every ``ARFLOW_*`` variable to a real ``Settings`` field, and orders start-up so
migrations run before the API and the worker.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from arflow.config import (
    DEFAULT_API_KEYS,
    DEFAULT_SESSION_SECRET,
    DEFAULT_WEBHOOK_SECRET,
    Settings,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

OUR_SERVICES = ("migrate", "api", "worker")
EXPECTED_SERVICES = {"postgresql", "temporal", "temporal-ui", *OUR_SERVICES}
REQUIRED_ON_API_AND_WORKER = (
    "ARFLOW_DATABASE_URL",
    "ARFLOW_TEMPORAL_ADDRESS",
    "ARFLOW_WEBHOOK_SECRET",
    "ARFLOW_API_KEYS",
    "ARFLOW_SESSION_SECRET",
    "ARFLOW_LINK_SECRET",
    "ARFLOW_ENVIRONMENT",
)
SECRETS = (
    "ARFLOW_WEBHOOK_SECRET",
    "ARFLOW_API_KEYS",
    "ARFLOW_SESSION_SECRET",
    "ARFLOW_LINK_SECRET",
)
REAL = {
    "webhook_secret": "w" * 32,
    "session_secret": "s" * 32,
    "link_secret": "l" * 32,
    "api_keys": f"{'k' * 32}:admin",
    "codec_keys": "k1:" + "A" * 43 + "=",
}
# ${NAME:?message}: compose refuses to start when NAME is unset or empty.
REQUIRED_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):\?[^}]*\}")


def _real(**overrides: Any) -> dict[str, Any]:
    return REAL | overrides


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yml has no services mapping"
    return data


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of compose's two spellings it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
    assert isinstance(env, dict), f"environment is neither list nor mapping: {env!r}"
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition} (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _published_container_ports(service: dict[str, Any]) -> dict[str, str]:
    """{host port: container port} for the short ("8000:8000") and long port syntaxes."""
    published: dict[str, str] = {}
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published[str(port.get("published"))] = str(port.get("target"))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) >= 2:
            published[parts[-2]] = parts[-1]
    return published


def _settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def _dockerfile_instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction (CMD, ENTRYPOINT...), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        line.strip()[len(name) :].strip()
        for line in text.splitlines()
        if line.strip().upper().startswith(name + " ")
    ]


# -- compose file -------------------------------------------------------------------------------


def test_compose_declares_the_expected_services() -> None:
    services = _services()
    missing = EXPECTED_SERVICES - services.keys()
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"
    assert services["postgresql"]["image"].startswith("postgres:16")
    assert services["temporal"]["image"].startswith("temporalio/auto-setup")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui")


def test_our_services_are_built_from_the_repository_dockerfile() -> None:
    services = _services()
    for name in OUR_SERVICES:
        build = services[name].get("build")
        if isinstance(build, dict):
            assert build.get("context", ".") in (".", "./"), f"{name}: build context {build!r}"
            assert build.get("dockerfile", "Dockerfile") == "Dockerfile", f"{name}: {build!r}"
        else:
            assert build in (".", "./"), f"{name} is not built from the repository: {build!r}"
    images = {services[name].get("image") for name in OUR_SERVICES}
    assert len(images) == 1, f"api, worker and migrate should share one image, got {images}"


def test_every_arflow_variable_is_a_settings_field() -> None:
    known = _settings_env_names()
    assert "ARFLOW_DATABASE_URL" in known  # the mapping rule itself (database_url)
    services = _services()
    for name in OUR_SERVICES:
        arflow_vars = {k for k in _env(services[name]) if k.startswith("ARFLOW_")}
        assert arflow_vars, f"{name} gets no ARFLOW_* configuration"
        unknown = arflow_vars - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which Settings does not read"


@pytest.mark.parametrize("service", ["api", "worker"])
def test_required_settings_are_set_on_api_and_worker(service: str) -> None:
    env = _env(_services()[service])
    for name in REQUIRED_ON_API_AND_WORKER:
        assert env.get(name), f"{service} does not set {name}"
    assert env["ARFLOW_ENVIRONMENT"] == "production"
    assert env["ARFLOW_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["ARFLOW_DATABASE_URL"].startswith("postgresql://arflow:")
    assert env["ARFLOW_DATABASE_URL"].endswith("@postgresql:5432/arflow")


@pytest.mark.parametrize("service", OUR_SERVICES)
def test_secrets_are_required_compose_variables(service: str) -> None:
    """No default for the secrets: compose must refuse to start until the operator sets them."""
    env = _env(_services()[service])
    for name in SECRETS:
        match = REQUIRED_VARIABLE.fullmatch(env.get(name, ""))
        assert match, f"{service}: {name}={env.get(name)!r} is not a required ${{VAR:?msg}}"
        assert match["name"] == name
    assert REQUIRED_VARIABLE.search(env["ARFLOW_DATABASE_URL"]), "database password has a default"
    for name, value in env.items():
        assert DEFAULT_WEBHOOK_SECRET not in value, f"{service}: {name} carries the dev secret"
        assert DEFAULT_API_KEYS not in value, f"{service}: {name} carries the dev API keys"
        assert DEFAULT_SESSION_SECRET not in value, f"{service}: {name} carries the dev secret"


def test_api_worker_and_migrate_share_one_environment() -> None:
    services = _services()
    envs = {name: _env(services[name]) for name in OUR_SERVICES}
    assert envs["api"] == envs["worker"] == envs["migrate"]


def test_commands_of_our_services() -> None:
    services = _services()
    assert _command(services["migrate"]) == ["alembic", "upgrade", "head"]
    assert _command(services["worker"]) == ["python", "worker.py"]
    api_cmd = _command(services["api"])
    if api_cmd:  # otherwise the Dockerfile's CMD runs (checked below)
        assert "api.app:create_app" in api_cmd and "--factory" in api_cmd
        assert api_cmd[api_cmd.index("--port") + 1] == "8000"


def test_published_ports() -> None:
    services = _services()
    assert _published_container_ports(services["api"]).get("8000") == "8000"
    assert _published_container_ports(services["temporal-ui"]).get("8233") == "8080"
    assert _env(services["temporal-ui"]).get("TEMPORAL_ADDRESS") == "temporal:7233"


def test_temporal_ui_is_loopback_only_and_read_only_by_default() -> None:
    """Anyone reaching the UI reads every workflow and, with write actions, could signal or
    terminate them behind the API's back: loopback and read-only unless SSO is set up."""
    ui = _services()["temporal-ui"]
    ports = ui.get("ports") or []
    assert len(ports) == 1
    port = ports[0]
    host = str(port.get("host_ip", "")) if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
    default = re.fullmatch(r"\$\{[A-Z_]+:-(?P<value>[^}]*)\}", host)
    assert (default["value"] if default else host) == "127.0.0.1", port
    env = _env(ui)
    assert env.get("TEMPORAL_DISABLE_WRITE_ACTIONS") == "true"
    for name in (
        "TEMPORAL_AUTH_ENABLED",
        "TEMPORAL_AUTH_PROVIDER_URL",
        "TEMPORAL_AUTH_CLIENT_ID",
        "TEMPORAL_AUTH_CLIENT_SECRET",
        "TEMPORAL_AUTH_CALLBACK_URL",
    ):
        assert name in env, f"temporal-ui does not pass {name} (SSO)"
        assert name in (ROOT / "README.md").read_text(), f"README does not document {name}"
    assert env["TEMPORAL_AUTH_ENABLED"] in ("${TEMPORAL_AUTH_ENABLED:-false}", "false")


def test_start_up_order() -> None:
    services = _services()
    assert _depends_on(services["migrate"]).get("postgresql") == "service_healthy"
    assert "healthcheck" in services["postgresql"], "service_healthy needs a healthcheck"
    for name in ("api", "worker"):
        deps = _depends_on(services[name])
        assert deps.get("migrate") == "service_completed_successfully", f"{name}: {deps}"
        assert "temporal" in deps, f"{name} does not wait for temporal: {deps}"
    assert "postgresql" in _depends_on(services["temporal"])


def test_temporal_uses_the_same_postgres_server() -> None:
    services = _services()
    env = _env(services["temporal"])
    assert env.get("DB") == "postgres12"
    assert env.get("POSTGRES_SEEDS") == "postgresql"
    assert env.get("POSTGRES_USER") == _env(services["postgresql"]).get("POSTGRES_USER")
    assert env.get("POSTGRES_PWD") == _env(services["postgresql"]).get("POSTGRES_PASSWORD")


def test_volumes_are_declared() -> None:
    data = _compose()
    declared = set((data.get("volumes") or {}).keys())
    services = data["services"]
    for name in ("postgresql", *OUR_SERVICES):
        for volume in services[name].get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source!r}"
    assert any(
        str(v).endswith(":/var/lib/postgresql/data") for v in services["postgresql"]["volumes"]
    )
    assert any(str(v).endswith(":/data") for v in services["api"]["volumes"])
    assert _env(services["api"]).get("ARFLOW_DATA_DIR") == "/data"


# -- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_runs_the_api_by_default() -> None:
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM\s+python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"^RUN\b.*\bpip install \.", text, re.MULTILINE), "project not pip-installed"
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", text, re.MULTILINE), "image runs as root"
    launch = " ".join(_dockerfile_instructions("CMD") + _dockerfile_instructions("ENTRYPOINT"))
    assert "api.app:create_app" in launch
    assert "--factory" in launch


def test_dockerignore_keeps_local_state_out() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".venv", ".git", "data", "*.db"):
        assert pattern in ignore, f".dockerignore does not exclude {pattern}"


# -- the settings refuse development secrets in production ----------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ARFLOW_* from the caller's shell and no .env file, so only explicit values count."""
    for name in _settings_env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_production_refuses_the_default_webhook_secret() -> None:
    with pytest.raises(ValidationError, match="ARFLOW_WEBHOOK_SECRET"):
        Settings(**_real(environment="production", webhook_secret=DEFAULT_WEBHOOK_SECRET))
    with pytest.raises(ValidationError, match="ARFLOW_WEBHOOK_SECRET"):
        Settings(environment="production")


@pytest.mark.usefixtures("clean_env")
def test_production_refuses_the_default_api_keys() -> None:
    with pytest.raises(ValidationError, match="ARFLOW_API_KEYS"):
        Settings(**_real(environment="production", api_keys=DEFAULT_API_KEYS))


@pytest.mark.usefixtures("clean_env")
def test_production_refuses_the_default_session_secret() -> None:
    with pytest.raises(ValidationError, match="ARFLOW_SESSION_SECRET"):
        Settings(**_real(environment="production", session_secret=DEFAULT_SESSION_SECRET))


@pytest.mark.usefixtures("clean_env")
def test_production_starts_with_real_secrets() -> None:
    settings = Settings(**_real(environment="production"))
    assert settings.environment == "production"
    assert settings.webhook_secret == "w" * 32
    assert settings.parsed_api_keys() == {"k" * 32: "admin"}


@pytest.mark.usefixtures("clean_env")
def test_compose_environment_builds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The api's environment, with the required variables filled in, is accepted by Settings."""
    filled = {
        "POSTGRES_PASSWORD": "pw",
        "ARFLOW_API_KEYS": f"{'a' * 32}:admin,{'v' * 32}:viewer",
        "ARFLOW_WEBHOOK_SECRET": "w" * 32,
        "ARFLOW_SESSION_SECRET": "s" * 32,
        "ARFLOW_LINK_SECRET": "l" * 32,
        "ARFLOW_CODEC_KEYS": "k1:" + "A" * 43 + "=",
    }

    def interpolate(value: str) -> str:
        def one(m: re.Match[str]) -> str:
            name, default = m["name"], m["default"]
            return filled.get(name) or (default[2:] if default.startswith(":-") else "")

        return re.sub(r"\$\{(?P<name>[A-Z0-9_]+)(?P<default>[^}]*)\}", one, value)

    for name, value in _env(_services()["api"]).items():
        monkeypatch.setenv(name, interpolate(value))
    settings = Settings()
    assert settings.environment == "production"
    assert settings.database_url == "postgresql://arflow:pw@postgresql:5432/arflow"
    assert settings.temporal_address == "temporal:7233"
    assert settings.api_port == 8000
    assert settings.data_dir == "/data"
    assert set(settings.parsed_api_keys()) == {"a" * 32, "v" * 32}
    assert settings.link_key_id == "k1" and settings.link_keys() == {"k1": "l" * 32}
    assert settings.metrics_token == "" and settings.serves_api_docs is False
