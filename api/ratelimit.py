"""Request rate limits per client address, with the ``limits`` library (the engine under
slowapi and Flask-Limiter): a moving window in process memory, so each API process counts
for itself (behind several processes, divide the setting by their number). The limits are
settings (``ARFLOW_PORTAL_RATE_LIMIT``, ``ARFLOW_PORTAL_FRESH_LINK_LIMIT``,
``ARFLOW_WEBHOOK_RATE_LIMIT``) in the library's syntax ("120/minute"). Over a limit the answer
is 429 with ``Retry-After``: JSON on the webhooks, a page on the portal."""

from __future__ import annotations

import math
import time

from fastapi import HTTPException, Request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from api.security import client_address


class RateLimits:
    def __init__(self) -> None:
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[str, RateLimitItem] = {}

    def _item(self, limit: str) -> RateLimitItem:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = parse(limit)
        return item

    def hit(self, limit: str, scope: str, key: str) -> int | None:
        """Count one request; None when allowed, else the seconds until one is."""
        item = self._item(limit)
        if self.limiter.hit(item, scope, key):
            return None
        reset = self.limiter.get_window_stats(item, scope, key).reset_time
        return max(1, math.ceil(reset - time.time()))


def limits_of(request: Request) -> RateLimits:
    found: RateLimits = request.app.state.rate_limits
    return found


def retry_after(request: Request, limit: str, scope: str) -> int | None:
    """None when this request from its client address is within ``limit`` for ``scope``."""
    return limits_of(request).hit(limit, scope, client_address(request))


def limit_webhooks(request: Request) -> None:
    """A dependency of the provider webhooks: 429 with ``Retry-After`` past the limit."""
    wait = retry_after(request, request.app.state.settings.webhook_rate_limit, "webhooks")
    if wait is not None:
        raise HTTPException(
            429,
            f"too many webhook requests from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
