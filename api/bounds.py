"""Integers in paths and query strings stay within what the databases store.

Path and query integers are ids, offsets, limits and counts (money travels in bodies, whose
models bound it). Ids are 32-bit ``INTEGER`` columns on PostgreSQL and SQLite's driver takes
at most 64 bits: a larger id or offset made the driver raise (``OverflowError`` on SQLite,
``NumericValueOutOfRange`` on PostgreSQL: a 500, found by schemathesis). This app-wide
dependency checks every integer path and query parameter of the matched route against the
32-bit range first and answers 422 naming the parameter, as a validation error would. It adds
nothing to the OpenAPI document (it reads the request only), so the published contract is
unchanged.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

LARGEST = 2**31 - 1
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def _is_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, Annotated, list):
        return any(_is_int(arg) for arg in get_args(annotation))
    return False


def _integer_params(dependant: Dependant) -> Iterator[tuple[str, str]]:
    """(where, name) of every integer path or query parameter, nested dependencies too."""
    for where, params in (("path", dependant.path_params), ("query", dependant.query_params)):
        for field in params:
            if _is_int(field.field_info.annotation):
                yield where, field.alias
    for sub in dependant.dependencies:
        yield from _integer_params(sub)


_CACHED = "_arflow_integer_params"


def _route_integer_params(route: Any) -> tuple[tuple[str, str], ...]:
    """The integer parameters of one route, found once per route (not on every request) and
    kept on the route object itself (routes compare by value and do not hash)."""
    found: tuple[tuple[str, str], ...] | None = getattr(route, _CACHED, None)
    if found is None:
        dependant = getattr(route, "dependant", None)
        found = tuple(_integer_params(dependant)) if dependant is not None else ()
        setattr(route, _CACHED, found)
    return found


def bounded_integers(request: Request) -> None:
    """422 for an integer path or query parameter outside the signed 32-bit range."""
    route = request.scope.get("route")
    errors = []
    for where, name in _route_integer_params(route) if route is not None else ():
        source = request.path_params if where == "path" else request.query_params
        values = [source[name]] if where == "path" else request.query_params.getlist(name)
        for value in values if name in source else []:
            if _INTEGER.fullmatch(str(value)) and not -LARGEST - 1 <= int(value) <= LARGEST:
                errors.append(
                    {
                        "loc": (where, name),
                        "msg": f"must be between {-LARGEST - 1} and {LARGEST}",
                        "type": "out_of_range",
                    }
                )
    if errors:
        raise RequestValidationError(errors)
