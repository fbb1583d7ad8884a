"""A change sent to an invoice's workflow while no worker answers (stopped, or too busy) gets
a 503 after ``update_wait_seconds``, not a request held open for as long as the client
waits (the schemathesis run saw action requests still waiting after 10 s on a loaded
machine). Temporal keeps an accepted update, so the change may still be applied: the same
request with the same Idempotency-Key then learns its outcome, and it is applied once."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from activities.worker import build_worker
from tests.conftest import harness

WAIT = 1.0


async def test_a_change_no_worker_answers_is_a_503_then_applied_once(
    dev_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    async with harness(dev_env, engine, tmp_path, with_worker=False, update_wait_seconds=WAIT) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"])
        headers = h.as_role("specialist") | {"Idempotency-Key": "pause-1"}
        path = f"/v1/invoices/{inv['id']}/pause"

        started = time.monotonic()
        resp = await h.http.post(path, json={"reason": "customer on holiday"}, headers=headers)
        waited = time.monotonic() - started

        assert resp.status_code == 503, resp.text
        error = resp.json()["error"]
        assert error["code"] == "workflow_busy", error
        assert "Idempotency-Key" in error["message"]
        assert int(resp.headers["Retry-After"]) > 0
        assert WAIT <= waited < WAIT + 5, waited

        async with build_worker(h.client, h.settings, h.engine):
            again = await h.http.post(path, json={"reason": "customer on holiday"}, headers=headers)
            assert again.status_code == 200, again.text
            assert again.json()["hold"] == "paused", again.json()
        pauses = [e for e in h.events(inv["id"]) if e.kind == "paused"]
        assert len(pauses) == 1, [e.kind for e in h.events(inv["id"])]
