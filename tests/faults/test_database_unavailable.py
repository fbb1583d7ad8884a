"""The database not answering is a 503 with the JSON error body and Retry-After (the request
is safe to send again), never a 500. No server needed: the engine points at a closed port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from arflow.config import Settings
from arflow.db import make_engine
from arflow.ports import free_port
from tests.conftest import API_KEYS, WEBHOOK_SECRET


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"
    settings = Settings(
        environment="test",
        database_url=url,
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
    )
    engine = make_engine(url)
    # A Temporal client that never connects: the database is what fails here.
    temporal = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    app = create_app(settings, engine=engine, temporal=temporal)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as client:
        yield client
    engine.dispose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/invoices", None),
        ("GET", "/v1/invoices/1", None),
        ("POST", "/v1/customers", {"external_id": "C-1", "name": "Acme GmbH"}),
    ],
)
async def test_database_down_is_503_with_the_json_error_body(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, str] | None
) -> None:
    headers = {"Authorization": f"Bearer {API_KEYS['admin']}"}
    resp = await http.request(method, path, json=body, headers=headers)
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "unavailable"
    assert int(resp.headers["Retry-After"]) > 0
