"""The API's contract holds: every operation and schema of the saved OpenAPI document
(``tests/data/openapi-baseline.json``, taken before the domain layer moved the code) is still
served unchanged. New operations and schemas may be added; a change that alters or removes one
is a breaking change for API clients and must update the baseline on purpose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from arflow.config import Settings

BASELINE = Path(__file__).parent / "data" / "openapi-baseline.json"


@pytest.fixture(scope="module")
def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    current = create_app(Settings(environment="test")).openapi()
    # Round-trip through JSON so tuples and the like compare as the saved file does.
    return json.loads(BASELINE.read_text()), json.loads(json.dumps(current))


def test_every_saved_operation_is_served_unchanged(
    documents: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    saved, current = documents
    assert saved["paths"], "the baseline has no operations"
    changed = []
    for path, methods in saved["paths"].items():
        for method, operation in methods.items():
            now = current["paths"].get(path, {}).get(method)
            if now != operation:
                changed.append(
                    f"{method.upper()} {path}: {'removed' if now is None else 'changed'}"
                )
    assert not changed, changed


def test_every_saved_schema_is_unchanged(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    saved, current = documents
    schemas = current["components"]["schemas"]
    changed = [
        name
        for name, schema in saved["components"]["schemas"].items()
        if schemas.get(name) != schema
    ]
    assert not changed, changed
