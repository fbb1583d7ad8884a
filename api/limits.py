"""Request bodies have a size limit, enforced before anything reads them.

Routes read their bodies before authentication (FastAPI parses the body while it resolves
the route's dependencies), so an unbounded body let anyone, with or without a key, make the
API buffer as much as they sent. ``BodyLimit`` is a pure ASGI middleware: it refuses a
``Content-Length`` over the route's limit at once, without reading, and counts the bytes of a
body that comes without one (chunked), stopping as soon as the count passes the limit. Either
way the answer is 413 with the usual JSON error body. The limit is ``DEFAULT_MAX_BODY`` unless
the route's endpoint says otherwise with ``@max_body(n)`` (the bank-statement upload does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

DEFAULT_MAX_BODY = 1024 * 1024
_LIMIT_ATTR = "__arflow_max_body__"

F = TypeVar("F", bound=Callable[..., Any])


def max_body(limit: int) -> Callable[[F], F]:
    """Give one route a body limit other than ``DEFAULT_MAX_BODY`` (put it under the route's
    decorator)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _LIMIT_ATTR, limit)
        return endpoint

    return mark


class BodyTooLarge(HTTPException):
    """Raised into the app from ``receive`` once the body passes its limit. An HTTPException,
    so FastAPI's body parsing lets it through rather than answering 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


def _marked_routes(app: Any) -> list[tuple[Any, int]]:
    """The routes with a limit of their own, each with its limit (included routers too)."""
    marked = []
    for route in iter_route_contexts(getattr(app, "routes", [])):
        limit = getattr(route.endpoint, _LIMIT_ATTR, None)
        if limit is not None:
            marked.append((route, int(limit)))
    return marked


def route_limit(scope: Scope, default: int) -> int:
    """The body limit of the route ``scope`` reaches (the default unless it is marked)."""
    for route, limit in _marked_routes(scope.get("app")):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return limit
    return default


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses it; count what arrives instead
    return None


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        error_body("too_large", f"the request body is larger than {limit} bytes")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: 413 for a request body over its route's limit (see the module)."""

    def __init__(self, app: ASGIApp, default: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Most bodies are small: the route (a walk over the routes) is looked up only for a
        # body larger than the default, which only a route with a larger limit may take.
        limit: int | None = None
        declared = _declared_length(scope)
        if declared is not None and declared > self.default:
            limit = route_limit(scope, self.default)
            if declared > limit:
                await _too_large(send, limit)
                return
        received = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal received, over, limit
            if over:
                raise BodyTooLarge(limit or self.default)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.default and limit is None:
                    limit = route_limit(scope, self.default)
                if received > (limit or self.default):
                    over = True  # read no more: the rest stays unread
                    raise BodyTooLarge(limit or self.default)
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over:
                return  # whatever the app answered to the cut body, the answer is 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _too_large(send, limit or self.default)
