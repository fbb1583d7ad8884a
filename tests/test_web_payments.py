"""The dashboard's Payments page (/app/payments): statement upload with its report, the
unmatched queue's apply and dismiss forms, customer credit; each through the same domain
call as the JSON route (the time-skipping server and a worker deliver the payments)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import FilePayload, Page, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select
from temporalio.testing import WorkflowEnvironment

from api.routes.payments import MAX_STATEMENT_BYTES
from arflow.payments.statements.sample import Entry, camt053
from models import Payment, ReceivedLine, StatementImport
from models.reference import payment_reference
from tests.conftest import API_KEYS, Harness, harness
from tests.test_web import Live, chromium_path, live, page
from tests.test_web_actions import _login

__all__ = ["chromium_path", "live", "page"]  # the browser fixtures of tests/test_web.py


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


def rows(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


async def upload(
    h: Harness, headers: dict[str, str], content: bytes, name: str = "stmt.xml", **form: str
) -> Any:
    return await h.http.post(
        "/app/payments/statements",
        files={"file": (name, content, "application/octet-stream")},
        data=form,
        headers=headers,
    )


async def status_of(h: Harness, invoice_id: int, wanted: str) -> str:
    status = ""
    for _ in range(100):
        status = str((await h.get(f"/v1/invoices/{invoice_id}")).json()["status"])
        if status == wanted:
            break
        await asyncio.sleep(0.05)
    return status


def unmatched_ids(h: Harness) -> list[int]:
    with Session(h.engine) as s:
        found = s.exec(select(ReceivedLine.id).where(ReceivedLine.status == "unmatched")).all()
        return [i for i in found if i is not None]


async def test_upload_reports_each_line_and_an_applied_line_pays_its_invoice(h: Harness) -> None:
    acme = await h.customer(name="Acme GmbH")
    ref = await h.invoice(acme["id"], amount_minor=10_000)
    loose = await h.invoice(acme["id"], amount_minor=7_000, number="AC-77")
    headers = await _login(h, "specialist")
    statement = camt053(
        [
            Entry(10_000, ref=payment_reference(ref["id"]), tx_id="T1"),
            Entry(9_000, "thanks", name="Somebody Else", tx_id="T2"),
            Entry(-50_000, "office rent", tx_id="T3"),
            Entry(10_000, ref=payment_reference(ref["id"]), tx_id="T1"),
        ]
    )
    resp = await upload(h, headers, statement)
    assert resp.status_code == 201, resp.text
    counts = dict(re.findall(r'<dd id="count-(\w+)">(\d+)</dd>', resp.text))
    assert counts == {
        "lines": "4",
        "matched": "1",
        "unmatched": "1",
        "duplicate": "1",
        "ignored": "1",
        "rejected": "0",
    }
    report = resp.text.split('id="import-lines"', 1)[1].split("</table>", 1)[0]
    outcomes = re.findall(r'class="outcome-(\w+)"', report)
    assert outcomes == ["matched", "unmatched", "ignored", "duplicate"]
    assert f'href="/app/invoices/{ref["id"]}"' in report and "€90.00" in report
    assert 'id="import-accounts"' in resp.text
    # The queue, the imports list and the credit list are swapped in as well.
    assert 'id="unmatched" hx-swap-oob="true"' in resp.text
    assert "1 waiting for a specialist" in resp.text
    assert await status_of(h, ref["id"], "paid") == "paid"

    page = await h.http.get("/app/payments")
    assert page.status_code == 200
    assert "stmt.xml" in page.text and "UTC" in page.text  # the recent imports, times in UTC
    [line_id] = unmatched_ids(h)
    assert f'id="line-{line_id}"' in page.text and "Somebody Else" in page.text

    # Bad input in the apply form: shown next to it, nothing stored.
    path = f"/app/payments/lines/{line_id}/apply"
    for form, status, message in (
        ({"form": "apply", "other_invoice": "AC-77", "other_amount": "95.00"}, 422, "more than"),
        ({"form": "apply", "other_invoice": "AC-77", "other_amount": "9.001"}, 422, "EUR allows"),
        ({"form": "apply", "other_invoice": "nope", "other_amount": "90.00"}, 422, "unknown"),
        ({"form": "apply"}, 422, "give an amount"),
        ({"form": "apply", "other_invoice": "AC-77", "other_amount": "60.00"}, 422, "credit"),
    ):
        bad = await h.http.post(path, data=form, headers=headers)
        assert bad.status_code == status, (form, bad.text)
        assert 'role="alert"' in bad.text and message in bad.text, (form, bad.text)
        assert f'id="line-{line_id}"' in bad.text and 'value="' + form.get("other_amount", "")
    assert unmatched_ids(h) == [line_id]
    assert rows(h.engine, Payment) == 1

    # Split: 70.00 to AC-77, the rest to Acme's credit.
    ok = await h.http.post(
        path,
        data={
            "form": "apply",
            "other_invoice": "AC-77",
            "other_amount": "70.00",
            "credit_customer_id": str(acme["id"]),
            "note": "paid for AC-77",
        },
        headers=headers,
    )
    assert ok.status_code == 200, ok.text
    assert "applied" in ok.text and "It has left the queue." in ok.text
    assert ok.headers["HX-Trigger"] == "paymentsChanged"
    assert unmatched_ids(h) == []
    assert await status_of(h, loose["id"], "paid") == "paid"
    invoice_page = await h.http.get(f"/app/invoices/{loose['id']}")
    assert re.search(r'id="invoice-status">paid<', invoice_page.text)
    again = await h.http.post(path, data={"form": "apply"}, headers=headers)
    assert again.status_code == 409 and "is already applied" in again.text

    # The rest is Acme's credit; it pays another invoice from the credit list.
    other = await h.invoice(acme["id"], amount_minor=5_000, number="AC-78")
    credit = await h.http.get("/app/payments/credit", headers=headers)
    assert "€20.00" in credit.text and "Acme GmbH" in credit.text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', credit.text)
    assert key
    form = {"currency": "EUR", "idempotency_key": key[1], "invoice_id": str(other["id"])}
    too_much = await h.http.post(
        f"/app/payments/credit/{acme['id']}/apply", data=form | {"amount": "30.00"}, headers=headers
    )
    assert too_much.status_code == 409 and 'role="alert"' in too_much.text
    used = await h.http.post(
        f"/app/payments/credit/{acme['id']}/apply", data=form | {"amount": "20.00"}, headers=headers
    )
    assert used.status_code == 200, used.text
    assert "€20.00 of credit paid to invoice AC-78" in used.text
    assert "No customer has credit." in used.text
    twice = await h.http.post(  # a double click: the same key uses the credit once
        f"/app/payments/credit/{acme['id']}/apply", data=form | {"amount": "20.00"}, headers=headers
    )
    assert twice.status_code == 200
    credit_api = (await h.get(f"/v1/customers/{acme['id']}/credit")).json()
    assert credit_api["balances"] == {}
    assert [e["kind"] for e in credit_api["entries"]] == ["unallocated", "applied"]


async def test_dismiss_takes_a_line_out_of_the_queue_with_its_reason(h: Harness) -> None:
    headers = await _login(h, "specialist")
    resp = await upload(h, headers, camt053([Entry(4_200, "??", name="Stranger", tx_id="D1")]))
    assert resp.status_code == 201, resp.text
    [line_id] = unmatched_ids(h)
    path = f"/app/payments/lines/{line_id}/dismiss"
    empty = await h.http.post(path, data={"form": "dismiss", "note": " "}, headers=headers)
    assert empty.status_code == 422 and 'role="alert"' in empty.text and "note" in empty.text
    assert unmatched_ids(h) == [line_id]
    done = await h.http.post(
        path, data={"form": "dismiss", "note": "sent back to the payer"}, headers=headers
    )
    assert done.status_code == 200, done.text
    assert "is dismissed: sent back to the payer" in done.text
    assert unmatched_ids(h) == []
    listed = (await h.get("/v1/unmatched-payments", status="dismissed")).json()["items"]
    assert [(i["id"], i["note"]) for i in listed] == [(line_id, "sent back to the payer")]
    page = await h.http.get("/app/payments")
    assert "No receipt waits" in page.text
    unknown = await h.http.post(
        "/app/payments/lines/99999/dismiss", data={"note": "x"}, headers=headers
    )
    assert unknown.status_code == 404


async def test_a_bad_file_is_shown_in_the_form_and_nothing_is_stored(h: Harness) -> None:
    headers = await _login(h, "specialist")
    for content, name, form, message in (
        (b"\x00\x01 this is not a statement", "junk.bin", {}, "junk.bin"),
        (b"date;amount\n2026-11-01;1,00\n", "export.csv", {}, "export.csv"),
        (b"date;amount\n", "export.csv", {"mapping": "nope"}, "unknown CSV mapping"),
        (b"", "empty.xml", {}, "empty.xml is empty"),
    ):
        resp = await upload(h, headers, content, name=name, **form)
        assert resp.status_code == 422, (name, resp.text)
        assert 'id="statement-form"' in resp.text and 'role="alert"' in resp.text
        assert message in resp.text, resp.text
    no_file = await h.http.post("/app/payments/statements", data={"mapping": ""}, headers=headers)
    assert no_file.status_code == 422 and "choose a statement file" in no_file.text
    # Over the API's limit: refused before anything is read (the middleware's 413).
    big = await upload(h, headers, b"x" * (MAX_STATEMENT_BYTES + 70 * 1024), name="big.xml")
    assert big.status_code == 413
    assert rows(h.engine, StatementImport) == 0
    assert rows(h.engine, ReceivedLine) == 0


async def test_viewers_see_no_forms_and_their_posts_are_refused(h: Harness) -> None:
    specialist = await _login(h, "specialist")
    resp = await upload(h, specialist, camt053([Entry(1_500, "??", tx_id="V1")]))
    assert resp.status_code == 201
    [line_id] = unmatched_ids(h)
    h.http.cookies.clear()
    viewer = await _login(h, "viewer")
    page = await h.http.get("/app/payments")
    assert page.status_code == 200
    assert "importing statements needs the specialist role" in page.text
    assert f'id="line-{line_id}"' in page.text
    assert "hx-post" not in page.text.split("<main>", 1)[1]
    statement = camt053([Entry(1_600, "??", tx_id="V2")])
    for path, data in (
        (f"/app/payments/lines/{line_id}/apply", {"other_invoice": "1", "other_amount": "1"}),
        (f"/app/payments/lines/{line_id}/dismiss", {"note": "no"}),
        ("/app/payments/credit/1/apply", {"invoice_id": "1", "amount": "1"}),
    ):
        refused = await h.http.post(path, data=data, headers=viewer)
        assert refused.status_code == 403, path
        assert "needs the specialist role" in refused.text
    refused = await upload(h, viewer, statement)
    assert refused.status_code == 403
    assert unmatched_ids(h) == [line_id] and rows(h.engine, StatementImport) == 1


async def test_posts_without_the_csrf_token_are_refused(h: Harness) -> None:
    headers = await _login(h, "specialist")
    resp = await upload(h, headers, camt053([Entry(2_500, "??", tx_id="C1")]))
    assert resp.status_code == 201
    [line_id] = unmatched_ids(h)
    for token in ({}, {"X-CSRF-Token": "forged"}):
        hx = {"HX-Request": "true"} | token
        dismiss = await h.http.post(
            f"/app/payments/lines/{line_id}/dismiss", data={"note": "x"}, headers=hx
        )
        assert dismiss.status_code == 403 and "security token" in dismiss.text
        file = await upload(h, hx, camt053([Entry(2_600, "??", tx_id="C2")]))
        assert file.status_code == 403 and "security token" in file.text
    assert unmatched_ids(h) == [line_id] and rows(h.engine, StatementImport) == 1


# -- the browser: upload, apply, the invoice paid ----------------------------------------------

SHOTS = Path("/tmp/shots-payments")


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_browser_upload_apply_and_the_invoice_is_paid(live: Live, page: Page) -> None:
    expect.set_options(timeout=15_000)
    refused: list[str] = []  # what the Content-Security-Policy blocked (inline script/style)
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{live.url}/app/payments")
    page.fill("input[name=api_key]", API_KEYS["specialist"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Payments")
    expect(page.locator("#unmatched")).to_contain_text("No receipt waits")
    statement = camt053(
        [Entry(45_000, "our order 4471", name="Stranger Trading Ltd", tx_id=f"B-{live.url}")]
    )
    page.set_input_files(
        "#statement-form input[name=file]",
        files=FilePayload(name="camt053.xml", mimeType="application/xml", buffer=statement),
    )
    page.click("#statement-form button[type=submit]")
    expect(page.locator("#count-unmatched")).to_have_text("1")
    expect(page.locator("#import-lines tr.outcome-unmatched")).to_have_count(1)
    expect(page.locator("#imports")).to_contain_text("camt053.xml")
    line = page.locator("#unmatched article.line")
    expect(line).to_have_count(1)
    expect(line).to_contain_text("Stranger Trading Ltd")
    _shot(page, "01-payments-after-upload")

    line.locator("input[name=other_invoice]").fill("A-1002")
    line.locator("input[name=other_amount]").fill("450.00")
    line.locator("form.apply button").click()
    expect(page.locator("article.line.resolved .ok")).to_contain_text("It has left the queue.")
    _shot(page, "02-payments-line-applied")
    page.reload()
    expect(page.locator("#unmatched")).to_contain_text("No receipt waits")

    page.goto(f"{live.url}/app/invoices/{live.ids['A-1002']}")
    expect(page.locator("#invoice-status")).to_have_text("paid", timeout=30_000)
    _shot(page, "03-invoice-paid")

    page.click("nav >> text=Reports")
    expect(page.locator("#report-aging svg.chart")).to_have_count(2)  # EUR and USD
    page.fill("#report-filters input[name=currency]", "USD")
    page.click("#report-filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"currency=USD"))
    expect(page.locator("#report-aging svg.chart")).to_have_count(1)
    expect(page.locator("a.csv").first).to_have_attribute("href", re.compile("currency=USD"))
    _shot(page, "04-reports-usd")
    page.fill("#report-filters input[name=currency]", "QQQ")
    page.click("#report-filters button[type=submit]")
    expect(page.locator("#report-filters .error")).to_contain_text("currency")
    _shot(page, "05-reports-bad-filter")
    assert refused == []
