"""Input the API refuses with a 4xx and the JSON error body before it costs anything: request
bodies over their route's limit (declared or streamed, before authentication), CSV mappings
naming a codec that is not a text encoding, and visibility filters that are not values the
workflows carry (time-skipping server, SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from sqlmodel import Session, func, select

from api.routes.payments import MAX_STATEMENT_BYTES
from arflow.payments.statements.sample import Entry, camt053
from models import Customer, SavedCsvMapping, StatementImport
from tests.conftest import Harness
from tests.test_api import error_of

CHUNK = 64 * 1024
DEFAULT_MAX_BODY = 1024 * 1024  # api.limits.DEFAULT_MAX_BODY


def count(h: Harness, model: type) -> int:
    with Session(h.engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def assert_too_large(resp: httpx.Response) -> None:
    assert resp.status_code == 413, resp.text[:500]
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "too_large"
    assert "larger than" in error_of(resp)


async def test_a_declared_length_over_the_limit_is_refused_before_authentication(
    h: Harness,
) -> None:
    body = b'{"name": "' + b"x" * DEFAULT_MAX_BODY + b'"}'
    for headers in ({}, h.as_role("specialist")):
        resp = await h.http.post(
            "/v1/customers",
            content=body,
            headers=headers | {"content-type": "application/json"},
        )
        assert_too_large(resp)
    assert count(h, Customer) == 0


async def test_a_streamed_body_is_cut_off_once_it_passes_the_limit(h: Harness) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(200):  # 12.5 MiB if it were all read
            sent += 1
            yield b" " * CHUNK

    resp = await h.http.post(
        "/v1/customers",
        content=chunks(),
        headers=h.as_role("specialist") | {"content-type": "application/json"},
    )
    assert_too_large(resp)
    assert sent <= DEFAULT_MAX_BODY // CHUNK + 2  # reading stopped at the limit
    assert count(h, Customer) == 0
    # A small body in chunks still reaches the route.
    body = b'{"external_id": "C-1", "name": "Acme", "email": "ap@acme.example.com"}'

    async def small() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    resp = await h.http.post(
        "/v1/customers",
        content=small(),
        headers=h.as_role("specialist") | {"content-type": "application/json"},
    )
    assert resp.status_code == 201, resp.text


async def upload(h: Harness, content: bytes) -> httpx.Response:
    return await h.http.post(
        "/v1/bank-statements",
        files={"file": ("stmt.xml", content, "application/octet-stream")},
        headers=h.as_role("specialist"),
    )


async def test_the_statement_upload_has_its_own_larger_limit(h: Harness) -> None:
    # Over the default 1 MiB but under the statement limit: imported.
    statement = camt053([Entry(1_000, "gift", name="Somebody", tx_id="T1")])
    padded = statement.replace(b"<Stmt>", b"<Stmt>" + b" " * (DEFAULT_MAX_BODY + 100_000))
    assert len(padded) > DEFAULT_MAX_BODY
    ok = await upload(h, padded)
    assert ok.status_code == 201, ok.text
    assert ok.json()["counts"]["unmatched"] == 1
    # A body over the statement limit: refused from its Content-Length, nothing read.
    too_big = await upload(h, b" " * (MAX_STATEMENT_BYTES + 200_000))
    assert_too_large(too_big)
    # A file part one byte over the limit inside a body the envelope allows: 413 as well.
    part = await upload(h, b" " * (MAX_STATEMENT_BYTES + 1))
    assert_too_large(part)
    assert count(h, StatementImport) == 1


async def test_a_csv_mapping_encoding_must_be_a_text_encoding(h: Harness) -> None:
    columns = {"date": "D", "amount": "A", "remittance": "R", "default_currency": "EUR"}
    for codec in ("zlib_codec", "base64_codec", "rot13"):
        resp = await h.post(
            "/v1/csv-mappings", {"name": codec, "columns": columns | {"encoding": codec}}
        )
        assert resp.status_code == 422, resp.text
        assert "not a text encoding" in error_of(resp)
    assert count(h, SavedCsvMapping) == 0
    # A text codec that decodes nothing is a 422 naming the file on import, not a 500.
    saved = await h.post(
        "/v1/csv-mappings", {"name": "odd", "columns": columns | {"encoding": "undefined"}}
    )
    assert saved.status_code == 201, saved.text
    resp = await h.http.post(
        "/v1/bank-statements",
        files={"file": ("bank.csv", b"D,A,R\n2026-11-20,1.00,x\n", "text/csv")},
        data={"mapping": "odd"},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 422, resp.text
    assert "bank.csv" in error_of(resp)


async def test_visibility_filters_are_checked_and_rpc_errors_are_not_echoed(h: Harness) -> None:
    for params, field in (
        ({"stage": "x\\"}, "stage"),
        ({"stage": "x' OR WorkflowId != '"}, "stage"),
        ({"segment": "nobody\\"}, "segment"),
    ):
        resp = await h.get("/v1/invoices", source="temporal", **params)
        assert resp.status_code == 422, resp.text
        assert [d["field"] for d in resp.json()["error"]["details"]] == [field]
    # A known segment passes the check; the time-skipping server has no query-based list, so
    # Temporal's RPC error stands in for any visibility failure: 503, its text never shown.
    await h.customer(segment="key_account")
    resp = await h.get("/v1/invoices", source="temporal", segment="key_account")
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["code"] == "visibility_unavailable"
    assert "key_account" not in error["message"]
    assert "ArflowSegment" not in error["message"]
    assert error["message"] == (
        "Temporal visibility is unavailable; retry, or list with source=database"
    )
