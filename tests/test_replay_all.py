"""Determinism for every workflow type: the saved histories in ``tests/histories/`` replay
against the current workflow classes, and every ``@workflow.defn`` class has one.

A history file is named ``<type>-<scenario>.json`` (or just ``<type>.json``), the type one
of ``TYPES``: ``invoice`` (whose lifecycle histories, ``v1-``, ``v2-``, ... come from
``tests/test_replay.py``), ``job``, ``statement-inbox``, ``statement-run``, ``segment-switch``,
``customer-review``. All replay in one ``Replayer`` holding every workflow class, with the
production converter (codec on), as a worker would replay a running workflow after a deploy.

When a replay fails, the changed workflow emits other commands than a running execution
recorded: guard the change with ``workflow.patched("<id>")`` (old path when false). Only when
the shape is meant to change and no execution of the old shape may still run, regenerate:

    python -m tests.test_replay_all --save <name>    # e.g. job-send-now, statement-inbox, all

(``<name>`` is a saved history's name or its type's prefix; invoice lifecycles are saved by
``python -m tests.test_replay tests/histories/v1-...json``). A new workflow type gets a type
here, a scenario in ``SCENARIOS`` and a saved history, or ``test_every_workflow_type_has_a_
saved_history`` fails.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import pkgutil
import re
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

import activities
import workflows
from arflow.codec import data_converter
from arflow.config import Settings
from arflow.gateway import job_workflow_id
from arflow.payments.statements.sample import Entry, camt053
from arflow.schedules import ensure_statement_schedule
from models import CustomerEvent
from models.reference import payment_reference
from tests.conftest import CODEC_KEYS, Harness, harness
from workflows.types import StatementRun, segment_switch_id

HISTORIES = Path(__file__).parent / "histories"

# The file-name prefix of each workflow type's histories.
TYPES = {
    "invoice": "InvoiceWorkflow",
    "job": "SendNowJobWorkflow",
    "statement-inbox": "StatementInboxWorkflow",
    "statement-run": "MonthlyStatementWorkflow",
    "segment-switch": "SegmentSwitchWorkflow",
    "customer-review": "CustomerReviewWorkflow",
    "confirmation": "ConfirmationWorkflow",
    "portal-link": "PortalLinkWorkflow",
    "simulation": "SimulationWorkflow",
}
INVOICE_LIFECYCLE = re.compile(r"v\d+-")  # tests/test_replay.py's names


def workflow_classes() -> dict[str, type]:
    """Every ``@workflow.defn`` class in workflows/ and activities/, by workflow type name:
    found by import, so a new one is seen without being listed anywhere."""
    found: dict[str, type] = {}
    for package in (workflows, activities):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            for _, cls in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
                defn = workflow._Definition.from_class(cls)
                if defn is not None and defn.name is not None:
                    found[defn.name] = cls
    return found


CLASSES = workflow_classes()
CONVERTER = data_converter(Settings(environment="test", codec_keys=CODEC_KEYS))
REPLAYER = Replayer(workflows=list(CLASSES.values()), data_converter=CONVERTER)


def type_of(path: Path) -> str | None:
    """The workflow type a history file's name says it holds, if any."""
    if INVOICE_LIFECYCLE.match(path.name):
        return TYPES["invoice"]
    for prefix, name in TYPES.items():
        if path.stem == prefix or path.stem.startswith(f"{prefix}-"):
            return name
    return None


def recorded_type(history: WorkflowHistory) -> str:
    started = history.events[0].workflow_execution_started_event_attributes
    return str(started.workflow_type.name)


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def saved() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def broken(path: Path, failure: BaseException) -> str:
    if type_of(path) == TYPES["invoice"]:
        regenerate = f"python -m tests.test_replay tests/histories/{path.name}"
    else:
        regenerate = f"python -m tests.test_replay_all --save {path.stem}"
    return (
        f"{path.name}: replaying this saved {recorded_type(load(path))} history against the "
        f"current code failed ({type(failure).__name__}: {failure}).\n"
        "The workflow's commands changed for a running history: an execution started before "
        "the deploy would fail the same way. Guard the change with "
        'workflow.patched("<id>") (keep the old commands when it is false), see '
        "MonthlyStatementWorkflow's 'statement-contact-window'. Only if the shape is meant to "
        f"change and no such execution can still be running, regenerate the history: {regenerate}."
    )


@pytest.mark.parametrize("path", saved(), ids=lambda p: p.name)
async def test_saved_history_replays(path: Path) -> None:
    kind = type_of(path)
    assert kind is not None, (
        f"{path.name}: not a known history type; name it <type>-<scenario>.json, "
        f"type one of {sorted(TYPES)} (tests/test_replay_all.py)"
    )
    history = load(path)
    assert recorded_type(history) == kind, (path.name, recorded_type(history))
    assert kind in CLASSES, (
        f"{path.name}: no @workflow.defn class named {kind} any more; a running execution "
        "of it would fail. Keep the type's name (a new class is a new type, next to the old)."
    )
    result = await REPLAYER.replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is not None:
        pytest.fail(broken(path, result.replay_failure), pytrace=False)


def test_every_workflow_type_has_a_saved_history() -> None:
    """A workflow type without a saved history would change shape unnoticed."""
    covered = {recorded_type(load(p)) for p in saved()}
    assert set(TYPES.values()) <= set(CLASSES), set(TYPES.values()) - set(CLASSES)
    missing = sorted(set(CLASSES) - covered)
    assert not missing, (
        f"workflow types without a saved history in tests/histories/: {missing}. Add a "
        "file-name prefix to TYPES and a scenario to SCENARIOS in tests/test_replay_all.py, "
        "then save it: python -m tests.test_replay_all --save <name>. Histories are what "
        'catch a change that needs workflow.patched("<id>").'
    )


# -- the guard guards: a changed workflow fails, the same change under patched() replays ------


@workflow.defn(name="SendNowJobWorkflow", sandboxed=False)
class _JobCountingFirst:
    """SendNowJobWorkflow with an activity added before its one activity."""

    guarded = False

    @workflow.run
    async def run(self, job_id: int) -> None:
        if not self.guarded or workflow.patched("job-count-items"):
            await workflow.execute_activity(
                "count_job_items", job_id, start_to_close_timeout=timedelta(minutes=1)
            )
        await workflow.execute_activity(
            "run_send_now_job", job_id, start_to_close_timeout=timedelta(hours=2)
        )


@workflow.defn(name="SendNowJobWorkflow", sandboxed=False)
class _JobCountingFirstPatched(_JobCountingFirst):
    guarded = True

    @workflow.run
    async def run(self, job_id: int) -> None:
        await super().run(job_id)


async def test_a_changed_workflow_fails_with_the_patched_advice() -> None:
    path = HISTORIES / "job-send-now.json"
    changed = Replayer(workflows=[_JobCountingFirst], data_converter=CONVERTER)
    result = await changed.replay_workflow(load(path), raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, workflow.NondeterminismError), result.replay_failure
    message = broken(path, result.replay_failure)
    assert "'run_send_now_job' does not match activity type of activity command" in message
    assert message.startswith("job-send-now.json: ") and 'workflow.patched("<id>")' in message
    assert "python -m tests.test_replay_all --save job-send-now" in message

    guarded = Replayer(workflows=[_JobCountingFirstPatched], data_converter=CONVERTER)
    assert (await guarded.replay_workflow(load(path))).replay_failure is None


# -- the scenarios the histories are saved from ------------------------------------------------


async def _job_send_now(h: Harness) -> str:
    """A bulk send-now job over two invoices in the contact window and one on hold."""
    from tests.test_actions import new_case
    from tests.test_send_now import daytime, job_done

    cases = [await new_case(h, due_in=10) for _ in range(3)]
    assert (await cases[2].act("/pause", {"reason": "talking"})).status_code == 200
    await daytime(h)
    resp = await h.post("/v1/reminders/send-now", {"invoice_ids": [c.id for c in cases]})
    assert resp.status_code == 202, resp.text
    job = await job_done(h, resp.json()["id"])
    assert job["counts"] == {"pending": 0, "sent": 2, "refused": 1, "failed": 0}, job
    return job_workflow_id(h.settings, job["id"])


async def _statement_inbox_import(h: Harness) -> str:
    """The daily Schedule imports the inbox: one statement paying an invoice, one broken."""
    cust = await h.customer()
    inv = await h.invoice(cust["id"], amount_minor=9_900)
    inbox = Path(h.settings.inbox_folder)
    inbox.mkdir(parents=True)
    entry = Entry(9_900, ref=payment_reference(inv["id"]), tx_id="D1")
    (inbox / "day1.xml").write_bytes(camt053([entry]))
    (inbox / "broken.xml").write_bytes(b"<Document><oops")
    schedule = h.client.get_schedule_handle(await ensure_statement_schedule(h.client, h.settings))
    try:
        await schedule.trigger()
        for _ in range(200):
            actions = (await schedule.describe()).info.recent_actions
            if actions:
                break
            await asyncio.sleep(0.05)
        workflow_id: str = actions[0].action.workflow_id  # type: ignore[attr-defined]
        result = await h.client.get_workflow_handle(workflow_id).result()
    finally:
        await schedule.delete()
    assert {f["name"]: f["outcome"] for f in result["files"]} == {
        "broken.xml": "failed",
        "day1.xml": "imported",
    }, result
    return workflow_id


async def _statement_run(h: Harness) -> str:
    """The monthly run at 07:00 UTC: Berlin's statement goes at once, New York's waits for
    its contact window (a timer), then goes in a second pass."""
    at = datetime(2026, 3, 15, 7, 0, tzinfo=UTC)
    for zone in ("America/New_York", "Europe/Berlin"):
        cust = await h.customer(statement_day=15, timezone=zone)
        await h.invoice(cust["id"], amount_minor=10_000)
    workflow_id = f"{h.settings.workflow_id_prefix}statement-run"
    counts = await h.client.execute_workflow(
        "MonthlyStatementWorkflow",
        StatementRun(at=at),
        id=workflow_id,
        task_queue=h.settings.task_queue,
        result_type=dict[str, int],
    )
    assert counts == {"sent": 2, "skipped": 0, "deferred": 1, "blocked": 0, "failed": 0}, counts
    return workflow_id


async def _customer_review(h: Harness) -> str:
    """The daily review moves a customer whose invoice grew overdue (and switches them)."""
    from tests.test_segment_switch import first_segment

    firm = await h.policy(
        escalate_after="P60D",
        steps=[{"key": "firm", "offset": "P40D", "template": "reminder_overdue"}],
    )
    rule = {"field": "max_days_overdue", "op": "gte", "value": 10}
    await first_segment(h, "slow_payers", firm, rule)
    cust = await h.customer()
    now = await h.env.get_current_time()
    await h.invoice(cust["id"], due_date=(now.date() + timedelta(days=1)).isoformat())
    await h.env.sleep(timedelta(days=13))
    workflow_id = f"{h.settings.workflow_id_prefix}review-{uuid.uuid4().hex[:8]}"
    counts = await h.client.execute_workflow(
        "CustomerReviewWorkflow",
        StatementRun(at=await h.env.get_current_time()),
        id=workflow_id,
        task_queue=h.settings.task_queue,
        result_type=dict[str, int],
    )
    assert counts == {"customers": 1, "moved": 1, "holds_changed": 0}, counts
    return workflow_id


async def _segment_switch(h: Harness) -> str:
    """A payment on time makes the customer a prompt payer: their other open invoice's
    workflow is switched to the segment's policy by a SegmentSwitchWorkflow."""
    from tests.test_segment_switch import first_segment, policies_become
    from tests.webhook import signed_payment

    prompt = await h.policy(
        escalate_after="P60D",
        steps=[{"key": "gentle", "offset": "P10D", "template": "reminder_overdue"}],
    )
    rule = {"field": "paid_on_time_pct", "op": "gte", "value": 100}
    await first_segment(h, "prompt_payers", prompt, rule)
    cust = await h.customer()
    first = await h.invoice(cust["id"], amount_minor=10_000)
    second = await h.invoice(cust["id"], amount_minor=20_000)
    now = (await h.env.get_current_time()).isoformat()
    paid = await signed_payment(h, invoice_id=first["id"], amount_minor=10_000, paid_at=now)
    assert paid.status_code == 200, paid.text
    assert await policies_become(h, [second], prompt["id"]) == [prompt["id"]]
    with Session(h.engine) as s:
        moved = s.exec(select(CustomerEvent).where(CustomerEvent.kind == "segment_changed")).one()
    workflow_id = segment_switch_id(cust["id"], moved.id or 0)
    assert await h.client.get_workflow_handle(workflow_id).result() == {}
    return workflow_id


async def _confirmation_promise(h: Harness) -> str:
    """A customer's promise from the portal, and its confirmation email."""
    from datetime import timedelta

    from sqlmodel import Session, select

    from arflow import gateway
    from arflow.portal import requests
    from models import Promise
    from models.types import utcnow
    from workflows.confirmations import ConfirmationInput

    cust = await h.customer()
    inv = await h.invoice(cust["id"])
    with Session(h.engine) as s:
        await requests.customer_promise(
            s,
            h.client,
            h.settings,
            cust["id"],
            inv["id"],
            utcnow().date() + timedelta(days=3),
            1_000,
            "",
        )
        promise_id = s.exec(select(Promise.id).where(Promise.invoice_id == inv["id"])).one()
    workflow_id = gateway.confirmation_id(
        h.settings, ConfirmationInput(inv["id"], "promise", promise_id or 0)
    )
    assert await h.client.get_workflow_handle(workflow_id).result() == "sent"
    return workflow_id


async def _portal_link_sent(h: Harness) -> str:
    """A fresh portal link asked for on an expired link's page, sent by email."""
    from sqlmodel import Session

    from arflow import gateway
    from arflow.portal import fresh_links
    from models import Customer

    cust = await h.customer()
    with Session(h.engine) as s:
        customer = s.get(Customer, cust["id"])
        assert customer is not None
        row = fresh_links.request_link(s, customer, "expired")
        assert row.id is not None
        request_id = row.id
    await gateway.start_portal_link(h.client, h.settings, request_id)
    workflow_id = gateway.portal_link_workflow_id(h.settings, request_id)
    assert await h.client.get_workflow_handle(workflow_id).result() == "sent"
    return workflow_id


async def _simulation_job(h: Harness) -> str:
    """A policy simulation job over 30 past invoices of five customers."""
    import random
    from datetime import date

    from bench.simulate_10k import draft_body, seed
    from tests.test_simulation_jobs import finished

    data = seed(h.engine, 30, 5, today=date(2026, 11, 30), rng=random.Random(11))
    body = draft_body(data).model_dump(mode="json", exclude_none=True)
    resp = await h.post("/v1/policies/simulations", body, role="admin")
    assert resp.status_code == 202, resp.text
    job = await finished(h, resp.json()["id"])
    assert job["counts"] == {"pending": 0, "simulated": 30}, job
    return job_workflow_id(h.settings, job["id"])


# name: (scenario, needs the dev server); the scenario returns the workflow id to save.
SCENARIOS: dict[str, tuple[Callable[[Harness], Awaitable[str]], bool]] = {
    "job-send-now": (_job_send_now, False),
    "statement-inbox-import": (_statement_inbox_import, True),  # Schedules: the dev server
    "statement-run": (_statement_run, False),
    "customer-review": (_customer_review, False),
    "segment-switch": (_segment_switch, False),
    "confirmation-promise": (_confirmation_promise, False),
    "portal-link-sent": (_portal_link_sent, False),
    "simulation-job": (_simulation_job, False),
}


async def _save(names: list[str]) -> None:
    from tests.conftest import TEMPORAL_CLI, TEST_SERVER, _sqlite_engine

    for name in names:
        scenario, dev = SCENARIOS[name]
        if dev:
            from arflow.cli import SEARCH_ATTRIBUTE_ARGS

            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=str(TEMPORAL_CLI),
                dev_server_extra_args=[
                    "--dynamic-config-value",
                    "frontend.enableUpdateWorkflowExecution=true",
                    *SEARCH_ATTRIBUTE_ARGS,
                ],
            )
        else:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=str(TEST_SERVER)
            )
        with tempfile.TemporaryDirectory() as tmp:
            engine: Engine = _sqlite_engine(Path(tmp))
            # The codec on, as in production: the saved payloads are encrypted.
            async with harness(env, engine, Path(tmp), codec_keys=CODEC_KEYS) as h:
                workflow_id = await scenario(h)
                history = await h.client.get_workflow_handle(workflow_id).fetch_history()
            engine.dispose()
        await env.shutdown()
        (HISTORIES / f"{name}.json").write_text(history.to_json())
        print(f"saved tests/histories/{name}.json ({len(history.events)} events)")


def _chosen(arg: str) -> list[str]:
    names = [n for n in SCENARIOS if arg == "all" or n == arg or n.startswith(f"{arg}-")]
    if not names:
        raise SystemExit(f"no scenario {arg!r}: one of {sorted(SCENARIOS)}, a prefix, or all")
    return names


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--save":
        raise SystemExit("usage: python -m tests.test_replay_all --save <name|prefix|all>")
    asyncio.run(_save(_chosen(sys.argv[2])))
    sys.stdout.flush()
    os._exit(0)  # sdk-python #300
