"""Domain errors turned into Temporal failures, in one place for every activity."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.exceptions import ApplicationError

from arflow.errors import DomainError, NotFound


@contextmanager
def final_on(error: type[DomainError], kind: str | None = None) -> Iterator[None]:
    """An ``error`` raised inside will not go away on a retry: fail the activity for good,
    with the error's message and ``kind`` as the failure's type."""
    try:
        yield
    except error as exc:
        raise ApplicationError(exc.message, type=kind, non_retryable=True) from exc


@contextmanager
def not_found_is_final() -> Iterator[None]:
    """A row that does not exist will not appear on a retry: fail the activity for good."""
    with final_on(NotFound):
        yield
