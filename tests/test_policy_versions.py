"""Policy versions: publishing, the versions list and diff, invoices staying on their version or
switching at their next step (time-skipping server, real worker), and the migration that gives
every existing policy its version 1."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from alembic import command
from arflow.invoices.policy_switch import running_on_older
from arflow.invoices.service import running_spec
from arflow.migrate import alembic_config, upgrade
from arflow.policies import versions
from arflow.policies.service import create_policy
from models import Customer, Invoice
from models.experiment import Experiment
from models.policy import DEFAULT_POLICY, DunningPolicyCreate
from tests.conftest import Harness
from tests.test_actions import new_case
from tests.test_send_now import job_done


def policy_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "trade",
        "send_at": "09:00",
        "escalate_after": "P45D",
        "contact_window": None,
        "steps": [
            {"key": "before_due", "offset": "-P3D", "template": "reminder_before_due"},
            {"key": "late_7", "offset": "P7D", "template": "reminder_overdue"},
        ],
    }
    return body | overrides


async def diff_of(h: Harness, pid: int, before: int, after: int) -> Any:
    params = {"from": before, "to": after}
    return await h.http.get(f"/v1/policies/{pid}/diff", params=params, headers=h.as_role("viewer"))


def default_with(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The built-in default policy's content with ``steps`` instead, as a PUT body."""
    body = DEFAULT_POLICY.model_dump(mode="json")
    return body | {"steps": list(steps)} | fields


async def test_publish_lists_versions_and_diffs_them(h: Harness) -> None:
    created = await h.post("/v1/policies", policy_body(), role="admin")
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert created.json()["version"] == 1

    new = policy_body(
        contact_window="09:00-18:00",
        steps=[
            {"key": "before_due", "offset": "-P5D", "template": "reminder_before_due"},
            {"key": "late_3", "offset": "P3D", "channel": "sms", "template": "reminder_overdue"},
            {"key": "late_7", "offset": "P7D", "template": "reminder_overdue"},
        ],
        note="earlier first reminder, an SMS on day 3",
    )
    resp = await h.http.put(f"/v1/policies/{pid}", json=new, headers=h.as_role("admin"))
    assert resp.status_code == 200, resp.text
    published = resp.json()
    assert published["version"]["version"] == 2 and published["version"]["current"] is True
    assert published["version"]["created_by"].startswith("admin")
    assert published["switch_job_id"] is None and published["running_invoices"] == 0
    assert (await h.get(f"/v1/policies/{pid}")).json()["version"] == 2
    assert (await h.get(f"/v1/policies/{pid}")).json()["contact_window"] == "09:00-18:00"

    listed = (await h.get(f"/v1/policies/{pid}/versions")).json()
    assert [(v["version"], v["current"], v["note"]) for v in listed] == [
        (2, True, "earlier first reminder, an SMS on day 3"),
        (1, False, "created"),
    ]
    assert listed[1]["policy"]["steps"][0]["offset"] == "-P3D"  # version 1 is unchanged
    one = await h.get(f"/v1/policies/{pid}/versions/1")
    assert one.status_code == 200 and one.json()["policy"]["contact_window"] is None

    diff_resp = await diff_of(h, pid, 1, 2)
    assert diff_resp.status_code == 200, diff_resp.text
    diff = diff_resp.json()
    changes = {c["field"]: (c["change"], c["before"], c["after"]) for c in diff["changes"]}
    assert changes == {
        "contact_window": ("added", None, "09:00-18:00"),
        "steps.before_due.offset": ("changed", "-P3D", "-P5D"),
        "steps.late_3": (
            "added",
            None,
            {
                "key": "late_3",
                "offset": "P3D",
                "channel": "sms",
                "template": "reminder_overdue",
                "fallback": [],
            },
        ),
    }
    back = (await diff_of(h, pid, 2, 1)).json()
    assert {c["field"]: c["change"] for c in back["changes"]}["steps.late_3"] == "removed"


async def test_publish_refuses_bad_requests_and_changes_nothing(h: Harness) -> None:
    pid = (await h.post("/v1/policies", policy_body(), role="admin")).json()["id"]
    admin = h.as_role("admin")

    async def put(body: dict[str, Any], headers: dict[str, str] = admin, path: int = pid) -> Any:
        return await h.http.put(f"/v1/policies/{path}", json=body, headers=headers)

    same = await put(policy_body())
    assert same.status_code == 409 and "nothing changed" in same.json()["error"]["message"]
    renamed = await put(policy_body(name="other"))
    assert renamed.status_code == 422 and "keeps its name" in renamed.json()["error"]["message"]
    unordered = await put(
        policy_body(
            steps=[
                {"key": "b", "offset": "P7D"},
                {"key": "a", "offset": "P1D"},
            ]
        )
    )
    assert unordered.status_code == 422
    assert (await put(policy_body(running="later"))).status_code == 422
    assert (await put(policy_body(contact_window="x"))).status_code == 422
    changed = policy_body(escalate_after="P60D")
    assert (await put(changed, headers=h.as_role("specialist"))).status_code == 403
    assert (await put(changed, path=999_999)).status_code == 404
    assert (await h.get(f"/v1/policies/{pid}/versions/2")).status_code == 404
    assert (await diff_of(h, pid, 1, 9)).status_code == 404
    assert (await diff_of(h, pid, 0, 1)).status_code == 422
    assert (await h.get("/v1/policies/999999/versions")).status_code == 404
    # Nothing of the refused requests was stored.
    assert [v["version"] for v in (await h.get(f"/v1/policies/{pid}/versions")).json()] == [1]
    assert (await h.get(f"/v1/policies/{pid}")).json()["escalate_after"] == "P45D"


async def test_running_invoices_stay_on_their_version_then_switch_at_the_next_step(
    h: Harness,
) -> None:
    c = await new_case(h, due_in=10)  # the default policy, version 1
    await c.sleep_until(c.at(2, hour=10))
    assert c.steps() == ["before_due", "first_late_day"]
    assert (await c.get())["policy_version"] == 1
    pid = (await c.get())["policy_id"]

    # Version 2 adds an SMS on day 3 and drops late_14.
    v2 = default_with(
        {"key": "before_due", "offset": "-P3D", "template": "reminder_before_due"},
        {"key": "first_late_day", "offset": "P1D", "template": "reminder_overdue"},
        {"key": "late_3", "offset": "P3D", "channel": "sms", "template": "reminder_overdue"},
        {"key": "late_7", "offset": "P7D", "template": "reminder_overdue"},
        {"key": "final_notice", "offset": "P30D", "template": "final_notice"},
        running="stay",
    )
    resp = await h.http.put(f"/v1/policies/{pid}", json=v2, headers=h.as_role("admin"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["running_invoices"] == 1 and resp.json()["switch_job_id"] is None

    # Staying: the running invoice keeps version 1 (no SMS on day 3).
    await c.sleep_until(c.at(3, hour=10))
    assert c.steps() == ["before_due", "first_late_day"]
    assert (await c.get())["policy_version"] == 1
    # A new invoice gets version 2.
    later = await new_case(h, due_in=10)
    assert (await later.get())["policy_version"] == 2

    switched = await h.post(f"/v1/policies/{pid}/switch-running", {}, role="admin")
    assert switched.status_code == 202, switched.text
    job = await job_done(h, switched.json()["id"])
    assert job["kind"] == "policy_switch"
    assert [(i["invoice_id"], i["status"], i["detail"]) for i in job["items"]] == [
        (c.id, "switched", "version 2")
    ]
    assert (await c.get())["policy_version"] == 2
    changed = [e for e in h.events(c.id) if e.kind == "policy_changed"]
    assert [e.data for e in changed] == [
        {
            "from": "default",
            "to": "default",
            "reason": "policy 'default' version 2 published",
            "skipped": ["late_3"],  # its time (day 3, 09:00) passed: recorded, not sent late
            "from_version": 1,
            "to_version": 2,
        }
    ]
    await c.sleep_until(c.at(8, hour=10))
    # late_7 of version 2 goes out; nothing sent before is sent again.
    assert c.steps() == ["before_due", "first_late_day", "late_7"]
    again = await h.post(f"/v1/policies/{pid}/switch-running", {}, role="admin")
    assert again.status_code == 202 and again.json() is None  # every open invoice is on v2


async def test_publish_with_switch_starts_the_job(h: Harness) -> None:
    c = await new_case(h, due_in=10)
    pid = (await c.get())["policy_id"]
    v2 = default_with(
        {"key": "before_due", "offset": "-P2D", "template": "reminder_before_due"},
        {"key": "late_7", "offset": "P7D", "template": "reminder_overdue"},
        running="switch",
        note="fewer reminders",
    )
    resp = await h.http.put(f"/v1/policies/{pid}", json=v2, headers=h.as_role("admin"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["running_invoices"] == 1 and body["switch_job_id"] is not None
    job = await job_done(h, body["switch_job_id"])
    assert job["counts"]["switched"] == 1
    state = await c.get()
    assert state["policy_version"] == 2
    assert state["next_action"]["step_key"] == "before_due"
    await c.sleep_until(c.at(-1, hour=10))
    assert c.steps() == ["before_due"]  # at -P2D, version 2's time


def test_migration_gives_existing_policies_version_one(engine: Engine) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0024")
    steps = json.dumps(
        [{"key": "late_7", "offset": "P7D", "channel": "email", "template": "reminder"}]
    )
    created = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO dunning_policies (name, send_at, escalate_after, dispute_sla,"
                " plan_grace, plan_reminder_offset, max_installments, promise_grace,"
                " resume_grace, contact_window, skip_weekends, skip_holidays,"
                " max_messages_per_day, max_calls_per_week, call_cooldown, consolidate,"
                " steps, ladder, created_at) VALUES ('old', '09:00', 'P30D', 'P14D', 'P5D',"
                " '-P3D', 12, 'P3D', 'P7D', '08:00-20:00', false, false, 2, 7, 'P7D', true,"
                " :steps, '[]', :created)"
            ),
            {"steps": steps, "created": created.replace(tzinfo=None)},
        )
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT version, body, created_by FROM policy_versions")).one()
        current = conn.execute(sa.text("SELECT version FROM dunning_policies")).scalar_one()
    assert row.version == 1 and current == 1 and row.created_by == "migration"
    body = row.body if isinstance(row.body, dict) else json.loads(row.body)
    content = DunningPolicyCreate.model_validate(body)  # a version's body is a valid policy
    assert content.name == "old" and content.contact_window == "08:00-20:00"
    assert [s.key for s in content.steps] == ["late_7"]
    assert content.max_messages_per_day == 2 and content.consolidate is True


def _invoice(session: Session, customer_id: int, policy_id: int, version: int, **kw: Any) -> int:
    today = date(2026, 11, 1)
    invoice = Invoice(
        external_id=f"I-{uuid.uuid4().hex[:8]}",
        number="N-1",
        currency="EUR",
        issued_on=today,
        due_date=today,
        due_at=datetime(2026, 11, 1, 23, tzinfo=UTC),
        customer_id=customer_id,
        policy_id=policy_id,
        policy_version=version,
        amount_minor=1000,
        balance_minor=1000,
        request_hash="x" * 64,
        **kw,
    )
    session.add(invoice)
    session.commit()
    assert invoice.id is not None
    return invoice.id


def test_older_versions_and_challengers_when_switching(engine: Engine) -> None:
    """``running_on_older``: open invoices on an older version, not the closed ones, nor the
    challenger arm of an experiment still running (those run the version it tests); and
    ``running_spec``: an invoice started again runs the version it recorded."""
    with Session(engine) as s:
        policy = create_policy(s, DunningPolicyCreate.model_validate(policy_body()), "admin")
        assert policy.id is not None
        v2 = DunningPolicyCreate.model_validate(policy_body(escalate_after="P60D"))
        versions.publish(s, policy.id, v2, "admin")
        customer = Customer(external_id="C-1", name="Acme", timezone="UTC")
        s.add(customer)
        running = Experiment(
            segment="standard",
            champion_policy="default",
            challenger_policy="trade",
            challenger_version=1,
            share_pct=20,
            started_by="admin",
        )
        ended = Experiment(
            segment="standard",
            champion_policy="default",
            challenger_policy="trade",
            challenger_version=1,
            share_pct=20,
            started_by="admin",
            ended_at=datetime(2026, 11, 2, tzinfo=UTC),
        )
        s.add_all([running, ended])
        s.commit()
        assert customer.id is not None and running.id is not None and ended.id is not None
        old = _invoice(s, customer.id, policy.id, 1)
        current = _invoice(s, customer.id, policy.id, 2)
        closed = _invoice(s, customer.id, policy.id, 1, status="paid")
        testing = _invoice(
            s, customer.id, policy.id, 1, experiment_id=running.id, experiment_arm="challenger"
        )
        finished = _invoice(
            s, customer.id, policy.id, 1, experiment_id=ended.id, experiment_arm="challenger"
        )
        champion = _invoice(
            s, customer.id, policy.id, 1, experiment_id=running.id, experiment_arm="champion"
        )
        s.refresh(policy)
        assert versions.load_spec(s, policy.id, 2) == policy.spec()  # one way to a spec
        # not current (v2), closed (paid) nor testing (a running experiment's challenger)
        assert running_on_older(s, policy) == [old, finished, champion]
        assert {current, closed, testing}.isdisjoint(running_on_older(s, policy))
        stored = s.get(Invoice, old)
        assert stored is not None
        assert running_spec(s, stored, policy).version == 1
        assert running_spec(s, stored, policy).escalate_after == "P45D"
        newer = s.get(Invoice, current)
        assert newer is not None and running_spec(s, newer, policy).escalate_after == "P60D"
