"""The ``Idempotency-Key`` header, once for every route that takes it.

``IdempotentRoute`` wraps the handler of each route whose dependencies include
``api.deps.idempotency_key``: the key is claimed in ``idempotency_keys`` (per caller,
operation and resource) before the route runs, and the route's successful response is kept.
The same key again answers that response with ``Idempotent-Replayed: true``; with a different
request it is a 422; while the first request still runs, the second waits a few seconds for
its answer, then gets a 409. A route that failed releases
the key (it changed nothing), so the retry runs. Routers that take the key use
``route_class=IdempotentRoute``; a test checks that none is missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlmodel import Session

from api.deps import IDEMPOTENCY_HEADER, idempotency_key, principal_id
from api.errors import error_body
from arflow import idempotency
from arflow.idempotency import Outcome
from models.idempotency import MAX_KEY_LENGTH, MAX_RESOURCE_LENGTH

T = TypeVar("T")

REPLAYED_HEADER = "Idempotent-Replayed"
#: How long a request waits for the first request with its key to answer, then 409.
WAIT_FOR_FIRST = 5.0
POLL = 0.05

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def takes_key(dependant: Dependant) -> bool:
    """Whether the route (any of its dependencies) reads the Idempotency-Key header."""
    return any(d.call is idempotency_key or takes_key(d) for d in dependant.dependencies)


class IdempotentRoute(APIRoute):
    """An APIRoute that keeps and replays the first response to an Idempotency-Key."""

    def get_route_handler(self) -> Handler:
        handler: Handler = super().get_route_handler()
        if not takes_key(self.dependant):
            return handler
        operation = self.name

        async def idempotent(request: Request) -> Response:
            return await _once(request, handler, operation)

        return idempotent


async def _once(request: Request, handler: Handler, operation: str) -> Response:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    principal = principal_id(request)
    resource = request.url.path
    if (
        not key
        or len(key) > MAX_KEY_LENGTH  # the header's validation answers 422 naming it
        or principal is None  # the role check answers 401
        or len(resource) > MAX_RESOURCE_LENGTH  # an id out of range: the bounds check answers 422
    ):
        return await handler(request)
    body_hash = idempotency.request_hash(request.url.query, await request.body())
    claim = await _claim(request, principal, operation, resource, key, body_hash)
    waited = 0.0
    while claim.outcome == Outcome.in_progress and waited < WAIT_FOR_FIRST:
        # A double click: the first request usually answers within moments; give the
        # second its answer rather than a 409.
        await asyncio.sleep(POLL)
        waited += POLL
        claim = await _claim(request, principal, operation, resource, key, body_hash)
    if claim.outcome == Outcome.replay:
        assert claim.status is not None
        return Response(
            claim.body or "",
            status_code=claim.status,
            media_type="application/json",
            headers={REPLAYED_HEADER: "true"},
        )
    if claim.outcome == Outcome.mismatch:
        message = (
            f"this {IDEMPOTENCY_HEADER} was already used with a different request; "
            "send a new key for a new request"
        )
        return JSONResponse(
            error_body(
                "idempotency_key_reused",
                message,
                [{"field": "header.Idempotency-Key", "message": message}],
            ),
            status_code=422,
        )
    if claim.outcome == Outcome.in_progress:
        message = f"a request with this {IDEMPOTENCY_HEADER} is still in progress; retry later"
        return JSONResponse(error_body("in_progress", message), status_code=409)
    assert claim.record_id is not None
    try:
        response = await handler(request)
    except BaseException:
        await _release(request, claim.record_id)
        raise
    body = getattr(response, "body", None)
    if 200 <= response.status_code < 300 and isinstance(body, bytes):
        await _complete(request, claim.record_id, response.status_code, body.decode())
    else:
        await _release(request, claim.record_id)
    return response


async def _in_thread(request: Request, step: Callable[..., T], *args: Any) -> T:
    """``step(session, *args)`` in a session of its own, in a thread, never on the event
    loop: on SQLite a write may wait for the lock (busy_timeout 30 s), and on the loop that
    wait stopped every other request, the one holding the lock included (the schemathesis run
    saw requests still waiting after 20 s, then "database is locked")."""

    def run() -> T:
        with Session(request.app.state.engine) as session:
            return step(session, *args)

    return await asyncio.to_thread(run)


async def _claim(
    request: Request, principal: str, operation: str, resource: str, key: str, body_hash: str
) -> idempotency.Claim:
    claim = idempotency.claim
    return await _in_thread(request, claim, principal, operation, resource, key, body_hash)


async def _release(request: Request, record_id: int) -> None:
    await _in_thread(request, idempotency.release, record_id)


async def _complete(request: Request, record_id: int, status: int, body: str) -> None:
    await _in_thread(request, idempotency.complete, record_id, status, body)
