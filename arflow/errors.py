"""The domain's own errors: plain exceptions that say what went wrong in the collector's words.

The domain raises them whoever called it (a route, an activity, the CLI); each transport maps
them in one place: ``api/errors.py`` to HTTP status codes and the JSON error body, the
activities to Temporal failures, the CLI to a message and an exit code. ``code`` is the
machine-readable word of the JSON error body (``not_found``, ``refused``, ...); ``details``
an optional JSON-able value with more (the line numbers of a rejected file, say).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    default_code = "error"

    def __init__(self, message: str, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.code = code or self.default_code


class NotFound(DomainError):
    """What the request names does not exist (or may not be seen by its sender)."""

    default_code = "not_found"


class BadRequest(DomainError):
    """The request cannot be read as what it claims to be (a provider's event whose signature
    does not check out): answered 400, which is what providers such as Stripe expect."""

    default_code = "bad_request"


class Conflict(DomainError):
    """The request is well formed but the current state refuses it (already closed, taken)."""

    default_code = "conflict"


class Invalid(DomainError):
    """The request itself is wrong: an unknown reference, a bad file, a value out of range."""

    default_code = "invalid"


class Forbidden(DomainError):
    """The sender is known but their role may not do this (a specialist cancelling after a
    reminder went out, raising a credit limit, approving their own credit)."""

    default_code = "forbidden"


class Unauthenticated(DomainError):
    """A signed request whose signature, timestamp or key does not check out."""

    default_code = "unauthorized"


class Unavailable(DomainError):
    """Something we depend on (Temporal, a store) did not answer; the same request may be
    sent again and is safe to retry."""

    default_code = "unavailable"


def not_found(what: str, ident: object) -> NotFound:
    return NotFound(f"{what} {ident} not found")


def conflict(message: str, details: Any = None) -> Conflict:
    return Conflict(message, details)


def forbidden(message: str, details: Any = None) -> Forbidden:
    return Forbidden(message, details)


def unprocessable(message: str, details: Any = None) -> Invalid:
    return Invalid(message, details)


__all__ = [
    "BadRequest",
    "Conflict",
    "DomainError",
    "Forbidden",
    "Invalid",
    "NotFound",
    "Unauthenticated",
    "Unavailable",
    "conflict",
    "forbidden",
    "not_found",
    "unprocessable",
]
