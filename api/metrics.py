"""The API's request metrics and log context: an ASGI middleware (the metrics themselves and
their exposition are in ``arflow.observability``, shared with the worker)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arflow.observability import HTTP_DURATION, HTTP_REQUESTS, log_context

_INVOICE_IN_PATH = re.compile(r"^/v1/invoices/(\d+)(?:/|$)")
#: The ``method`` label's values: any other token a client sends is counted as OTHER, so a
#: client cannot grow the metric without bound.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


class RequestObservability:
    """ASGI middleware: counts and times each request by route template, and puts the
    invoice id and workflow id of ``/v1/invoices/{id}...`` paths on the request's log lines."""

    def __init__(self, app: ASGIApp, workflow_id: Callable[[int], str]) -> None:
        self.app = app
        self.workflow_id = workflow_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        found = _INVOICE_IN_PATH.match(scope.get("path", ""))
        fields: dict[str, Any] = {}
        if found:
            invoice_id = int(found.group(1))
            fields = {"invoice_id": invoice_id, "workflow_id": self.workflow_id(invoice_id)}

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            with log_context(**fields):
                await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = method_label(scope.get("method", ""))
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
