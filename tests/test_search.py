"""Typed search attributes on the dev server (which registers them as `arflow run` does), and
listing invoices through Temporal visibility."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import Harness, harness
from tests.webhook import signed_payment
from workflows.search import SEGMENT, STAGE, STATUS

pytestmark = pytest.mark.devserver


async def listed(h: Harness, **params: str) -> list[int]:
    resp = await h.get("/v1/invoices", source="temporal", **params)
    assert resp.status_code == 200, resp.text
    return sorted(i["id"] for i in resp.json()["items"])


async def until_listed(h: Harness, expected: list[int], **params: str) -> list[int]:
    found: list[int] = []
    for _ in range(100):  # visibility is eventually consistent
        found = await listed(h, **params)
        if found == expected:
            break
        await asyncio.sleep(0.1)
    return found


async def test_workflows_carry_status_stage_segment_and_can_be_listed(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(dev_env, sqlite_engine, tmp_path) as h:
        key = await h.customer(segment="key_account")
        std = await h.customer()
        a = await h.invoice(key["id"], amount_minor=1_000)
        b = await h.invoice(std["id"], amount_minor=2_000)
        c = await h.invoice(std["id"], amount_minor=3_000)
        assert h.settings.search_attributes == "on"  # found registered on the dev server
        assert (await signed_payment(h, invoice_id=c["id"], amount_minor=3_000)).status_code == 200

        assert await until_listed(h, [c["id"]], status="paid") == [c["id"]]
        assert await until_listed(h, [a["id"]], status="open", segment="key_account") == [a["id"]]
        assert await until_listed(h, [a["id"], b["id"]], status="open") == [a["id"], b["id"]]
        # The database answers the same filters.
        db = (await h.get("/v1/invoices", segment="key_account")).json()["items"]
        assert [i["id"] for i in db] == [a["id"]]

        described = await h.client.get_workflow_handle(c["workflow_id"]).describe()
        attrs = described.typed_search_attributes
        assert (attrs.get(STATUS), attrs.get(STAGE), attrs.get(SEGMENT)) == ("paid", "", "standard")
