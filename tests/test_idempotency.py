"""Idempotency keys kept in our database (``idempotency_keys``): the same key with the same
request answers the first response again, with another request a 422; keys are per caller,
at most 255 characters, outlive the workflow's run, and two requests racing with one key
apply it once (time-skipping server, SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.idempotency import IdempotentRoute, takes_key
from arflow import idempotency
from arflow.config import Settings
from arflow.idempotency import Outcome
from models import Dispute, IdempotencyRecord, Promise
from models.types import utcnow
from tests.conftest import STALL, Harness, harness, longest_loop_stall
from tests.test_actions import new_case
from tests.test_api import error_of
from tests.test_payments import paid, status_becomes

REPLAYED = "Idempotent-Replayed"


async def test_a_keyed_change_leaves_the_event_loop_free_while_it_writes(h: Harness) -> None:
    """The key's row and the command's row are written in threads: on the event loop a write
    waiting for SQLite's lock stopped every other request of the process (the schemathesis
    run saw action requests still waiting after 20 s). Those inserts are made slow here; a
    ticker on the loop must not notice."""
    c = await new_case(h)
    act = asyncio.ensure_future(
        c.act("/disputes", {"reason": "wrong amount"}, **{"Idempotency-Key": "k-loop"})
    )
    slow = (
        "INSERT INTO IDEMPOTENCY_KEYS",
        "INSERT INTO INVOICE_COMMANDS",
        "UPDATE IDEMPOTENCY_KEYS",
    )
    stall = await longest_loop_stall(h.engine, slow, act)
    assert act.result().status_code == 200, act.result().text
    assert c.kinds().count("dispute_opened") == 1
    assert stall < STALL / 2, f"the event loop stood still for {stall:.2f} s"


def notes(h: Harness, invoice_id: int) -> list[str]:
    return [str(e.data.get("text")) for e in h.events(invoice_id) if e.kind == "note"]


async def test_the_same_key_and_request_replays_the_first_response(h: Harness) -> None:
    c = await new_case(h)
    first = await c.act("/disputes", {"reason": "wrong amount"}, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    assert REPLAYED not in first.headers
    again = await c.act("/disputes", {"reason": "wrong amount"}, **{"Idempotency-Key": "k-1"})
    assert again.status_code == 200, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    assert c.kinds().count("dispute_opened") == 1
    with Session(h.engine) as s:
        row = s.exec(select(IdempotencyRecord)).one()
    assert (row.operation, row.resource, row.key, row.status) == (
        "open_dispute",
        f"/v1/invoices/{c.id}/disputes",
        "k-1",
        200,
    )
    assert len(row.principal) == 64  # a hash of the API key, never the key itself
    assert "test-specialist" not in row.principal


async def test_the_same_key_with_another_request_is_a_422_and_applies_nothing(
    h: Harness,
) -> None:
    c = await new_case(h)
    key = {"Idempotency-Key": "k-2"}
    first = await c.act("/notes", {"text": "called, will pay Friday"}, **key)
    assert first.status_code == 201, first.text
    other = await c.act("/notes", {"text": "called, will pay Monday"}, **key)
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert "Idempotency-Key" in error_of(other)
    assert notes(h, c.id) == ["called, will pay Friday"]


async def test_keys_are_per_caller(h: Harness) -> None:
    c = await new_case(h)
    body = {"text": "left a voicemail"}
    mine = await c.act("/notes", body, role="specialist", **{"Idempotency-Key": "shared"})
    theirs = await c.act("/notes", body, role="admin", **{"Idempotency-Key": "shared"})
    assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
    assert REPLAYED not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert notes(h, c.id) == ["left a voicemail", "left a voicemail"]


@pytest.fixture
async def h_any(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The harness on both databases (PostgreSQL enforces column lengths, SQLite does not)."""
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


async def test_a_key_of_255_characters_is_taken_and_256_is_a_422_naming_the_header(
    h_any: Harness,
) -> None:
    # A note's dedupe key is 120 characters: "note:" + a 200-character key overflowed it
    # (a 500 on PostgreSQL). The domain now gets the key scoped and hashed to a fixed length.
    h = h_any
    c = await new_case(h)
    longest = "k" * 255
    ok = await c.act("/notes", {"text": "long key"}, **{"Idempotency-Key": longest})
    assert ok.status_code == 201, ok.text
    again = await c.act("/notes", {"text": "long key"}, **{"Idempotency-Key": longest})
    assert (again.status_code, again.headers.get(REPLAYED)) == (201, "true")
    paused = await c.act("/pause", {"reason": "long key"}, **{"Idempotency-Key": longest})
    assert paused.status_code == 200, paused.text
    too_long = await c.act("/notes", {"text": "x"}, **{"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 422, too_long.text
    assert [d["field"] for d in too_long.json()["error"]["details"]] == ["header.Idempotency-Key"]
    assert notes(h, c.id) == ["long key"]


async def test_a_key_outlives_the_workflow_run(h: Harness) -> None:
    """The key is in our database, not in one run's update ids: after the invoice's workflow
    starts a new run (here a chargeback reopening it; continue-as-new alike), the retry is
    answered with the first response and the promise is not made twice."""
    c = await new_case(h)
    key = {"Idempotency-Key": "k-3"}
    promise = {"promised_date": (c.due + timedelta(days=5)).isoformat(), "amount_minor": 120_000}
    first = await c.act("/promise", promise, **key)
    assert first.status_code == 200, first.text
    await paid(c, 120_000)
    await status_becomes(c, "paid")
    assert (await paid(c, 120_000, type="chargeback"))["status"] == "reopened"
    await status_becomes(c, "open")
    again = await c.act("/promise", promise, **key)
    assert (again.status_code, again.headers.get(REPLAYED)) == (200, "true"), again.text
    assert again.json() == first.json()
    with Session(h.engine) as s:
        assert len(s.exec(select(Promise).where(Promise.invoice_id == c.id)).all()) == 1


async def test_racing_requests_with_one_key_apply_it_once(h: Harness) -> None:
    c = await new_case(h)
    key = {"Idempotency-Key": "k-race"}
    answers = await asyncio.gather(
        *(c.act("/disputes", {"reason": "double click"}, **key) for _ in range(4))
    )
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 409}, [a.text for a in answers]
    assert codes.count(200) >= 1
    assert [a.headers.get(REPLAYED) for a in answers if a.status_code == 200].count(None) == 1
    for a in answers:
        if a.status_code == 409:
            assert a.json()["error"]["code"] == "in_progress"
    with Session(h.engine) as s:
        assert len(s.exec(select(Dispute).where(Dispute.invoice_id == c.id)).all()) == 1
    assert c.kinds().count("dispute_opened") == 1
    notes_at_once = await asyncio.gather(
        *(c.act("/notes", {"text": "once"}, **{"Idempotency-Key": "n-race"}) for _ in range(4))
    )
    assert {a.status_code for a in notes_at_once} <= {201, 409}
    assert notes(h, c.id) == ["once"]


async def test_a_failed_request_releases_its_key(h: Harness) -> None:
    c = await new_case(h)
    key = {"Idempotency-Key": "k-4"}
    refused = await c.act("/promise", {"promised_date": "2000-01-01", "amount_minor": 1_000}, **key)
    assert refused.status_code == 422, refused.text
    with Session(h.engine) as s:
        assert s.exec(select(IdempotencyRecord)).all() == []
    denied = await c.act("/write-off", {"reason": "x"}, **key)  # a specialist: 403
    assert denied.status_code == 403


def test_every_route_that_takes_the_key_keeps_its_first_response() -> None:
    app = create_app(Settings(environment="test"))
    keyed: list[Any] = [
        r
        for r in iter_route_contexts(app.routes)
        if isinstance(r.original_route, APIRoute) and takes_key(r.original_route.dependant)
    ]
    assert len(keyed) >= 12
    missed = [r.path for r in keyed if not isinstance(r.original_route, IdempotentRoute)]
    assert missed == []


def test_a_claim_left_by_a_dead_request_can_be_taken_over(sqlite_engine: Engine) -> None:
    """A process killed mid-request leaves its claim unanswered: after ``STALE_AFTER`` the
    next request with the key runs (once), before that it is told to wait."""
    args = ("p" * 64, "pause", "/v1/invoices/1/pause", "k", "h" * 64)
    with Session(sqlite_engine) as s:
        first = idempotency.claim(s, *args)
        assert first.outcome == Outcome.claimed and first.record_id is not None
        assert idempotency.claim(s, *args).outcome == Outcome.in_progress
        row = s.get(IdempotencyRecord, first.record_id)
        assert row is not None
        row.created_at = utcnow() - idempotency.STALE_AFTER - timedelta(seconds=1)
        s.add(row)
        s.commit()
        taken = idempotency.claim(s, *args)
        assert (taken.outcome, taken.record_id) == (Outcome.claimed, first.record_id)
        assert idempotency.claim(s, *args).outcome == Outcome.in_progress
        idempotency.complete(s, first.record_id, 200, '{"ok": true}')
        replay = idempotency.claim(s, *args)
        assert (replay.outcome, replay.status, replay.body) == (
            Outcome.replay,
            200,
            '{"ok": true}',
        )
        assert idempotency.claim(s, *args[:4], "other").outcome == Outcome.mismatch
