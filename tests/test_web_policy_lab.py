"""The dashboard's Policy lab (/app/policy-lab, admins): the form filled from a stored policy,
step rows added and removed, refused values shown on the page again (never a 500), an inline
run with its totals and weekly chart, its CSV, and a large window run as a job whose progress
page ends with the job's totals (time-skipping server and a worker for that one)."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from api import web_policy_lab
from bench.simulate_10k import Seeded, seed
from tests.conftest import harness
from tests.test_web import Web, web

__all__ = ["web"]  # the fixture, shared with tests/test_web.py
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def seeded(engine: Engine, n: int = 30) -> Seeded:
    return seed(engine, n, 5, today=date(2026, 11, 30), rng=random.Random(9))


async def lab_form(web: Web) -> tuple[str, dict[str, Any]]:
    """The page's form as a browser would send it unchanged: (csrf token, fields)."""
    page = await web.http.get("/app/policy-lab")
    assert page.status_code == 200, page.text
    token = CSRF.search(page.text)
    assert token
    fields: dict[str, Any] = {
        "csrf_token": token[1],
        "base": re.search(r'name="base" value="(\d+)"', page.text)[1],  # type: ignore[index]
    }
    for name in ("key", "offset"):
        fields[name] = re.findall(rf'name="{name}" value="([^"]*)"', page.text)
    for name in ("channel", "template"):
        selects = re.findall(rf'<select name="{name}"[^>]*>(.*?)</select>', page.text, re.S)
        fields[name] = [re.search(r'<option value="([^"]+)" selected', s)[1] for s in selects]  # type: ignore[index]
    for name in (
        "send_at",
        "escalate_after",
        "contact_window",
        "max_messages_per_day",
        "max_calls_per_week",
        "issued_from",
        "issued_to",
    ):
        found = re.search(rf'name="{name}" value="([^"]*)"', page.text)
        fields[name] = found[1] if found else ""
    return token[1], fields


def window(data: Seeded) -> dict[str, str]:
    return {"issued_from": data.issued_from.isoformat(), "issued_to": data.issued_to.isoformat()}


async def test_the_lab_is_for_admins_and_linked_for_them(web: Web) -> None:
    assert (await web.http.get("/app/policy-lab")).status_code == 303  # a login first
    await web.login("specialist")
    refused = await web.http.get("/app/policy-lab")
    assert refused.status_code == 403 and "needs the admin role" in refused.text
    assert 'href="/app/policy-lab"' not in (await web.http.get("/app")).text
    web.http.cookies.clear()  # signed out
    await web.login("admin")
    assert 'href="/app/policy-lab"' in (await web.http.get("/app")).text
    page = await web.http.get("/app/policy-lab")
    assert page.status_code == 200
    assert 'value="before_due"' in page.text and 'value="final_notice"' in page.text  # default
    assert 'href="/app/policy-lab" class="active"' in page.text


async def test_rows_are_added_and_removed_and_bad_values_come_back_with_the_message(
    web: Web,
) -> None:
    await web.login("admin")
    _, fields = await lab_form(web)
    assert len(fields["key"]) == 5
    added = await web.http.post("/app/policy-lab", data=fields | {"op": "add"})
    assert added.status_code == 200
    assert added.text.count('name="key"') == 6
    removed = await web.http.post("/app/policy-lab", data=fields | {"op": "remove-1"})
    assert removed.text.count('name="key"') == 4
    assert 'value="first_late_day"' not in removed.text
    bad_cases = {
        "offset": (fields | {"offset": ["-P3D", "soon", "P7D", "P14D", "P30D"]}, "offset"),
        "order": (fields | {"offset": ["P9D", "P1D", "P7D", "P14D", "P30D"]}, "ordered"),
        "window": (fields | {"contact_window": "25:00-26:00"}, "contact window"),
        "cap": (fields | {"max_messages_per_day": "-1"}, "max messages per day"),
        "date": (fields | {"issued_from": "yesterday"}, "issued from"),
        "base": (fields | {"base": "999999"}, "no policy"),
        "no steps": (fields | {"key": [], "offset": [], "channel": [], "template": []}, "step"),
        "channel": (fields | {"channel": ["pigeon"] * 5}, "channel"),
        "empty": (fields | {"issued_from": "2001-01-01", "issued_to": "2001-01-02"}, "no invoice"),
    }
    for name, (data, words) in bad_cases.items():
        resp = await web.http.post("/app/policy-lab", data=data | {"op": "run"})
        assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text[-500:])
        error = re.search(r'<p class="error" role="alert" id="lab-error">(.*?)</p>', resp.text)
        assert error and words in error[1], (name, error and error[1])
        assert 'id="lab-form"' in resp.text  # the form again, as typed
    # A form without its CSRF token is refused.
    stale = await web.http.post("/app/policy-lab", data=fields | {"csrf_token": "x", "op": "run"})
    assert stale.status_code == 403


async def test_an_inline_run_shows_totals_a_weekly_chart_and_the_csv(web: Web) -> None:
    data = seeded(web.engine)
    await web.login("admin")
    _, fields = await lab_form(web)
    fields |= window(data) | {"contact_window": "09:00-17:00", "max_messages_per_day": "1"}
    fields["channel"] = ["email", "sms", "email", "email", "letter"]
    resp = await web.http.post("/app/policy-lab", data=fields | {"op": "run"})
    assert resp.status_code == 200, resp.text[-800:]
    assert 'id="lab-result"' in resp.text
    channels = re.search(r'<table class="compact" id="lab-channels">(.*?)</table>', resp.text, re.S)
    assert channels is not None
    rows = re.findall(
        r"<tr><td>(\w+)</td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)", channels[1]
    )
    by_channel = {c: (int(d), int(r)) for c, d, r in rows}
    assert set(by_channel) >= {"email", "sms", "letter"}
    assert by_channel["sms"][0] > 0 and by_channel["sms"][1] == 0  # the draft's, never sent
    assert by_channel["email"][1] > 0  # the default policy really sent emails
    assert 'aria-label="messages per ISO week: draft and really sent"' in resp.text
    assert "really sent</span>" in resp.text  # the chart's legend
    assert "30 invoices" in resp.text
    # The per-invoice CSV of the same form.
    download = await web.http.post("/app/policy-lab/result.csv", data=fields)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(download.text)))
    assert len(table) == 30 and sum(int(r["sends_sms"]) for r in table) == by_channel["sms"][0]
    # A refused value on the CSV button is the page again with the message.
    bad = await web.http.post("/app/policy-lab/result.csv", data=fields | {"issued_to": "x"})
    assert bad.status_code == 422 and 'id="lab-error"' in bad.text


async def test_a_large_window_runs_as_a_job_with_progress(
    ts_env: WorkflowEnvironment,
    sqlite_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web_policy_lab, "INLINE_MAX", 10)
    async with harness(ts_env, sqlite_engine, tmp_path, session_secret="lab-secret") as h:
        data = seeded(h.engine, 25)
        web = Web(http=h.http, engine=h.engine, invoice_id=0)
        await web.login("admin")
        _, fields = await lab_form(web)
        resp = await web.http.post("/app/policy-lab", data=fields | window(data) | {"op": "run"})
        assert resp.status_code == 202, resp.text[-800:]
        job_id = int(re.search(r"Simulation job (\d+)", resp.text)[1])  # type: ignore[index]
        assert f'hx-get="/app/policy-lab/jobs/{job_id}"' in resp.text  # it refreshes
        for _ in range(200):
            part = await web.http.get(
                f"/app/policy-lab/jobs/{job_id}", headers={"HX-Request": "true"}
            )
            if "status-done" in part.text:
                break
            await asyncio.sleep(0.05)
        assert part.status_code == 200 and "<html" not in part.text
        assert "25 of 25 invoices simulated" in part.text
        assert "hx-trigger" not in part.text  # done: no more polling
        assert 'id="lab-channels"' in part.text and "<svg" in part.text
        link = f"/app/policy-lab/jobs/{job_id}/result.csv"
        assert f'href="{link}"' in part.text
        download = await web.http.get(link)
        assert download.status_code == 200 and len(download.text.splitlines()) == 26
        page = await web.http.get(f"/app/policy-lab/jobs/{job_id}")
        assert page.status_code == 200 and "<h1>Policy lab: simulation job" in page.text
        moved = await web.http.get(f"/app/jobs/{job_id}")  # the bulk jobs' page sends it here
        assert (moved.status_code, moved.headers["location"]) == (
            303,
            f"/app/policy-lab/jobs/{job_id}",
        )
        missing = await web.http.get("/app/policy-lab/jobs/424242")
        assert missing.status_code == 404 and "not found" in missing.text
