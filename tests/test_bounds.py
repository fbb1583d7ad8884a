"""Integers beyond 32 bits in a path or query string are a 422 naming the parameter, on both
databases (the drivers raised: a 500, found by schemathesis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from arflow.config import Settings
from tests.conftest import Harness, harness

HUGE = "2426400409398781394951303306808393728"


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


@pytest.mark.parametrize(
    "url, params, field",
    [
        (f"/v1/invoices/{HUGE}", {}, "path.invoice_id"),
        (f"/v1/invoices/{2**31}", {}, "path.invoice_id"),
        (f"/v1/customers/{HUGE}", {}, "path.customer_id"),
        (f"/v1/customers/{2**64 - 1}", {}, "path.customer_id"),  # the issue's own example
        (f"/v1/customers/{HUGE}/contact-blocks", {}, "path.customer_id"),
        ("/v1/invoices", {"offset": HUGE}, "query.offset"),
        ("/v1/invoices", {"customer_id": f"-{HUGE}"}, "query.customer_id"),
        ("/v1/invoices", {"source": "temporal", "offset": HUGE}, "query.offset"),
    ],
)
async def test_an_integer_out_of_range_is_a_422_naming_it(
    h: Harness, url: str, params: dict[str, str], field: str
) -> None:
    resp = await h.get(url, **params)
    assert resp.status_code == 422, resp.text
    details = resp.json()["error"]["details"]
    assert [d["field"] for d in details] == [field]
    assert "2147483647" in details[0]["message"]


async def test_the_largest_integer_still_reaches_the_route(h: Harness) -> None:
    resp = await h.get(f"/v1/invoices/{2**31 - 1}")
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "not_found"
    page = await h.get("/v1/invoices", offset=str(2**31 - 1))
    assert page.status_code == 200, page.text
    assert page.json()["items"] == []


async def test_an_id_beyond_the_column_in_a_body_is_a_422_and_starts_nothing(h: Harness) -> None:
    # Beyond 64 bits SQLite's driver cannot even bind it (OverflowError: a 500 schemathesis
    # found with [..., 1655352557042690210194901696512]).
    for ids in ([int(HUGE[:17])], [2**31], [2**64 + 1], [5, -1473, 2**100]):
        resp = await h.post("/v1/reminders/send-now", {"invoice_ids": ids})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "invalid"
    jobs = await h.get("/v1/jobs")
    assert jobs.json() == []


@pytest.mark.parametrize(
    "path, body, field",
    [
        # schemathesis: {"invoice_id": 473423714550320594944, ...} was a 500 on SQLite.
        (
            "/v1/customers/{customer}/credit/apply",
            {"invoice_id": 2**70, "amount_minor": 100},
            "invoice_id",
        ),
        ("/v1/invoices", {"customer_id": 2**70}, "customer_id"),
        (
            "/v1/unmatched-payments/1/apply",
            {"allocations": [{"invoice_id": 2**70, "amount_minor": 1}]},
            "allocations.0.invoice_id",
        ),
        ("/v1/unmatched-payments/1/apply", {"credit_customer_id": 2**64}, "credit_customer_id"),
        ("/v1/reminders/send-now", {"filter": {"customer_id": 2**64}}, "filter.customer_id"),
    ],
)
async def test_an_id_beyond_the_column_in_any_body_is_a_422_naming_it(
    h: Harness, path: str, body: dict[str, object], field: str
) -> None:
    cust = await h.customer()
    if path == "/v1/invoices":
        body |= {"external_id": "X-1", "number": "X-1", "amount_minor": 100, "currency": "EUR"}
        body |= {"issued_on": "2026-11-01", "due_date": "2026-12-01"}
    resp = await h.post(path.format(customer=cust["id"]), body, role="admin")
    assert resp.status_code == 422, resp.text
    assert field in [d["field"] for d in resp.json()["error"]["details"]], resp.text


async def test_an_integer_the_driver_cannot_bind_is_a_422_not_a_500() -> None:
    """The net behind the request models' bounds: SQLite's driver raising OverflowError for
    an integer beyond 64 bits answers 422 with the JSON error body."""
    app = create_app(Settings(environment="test"))

    @app.get("/overflow")
    def overflow() -> None:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as http:
        resp = await http.get("/overflow")
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid"
