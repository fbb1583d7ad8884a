"""JSON error bodies for every 4xx: ``{"error": {"code", "message", "details"?}}``.

The one place where the domain's errors (``arflow.errors``) become HTTP status codes; routes
raise ``ApiError`` only for what is HTTP's own (a body too large, a missing header)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from arflow.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    Unauthenticated,
    Unavailable,
    conflict,
    not_found,
    unprocessable,
)

log = logging.getLogger("arflow.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


#: The HTTP status of each domain error (the most specific class wins).
STATUS: dict[type[DomainError], int] = {
    BadRequest: 400,
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    Unavailable: 503,
}


#: Seconds a client is told to wait before sending a 503'd request again.
RETRY_AFTER_SECONDS = 5


def database_unavailable(exc: BaseException) -> bool:
    """The database did not answer (down, restarting, its connection cut, the pool full), as
    opposed to refusing a statement: the same request may succeed when sent again."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def status_of(exc: DomainError | ApiError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON error body every 4xx and 5xx carries (middleware answering early uses it too)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


def _describe(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        msg = str(e.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        out.append({"field": ".".join(loc) or "body", "message": msg})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        status = status_of(exc)
        headers = None
        if status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        if status == 503:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        body = error_body(exc.code, exc.message, exc.details)
        return JSONResponse(body, status_code=status, headers=headers)

    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL restarting or unreachable: nothing was stored (the transaction did not
        # commit), so the client may send the same request again. The pool's pre-ping replaces
        # the dead connections once it is back.
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            str(getattr(exc, "orig", None) or exc).splitlines()[0],
        )
        return JSONResponse(
            error_body("unavailable", "the database is not answering; try again shortly"),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    for cls in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(cls, _database_down)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _describe(list(exc.errors()))
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return JSONResponse(error_body("invalid", summary, details), status_code=422)

    @app.exception_handler(DataError)
    async def _out_of_range(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the request carried (an id beyond its INTEGER column,
        # say): the request is wrong, and its transaction is rolled back with the session.
        log.warning(
            "database refused a value on %s %s: %s", request.method, request.url.path, exc.orig
        )
        message = "a value in the request is out of range for this field"
        return JSONResponse(error_body("invalid", message), status_code=422)

    @app.exception_handler(OverflowError)
    async def _too_large_to_bind(request: Request, exc: OverflowError) -> JSONResponse:
        # SQLite's driver cannot bind an integer beyond 64 bits. Request models bound every id
        # and amount; this is the net for one that slips through (a 500 otherwise).
        log.warning("a value too large on %s %s: %s", request.method, request.url.path, exc)
        message = "a number in the request is too large for this field"
        return JSONResponse(error_body("invalid", message), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
            429: "too_many_attempts",
        }
        return JSONResponse(
            error_body(code.get(exc.status_code, "error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):  # raised in a middleware, or a dropped connection
            return await _database_down(request, exc)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal error"), status_code=500)


__all__ = [
    "ApiError",
    "DomainError",
    "HTTPException",
    "conflict",
    "database_unavailable",
    "error_body",
    "install",
    "not_found",
    "status_of",
    "unprocessable",
]
