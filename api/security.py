"""HTTP-level protections: security headers on HTML pages, and the per-address limit on
failed sign-in attempts (bearer API keys, the dashboard's login form, the metrics token)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Scripts and styles only from our own files (no inline <script>, <style>, style= or on*=
#: attributes in the templates: htmx's own indicator <style> is turned off in base.html), no
#: framing, forms post only to us.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HTML_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # for browsers without CSP frame-ancestors
    "Referrer-Policy": "no-referrer",  # pay and unsubscribe URLs carry tokens
}


class SecurityHeaders:
    """ASGI middleware: ``nosniff`` on every answer, and the CSP, framing and referrer
    headers on every ``text/html`` one (dashboard, pay and unsubscribe pages, error pages)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if headers.get("content-type", "").lower().startswith("text/html"):
                    for name, value in HTML_HEADERS.items():
                        headers.setdefault(name, value)  # a page may set a stricter/wider CSP
            await send(message)

        await self.app(scope, receive, with_headers)


class FailureLimiter:
    """At most ``limit`` failed attempts per client address in a sliding ``window``; past
    that, :meth:`retry_after` answers the seconds until the oldest failure leaves it.

    In-process: each API process counts for itself (several uvicorn workers each allow
    ``limit``). Successes are neither counted nor delayed. While an address is over the
    limit every attempt from it is refused, a right key included, so that the refusal does
    not tell a guessed key from a wrong one."""

    MAX_ADDRESSES = 100_000  # past this, addresses whose failures are all old are dropped

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        found = self._failures.get(address)
        if found is None:
            return None
        while found and found[0] <= now - self.window:
            found.popleft()
        if not found:
            del self._failures[address]
            return None
        return found

    def retry_after(self, address: str) -> int | None:
        """Seconds to wait when ``address`` is over the limit, else None."""
        with self._lock:
            now = self.clock()
            found = self._recent(address, now)
            if found is None or len(found) < self.limit:
                return None
            return max(1, math.ceil(found[0] + self.window - now))

    def failed(self, address: str) -> None:
        with self._lock:
            now = self.clock()
            if len(self._failures) >= self.MAX_ADDRESSES:
                for other in list(self._failures):
                    self._recent(other, now)
            found = self._recent(address, now)
            if found is None:
                found = self._failures[address] = deque()
            found.append(now)
            while len(found) > self.limit:
                found.popleft()


def client_address(request: Request) -> str:
    """The peer's address (behind a proxy, run uvicorn with ``--proxy-headers`` and
    ``--forwarded-allow-ips`` so that this is the client's, not the proxy's)."""
    return request.client.host if request.client else "unknown"


def limiter_of(request: Request) -> FailureLimiter:
    limiter: FailureLimiter = request.app.state.auth_failures
    return limiter
