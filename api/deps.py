"""FastAPI dependencies as annotated aliases: settings, session, Temporal client, principal
(``arflow.access.Principal``, re-exported here), the Idempotency-Key header and today's date."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from temporalio.client import Client

from api.security import client_address, limiter_of
from arflow import idempotency
from arflow.access import Principal
from arflow.config import Role, Settings, same_secret
from models.idempotency import MAX_KEY_LENGTH


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_temporal(request: Request) -> Client:
    client: Client | None = request.app.state.temporal
    if client is None:
        raise HTTPException(503, "Temporal is not connected")
    return client


def get_optional_temporal(request: Request) -> Client | None:
    """The Temporal client, or None: for routes whose Temporal part is only sometimes needed."""
    client: Client | None = request.app.state.temporal
    return client


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
OptionalTemporalDep = Annotated[Client | None, Depends(get_optional_temporal)]

_bearer = HTTPBearer(auto_error=False)
BearerCreds = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def too_many_attempts(retry_after: int) -> HTTPException:
    return HTTPException(
        429,
        f"too many failed attempts from this address; retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def key_role(keys: dict[str, Role], offered: str) -> Role | None:
    """The role of ``offered`` among ``keys``, compared in constant time (bytes)."""
    found = None
    for key, role in keys.items():
        if same_secret(key, offered):
            found = role
    return found


def require(role: Role) -> Callable[..., Principal]:
    def dependency(
        request: Request,
        creds: BearerCreds,
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(
                401, "missing bearer API key", headers={"WWW-Authenticate": "Bearer"}
            )
        limiter, address = limiter_of(request), client_address(request)
        wait = limiter.retry_after(address)
        if wait is not None:
            raise too_many_attempts(wait)
        keys: dict[str, Role] = request.app.state.api_keys
        found = key_role(keys, creds.credentials)
        if found is None:
            limiter.failed(address)
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if found.rank < role.rank:
            raise HTTPException(403, f"this action needs the {role.value} role")
        key_id = hashlib.sha256(creds.credentials.encode()).hexdigest()[:8]
        return Principal(role=found, key_id=key_id)

    return dependency


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Specialist = Annotated[Principal, Depends(require(Role.specialist))]
Admin = Annotated[Principal, Depends(require(Role.admin))]


IDEMPOTENCY_HEADER = "Idempotency-Key"


def principal_id(request: Request) -> str | None:
    """Who sent the request, for scoping idempotency keys: the sha256 of its API key, or None
    without a known one (the route's role check answers 401 then)."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    keys: dict[str, Role] = request.app.state.api_keys
    if scheme.lower() != "bearer" or token not in keys:
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def idempotency_key(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            max_length=MAX_KEY_LENGTH,
            description="the same key again (a double click, a retry) applies the action once "
            "and answers with the first response (header Idempotent-Replayed: true); the same "
            "key with a different request is a 422",
        ),
    ] = None,
) -> str | None:
    """The key as the domain uses it: scoped to the caller and of a fixed length (the first
    response itself is kept and replayed by ``api.idempotency.IdempotentRoute``)."""
    if not key:
        return None
    return idempotency.scoped_key(principal_id(request) or "", key)


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


def today_utc() -> date:
    """Today's date in UTC (a dependency, so tests can fix the day)."""
    return datetime.now(UTC).date()


TodayDep = Annotated[date, Depends(today_utc)]
