"""Bank statements through the API (time-skipping server, both databases) and the daily inbox
schedule (dev server, which has Schedules)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from arflow.payments.statements.sample import ACCOUNT, Entry, camt053, camt053_accounts
from arflow.schedules import ensure_statement_schedule
from models import Payment, ReceivedLine, StatementImport
from models.reference import payment_reference
from tests.conftest import Harness, harness
from tests.test_api import error_of, eventually

ACME_IBAN = "DE89370400440532013000"


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path) as h:
        yield h


async def upload(h: Harness, content: bytes, name: str = "stmt.xml", **form: str) -> Any:
    return await h.http.post(
        "/v1/bank-statements",
        files={"file": (name, content, "application/octet-stream")},
        data=form,
        headers=h.as_role("specialist"),
    )


def rows(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


async def statuses(h: Harness, invoices: list[dict[str, Any]]) -> list[str]:
    return [(await h.get(f"/v1/invoices/{i['id']}")).json()["status"] for i in invoices]


async def book(h: Harness) -> dict[str, dict[str, Any]]:
    acme = await h.customer(name="Acme GmbH", iban="DE89 3704 0044 0532 0130 00")
    globex = await h.customer(name="Globex Corp")
    return {
        "ref": await h.invoice(acme["id"], amount_minor=10_000),
        "sum_a": await h.invoice(acme["id"], amount_minor=25_000),
        "sum_b": await h.invoice(acme["id"], amount_minor=5_000),
        "text": await h.invoice(globex["id"], amount_minor=7_500, number="GX-2026/118"),
        "later": await h.invoice(globex["id"], amount_minor=1_234),
    }


async def test_import_matches_applies_queues_and_dedupes(h: Harness) -> None:
    inv = await book(h)
    statement = camt053(
        [
            Entry(10_000, ref=payment_reference(inv["ref"]["id"]), tx_id="T1"),
            Entry(30_000, "thanks for the goods", name="ACME GMBH", iban=ACME_IBAN, tx_id="T2"),
            Entry(7_500, "payment gx 2026 118 globex", tx_id="T3"),
            Entry(1_234, "gift", name="Somebody Else", tx_id="T4"),
            Entry(-50_000, "office rent November", tx_id="T5"),
            Entry(10_000, ref=payment_reference(inv["ref"]["id"]), tx_id="T1"),  # listed twice
        ]
    )
    first = await upload(h, statement)
    assert first.status_code == 201, first.text
    report = first.json()
    assert report["format"] == "camt.053"
    assert report["counts"] == {
        "lines": 6,
        "matched": 3,
        "unmatched": 1,
        "duplicate": 1,
        "ignored": 1,
        "rejected": 0,
    }
    assert sorted(d["outcome"] for d in report["deliveries"]) == ["delivered"] * 4
    closed = [inv["ref"], inv["sum_a"], inv["sum_b"], inv["text"]]

    async def all_paid() -> bool:
        return await statuses(h, closed) == ["paid"] * 4

    for _ in range(100):
        if await all_paid():
            break
        await asyncio.sleep(0.05)
    assert await statuses(h, closed) == ["paid"] * 4
    for i in closed:
        handle = h.client.get_workflow_handle(i["workflow_id"])
        await handle.result()
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert await statuses(h, [inv["later"]]) == ["open"]

    queue = (await h.get("/v1/unmatched-payments")).json()
    assert queue["total"] == 1
    [waiting] = queue["items"]
    assert (waiting["amount_minor"], waiting["counterparty_name"], waiting["remittance"]) == (
        1_234,
        "Somebody Else",
        "gift",
    )
    assert waiting["reason"] == "no invoice reference, and the payer is not a known customer"
    payments_before = rows(h.engine, Payment)
    assert payments_before == 4

    # The same file again: every line is known, nothing applied twice.
    second = (await upload(h, statement)).json()
    assert second["counts"] == {
        "lines": 6,
        "matched": 0,
        "unmatched": 0,
        "duplicate": 6,
        "ignored": 0,
        "rejected": 0,
    }
    assert second["deliveries"] == []
    assert rows(h.engine, Payment) == payments_before
    assert rows(h.engine, ReceivedLine) == 5

    # An overlapping statement: one old line, one new one.
    overlap = camt053(
        [
            Entry(7_500, "payment gx 2026 118 globex", tx_id="T3"),
            Entry(1_234, f"invoice {inv['later']['number']}", tx_id="T6"),
        ],
        statement_id="STMT-2",
    )
    third = (await upload(h, overlap)).json()
    assert (third["counts"]["duplicate"], third["counts"]["matched"]) == (1, 1)
    assert rows(h.engine, Payment) == payments_before + 1
    for _ in range(100):
        if await statuses(h, [inv["later"]]) == ["paid"]:
            break
        await asyncio.sleep(0.05)

    # The queued gift cannot go to an invoice that is paid now; it goes to the customer's
    # credit instead.
    applied = await h.post(
        f"/v1/unmatched-payments/{waiting['id']}/apply",
        {"allocations": [{"invoice_id": inv["later"]["id"], "amount_minor": 1_234}]},
    )
    assert applied.status_code == 409, applied.text
    assert "put the money on the customer's credit instead" in error_of(applied)
    credit_to = inv["later"]["customer_id"]
    applied = await h.post(
        f"/v1/unmatched-payments/{waiting['id']}/apply",
        {"credit_customer_id": credit_to, "note": "gift from the owner"},
    )
    assert applied.status_code == 200, applied.text
    assert applied.json()["line"]["status"] == "applied"
    assert (await h.get(f"/v1/customers/{credit_to}")).json()["credit"] == {"EUR": 1_234}
    assert (await h.get("/v1/unmatched-payments")).json()["total"] == 0


async def test_queue_apply_splits_a_receipt_over_invoices(h: Harness) -> None:
    cust = await h.customer(name="Initech")
    a = await h.invoice(cust["id"], amount_minor=4_000)
    b = await h.invoice(cust["id"], amount_minor=6_000)
    report = (await upload(h, camt053([Entry(11_000, "for everything", tx_id="X1")]))).json()
    [line] = (await h.get("/v1/unmatched-payments")).json()["items"]
    assert report["counts"]["unmatched"] == 1
    bad = [
        ({"allocations": [{"invoice_id": a["id"], "amount_minor": 12_000}]}, 422, "more than"),
        ({"allocations": [{"invoice_id": a["id"], "amount_minor": 4_000}]}, 422, "not allocated"),
        (
            {"allocations": [{"invoice_id": 999_999, "amount_minor": 11_000}]},
            422,
            "unknown invoice",
        ),
        ({}, 422, "give allocations"),
    ]
    for body, code, message in bad:
        resp = await h.post(f"/v1/unmatched-payments/{line['id']}/apply", body)
        assert resp.status_code == code, resp.text
        assert message in error_of(resp)
    ok = await h.post(
        f"/v1/unmatched-payments/{line['id']}/apply",
        {
            "allocations": [
                {"invoice_id": a["id"], "amount_minor": 4_000},
                {"invoice_id": b["id"], "amount_minor": 6_000},
            ],
            "credit_customer_id": cust["id"],
        },
    )
    assert ok.status_code == 200, ok.text
    assert [d["outcome"] for d in ok.json()["deliveries"]] == ["delivered", "delivered"]
    for _ in range(100):
        if await statuses(h, [a, b]) == ["paid", "paid"]:
            break
        await asyncio.sleep(0.05)
    assert await statuses(h, [a, b]) == ["paid", "paid"]
    assert (await h.get(f"/v1/customers/{cust['id']}")).json()["credit"] == {"EUR": 1_000}


async def test_bad_files_are_refused_with_their_name_and_nothing_is_stored(h: Harness) -> None:
    garbage = await upload(h, b"\x00\x01 this is not a statement", name="junk.bin")
    assert garbage.status_code == 422
    assert garbage.json()["error"]["details"] == {"file": "junk.bin"}
    csv = await upload(h, b"date;amount\n2026-11-01;1,00\n", name="export.csv")
    assert csv.status_code == 422
    unknown = await upload(h, b"date;amount\n", name="export.csv", mapping="nope")
    assert unknown.status_code == 422
    assert "unknown CSV mapping 'nope'" in error_of(unknown)
    assert rows(h.engine, StatementImport) == 0
    assert rows(h.engine, ReceivedLine) == 0


async def test_csv_with_a_saved_mapping_keeps_good_rows_and_reports_bad_ones(h: Harness) -> None:
    cust = await h.customer(name="Hooli")
    inv = await h.invoice(cust["id"], amount_minor=123_456, number="HO-77")
    mapping = {
        "name": "sparkasse",
        "columns": {
            "date": "Buchungstag",
            "amount": "Betrag",
            "currency": "Waehrung",
            "remittance": "Verwendungszweck",
            "counterparty_name": "Beguenstigter/Zahlungspflichtiger",
            "date_format": "%d.%m.%Y",
            "decimal_separator": ",",
            "thousands_separator": ".",
            "delimiter": ";",
        },
    }
    created = await h.post("/v1/csv-mappings", mapping)
    assert created.status_code == 201, created.text
    twice = await h.post("/v1/csv-mappings", mapping)
    assert twice.status_code == 409
    broken = await h.post("/v1/csv-mappings", {"name": "x", "columns": {"date": "D"}})
    assert broken.status_code == 422
    content = (
        b"Buchungstag;Betrag;Waehrung;Verwendungszweck;Beguenstigter/Zahlungspflichtiger\n"
        b"20.11.2026;1.234,56;EUR;Rechnung HO-77;Hooli\n"
        b"31.02.2026;10,00;EUR;bad date;Hooli\n"
        b"21.11.2026;zehn;EUR;bad amount;Hooli\n"
    )
    report = (await upload(h, content, name="umsaetze.csv", mapping="sparkasse")).json()
    assert report["format"] == "csv"
    assert (report["counts"]["matched"], report["counts"]["rejected"]) == (1, 2)
    assert [(e["file"], e["line"]) for e in report["errors"]] == [
        ("umsaetze.csv", 3),
        ("umsaetze.csv", 4),
    ]
    for _ in range(100):
        if await statuses(h, [inv]) == ["paid"]:
            break
        await asyncio.sleep(0.05)
    assert await statuses(h, [inv]) == ["paid"]
    history = (await h.get("/v1/bank-statements")).json()
    assert [(i["filename"], i["counts"]["rejected"]) for i in history] == [("umsaetze.csv", 2)]


# -- the daily inbox schedule (dev server) ----------------------------------------------------


@pytest.mark.devserver
async def test_daily_schedule_imports_the_inbox(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(dev_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"], amount_minor=9_900)
        inbox = Path(h.settings.inbox_folder)
        inbox.mkdir(parents=True)
        (inbox / "day1.xml").write_bytes(
            camt053([Entry(9_900, ref=payment_reference(inv["id"]), tx_id="D1")])
        )
        (inbox / "broken.xml").write_bytes(b"<Document><oops")
        schedule_id = await ensure_statement_schedule(h.client, h.settings)
        await ensure_statement_schedule(h.client, h.settings)  # again: updated, not an error
        handle = h.client.get_schedule_handle(schedule_id)
        try:
            described = await handle.describe()
            [calendar] = described.schedule.spec.calendars  # the server stores cron as calendars
            assert [(r.start, r.end) for r in calendar.hour] == [(6, 6)]
            assert [(r.start, r.end) for r in calendar.minute] == [(0, 0)]
            await handle.trigger()

            async def started() -> str | None:
                actions = (await handle.describe()).info.recent_actions
                return actions[0].action.workflow_id if actions else None  # type: ignore[attr-defined]

            run_id = None
            for _ in range(100):
                run_id = await started()
                if run_id:
                    break
                await asyncio.sleep(0.1)
            assert run_id is not None
            result = await h.client.get_workflow_handle(run_id).result()
            outcomes = {f["name"]: f["outcome"] for f in result["files"]}
            assert outcomes == {"broken.xml": "failed", "day1.xml": "imported"}
        finally:
            await handle.delete()
        assert await eventually(
            lambda: [e.kind for e in h.events(inv["id"])].count("payment_applied") == 1,
            timeout=20,
        )
        assert sorted(p.name.split("-", 1)[1] for p in (inbox / "processed").iterdir()) == [
            "day1.xml"
        ]
        failed = sorted(p.name.split("-", 1)[1] for p in (inbox / "failed").iterdir())
        assert failed == ["broken.error.txt", "broken.xml"]
        assert [p.name for p in inbox.iterdir() if p.is_file()] == []
        with Session(h.engine) as s:
            [imported] = s.exec(select(StatementImport)).all()
        assert (imported.source, imported.account_iban) == ("inbox", ACCOUNT)


@pytest.mark.devserver
async def test_cli_imports_a_statement_file(
    dev_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path, monkeypatch: Any
) -> None:
    from typer.testing import CliRunner

    from arflow.cli import app
    from arflow.config import get_settings

    async with harness(dev_env, sqlite_engine, tmp_path) as h:
        cust = await h.customer()
        inv = await h.invoice(cust["id"], amount_minor=4_200)
        path = tmp_path / "day.xml"
        path.write_bytes(camt053([Entry(4_200, ref=payment_reference(inv["id"]), tx_id="C1")]))
        env = {
            "ARFLOW_ENVIRONMENT": "test",
            "ARFLOW_DATABASE_URL": h.settings.database_url,
            "ARFLOW_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "ARFLOW_WORKFLOW_ID_PREFIX": h.settings.workflow_id_prefix,
            "ARFLOW_TASK_QUEUE": h.settings.task_queue,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        try:
            runner = CliRunner()
            first = await asyncio.to_thread(
                runner.invoke, app, ["statements", "import", str(path), "--json"]
            )
            second = await asyncio.to_thread(
                runner.invoke, app, ["statements", "import", str(path), "--json"]
            )
        finally:
            get_settings.cache_clear()
        assert first.exit_code == 0, first.output
        [report] = json.loads(first.output)
        assert (report["matched"], report["duplicate"]) == (1, 0)
        [again] = json.loads(second.output)
        assert (again["matched"], again["duplicate"]) == (0, 1)
        assert await eventually(
            lambda: [e.kind for e in h.events(inv["id"])].count("payment_applied") == 1,
            timeout=20,
        )


# -- files with statements of several accounts -----------------------------------------------


def _iban(n: int) -> str:
    """A valid German IBAN for account number ``n``."""
    bban = f"37040044{n:010d}"
    return f"DE{98 - int(bban + '131400') % 97:02d}{bban}"


def mt940_accounts(statements: list[tuple[str, list[tuple[int, str]]]]) -> bytes:
    """A multi-account MT940 export: per ``(account, [(amount_minor, remittance)])`` one
    message, as banks export all accounts of a customer in one file."""
    messages = []
    for n, (account, lines) in enumerate(statements, start=1):
        fields = [":20:STARTUMSE", f":25:{account}", f":28C:{n}/1", ":60F:C261120EUR0,00"]
        for i, (amount, text) in enumerate(lines, start=1):
            mark = "C" if amount > 0 else "D"
            major, minor = divmod(abs(amount), 100)
            fields += [
                f":61:2611201120{mark}{major},{minor:02d}NTRFNONREF//B{n}-{i}",
                f":86:{text}",
            ]
        fields += [":62F:C261120EUR0,00", "-"]
        messages.append("\r\n".join(fields))
    return "\r\n".join(messages).encode()


async def test_mt940_of_twenty_accounts_applies_ours_and_reports_the_others(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    accounts = [_iban(i) for i in range(20)]
    ours = accounts[3:6]
    async with harness(
        ts_env, engine, tmp_path, company_iban=ours[0], bank_accounts=",".join(ours)
    ) as h:
        cust = await h.customer(name="Acme GmbH")
        paid = [await h.invoice(cust["id"], amount_minor=1_000 * (i + 1)) for i in range(3)]
        untouched = await h.invoice(cust["id"], amount_minor=5_000)
        # Ours pay an invoice each; every foreign account has a line naming the untouched
        # invoice with its exact amount: it would match, were it applied.
        statements = [
            (
                account,
                [
                    (
                        1_000 * (ours.index(account) + 1),
                        f"Rechnung {paid[ours.index(account)]['number']}",
                    )
                ]
                if account in ours
                else [(5_000, f"Rechnung {untouched['number']}"), (-200, "Gebuehren")],
            )
            for account in accounts
        ]
        resp = await upload(h, mt940_accounts(statements), name="all-accounts.sta")
        assert resp.status_code == 201, resp.text
        report = resp.json()
        assert report["counts"] == {
            "lines": 3,
            "matched": 3,
            "unmatched": 0,
            "duplicate": 0,
            "ignored": 0,
            "rejected": 0,
        }
        per = {a["account"]: a for a in report["accounts"]}
        assert list(per) == accounts
        for account in ours:
            assert per[account] | {"statement_ids": []} == {
                "account": account,
                "account_iban": account,
                "ours": True,
                "statements": 1,
                "statement_ids": [],
                "lines": 1,
                "matched": 1,
                "unmatched": 0,
                "duplicate": 0,
                "ignored": 0,
                "rejected": 0,
                "skipped": 0,
            }
        foreign = [per[a] for a in accounts if a not in ours]
        assert len(foreign) == 17
        assert {(a["ours"], a["lines"], a["skipped"], a["matched"]) for a in foreign} == {
            (False, 2, 2, 0)
        }
        skipped = [line for line in report["lines"] if line["status"] == "skipped"]
        assert len(skipped) == 34 and "is not ours" in skipped[0]["reason"]
        assert rows(h.engine, ReceivedLine) == 3
        assert rows(h.engine, Payment) == 3
        for _ in range(100):
            if await statuses(h, paid) == ["paid"] * 3:
                break
            await asyncio.sleep(0.05)
        assert await statuses(h, [*paid, untouched]) == ["paid", "paid", "paid", "open"]
        [listed] = (await h.get("/v1/bank-statements")).json()
        assert listed["account_iban"] is None
        assert [a["skipped"] for a in listed["accounts"]] == [
            0 if a in ours else 2 for a in accounts
        ]
        # The same file again: ours are duplicates, the others skipped again.
        again = (await upload(h, mt940_accounts(statements), name="all-accounts.sta")).json()
        assert (again["counts"]["lines"], again["counts"]["duplicate"]) == (3, 3)
        assert rows(h.engine, Payment) == 3


async def test_camt053_of_two_accounts_applies_only_ours(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, engine, tmp_path, company_iban=ACCOUNT) as h:
        cust = await h.customer(name="Globex Corp")
        inv = await h.invoice(cust["id"], amount_minor=7_500)
        other = await h.invoice(cust["id"], amount_minor=8_000)
        content = camt053_accounts(
            [
                (ACCOUNT, "OURS-1", [Entry(7_500, f"invoice {inv['number']}", tx_id="A1")]),
                (
                    ACME_IBAN,
                    "THEIRS-1",
                    [
                        Entry(8_000, f"invoice {other['number']}", tx_id="A1"),
                        Entry(100, "interest", tx_id="A2"),
                    ],
                ),
                (ACCOUNT, "OURS-2", [Entry(-300, "bank fee", tx_id="A3")]),
            ]
        )
        report = (await upload(h, content)).json()
        assert (report["counts"]["lines"], report["counts"]["matched"]) == (2, 1)
        assert [
            (a["account"], a["ours"], a["statements"], a["statement_ids"], a["lines"])
            + (a["matched"], a["ignored"], a["skipped"])
            for a in report["accounts"]
        ] == [
            (ACCOUNT, True, 2, ["OURS-1", "OURS-2"], 2, 1, 1, 0),
            (ACME_IBAN, False, 1, ["THEIRS-1"], 2, 0, 0, 2),
        ]
        assert rows(h.engine, Payment) == 1
        for _ in range(100):
            if await statuses(h, [inv]) == ["paid"]:
                break
            await asyncio.sleep(0.05)
        assert await statuses(h, [inv, other]) == ["paid", "open"]


async def test_several_accounts_without_ours_configured_is_refused(h: Harness) -> None:
    content = camt053_accounts(
        [(ACCOUNT, "S1", [Entry(100, "x", tx_id="B1")]), (ACME_IBAN, "S2", [Entry(5, "y")])]
    )
    resp = await upload(h, content)
    assert resp.status_code == 422, resp.text
    assert "ARFLOW_BANK_ACCOUNTS" in error_of(resp)
    assert rows(h.engine, StatementImport) == rows(h.engine, ReceivedLine) == 0
