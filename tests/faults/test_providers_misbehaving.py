"""Providers misbehaving, with the real workflow on the time-skipping server.

Email goes through the SendGrid SDK, SMS through the Twilio SDK and placements through the
agency webhook adapter, all to ``MisbehavingProvider``. What each misbehaviour must lead to:

===================================  =========================================================
the provider ...                     outcome
===================================  =========================================================
answers 500                          not accepted: retried with backoff, sent once
answers 429 with ``Retry-After: N``  not accepted: retried after N seconds, not before
answers after our timeout            may have sent: email/SMS ``uncertain``, never resent, a
                                     ``delivery_uncertain`` task on the worklist; agency:
                                     retried with the same Idempotency-Key and the same body,
                                     placed once
reads the request, resets            as a late answer
===================================  =========================================================

Every outcome is on the timeline exactly once (``reminder_sent`` / ``escalated``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from models import AgencyPlacement, Invoice, Task
from tests.conftest import API_KEYS, PROVIDERS, Harness
from tests.faults.fakes import (
    Answer,
    MisbehavingProvider,
    reset,
    server_error,
    too_late,
    too_many,
)
from tests.test_agency import SECRET, _create_agency
from tests.test_delivery import due_now
from tests.test_web import CSRF_IN_FORM

TIMEOUT = 0.5  # provider_timeout_seconds and agency_timeout_seconds: a late answer is 1.5 s
PATHS = {"email": "/v3/mail/send", "sms": f"/2010-04-01/Accounts/{'AC' + '0' * 32}/Messages.json"}


def accepted(channel: str) -> Answer:
    """What the provider answers when it takes the message."""
    if channel == "email":
        return Answer(202, headers={"X-Message-Id": "sg-1"})
    body = {"sid": "SM" + "1" * 32, "status": "queued", "account_sid": "AC" + "0" * 32}
    return Answer(201, json.dumps(body).encode(), {"Content-Type": "application/json"})


@pytest.fixture
def fake() -> Iterator[MisbehavingProvider]:
    """The providers and the agency (``fakes`` goes to it): misbehaving as each test says."""
    server = MisbehavingProvider()
    yield server
    server.close()


@pytest.fixture
def provider_settings() -> dict[str, Any]:
    return PROVIDERS | {
        "provider_timeout_seconds": TIMEOUT,
        "agency_timeout_seconds": TIMEOUT,
        # The web worklist, signed in over http: the session cookie is https-only when this is
        # an https URL.
        "public_url": "http://arflow.test",
        "session_secret": "test-session-secret",
    }


def tasks(h: Harness, invoice_id: int, kind: str) -> list[Task]:
    with Session(h.engine) as s:
        stmt = select(Task).where(Task.invoice_id == invoice_id, Task.kind == kind)
        return list(s.exec(stmt).all())


def kinds(h: Harness, invoice_id: int, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in h.events(invoice_id) if e.kind == kind]


# -- email and SMS ----------------------------------------------------------------------------


def assert_sent_once(h: Harness, fake: MisbehavingProvider, inv: dict[str, Any], n: int) -> None:
    """``n`` requests, the last one accepted; one outbox row ``sent``, one event, no task."""
    channel = inv["_channel"]
    assert [r.path for r in fake.requests] == [PATHS[channel]] * n
    assert len(fake.accepted) == 1
    [row] = h.outbox(inv["id"])
    assert (row.channel, row.status, row.provider_id is not None) == (channel, "sent", True)
    [event] = kinds(h, inv["id"], "reminder_sent")
    assert (event["step"], event["channel"], event.get("delivery")) == ("due", channel, None)
    assert kinds(h, inv["id"], "channel_unavailable") == []
    assert tasks(h, inv["id"], "delivery_uncertain") == []


@pytest.mark.parametrize("channel", ["email", "sms"])
async def test_a_server_error_is_retried_and_sent_once(
    fakes: tuple[Harness, MisbehavingProvider], channel: str
) -> None:
    h, fake = fakes
    fake.answer(server_error(), server_error(), accepted(channel))
    inv = await due_now(h, channel) | {"_channel": channel}
    await h.env.sleep(timedelta(seconds=30))  # the activity's backoff: 1 s, then 2 s
    assert_sent_once(h, fake, inv, 3)
    gaps = [b.at - a.at for a, b in zip(fake.requests, fake.requests[1:], strict=False)]
    assert all(gap > 0 for gap in gaps)


@pytest.mark.parametrize("channel", ["email", "sms"])
async def test_too_many_requests_waits_for_retry_after(
    fakes: tuple[Harness, MisbehavingProvider], channel: str
) -> None:
    h, fake = fakes
    fake.answer(too_many(300), accepted(channel))
    inv = await due_now(h, channel) | {"_channel": channel}
    await h.env.sleep(timedelta(minutes=2))  # 3 minutes after the 429: not yet
    assert len(fake.requests) == 1, "retried before Retry-After"
    assert [r.status for r in h.outbox(inv["id"])] == ["queued"]
    await h.env.sleep(timedelta(minutes=4))  # 7 minutes after: retried
    assert_sent_once(h, fake, inv, 2)


MAY_HAVE_SENT: dict[str, Callable[[str], Answer]] = {
    "late": lambda channel: too_late(accepted(channel), TIMEOUT * 3),
    "reset": lambda channel: reset(),
}


@pytest.mark.parametrize("channel", ["email", "sms"])
@pytest.mark.parametrize("misbehaviour", sorted(MAY_HAVE_SENT))
async def test_no_answer_after_sending_is_uncertain_and_never_resent(
    fakes: tuple[Harness, MisbehavingProvider], channel: str, misbehaviour: str
) -> None:
    h, fake = fakes
    fake.answer(MAY_HAVE_SENT[misbehaviour](channel))
    inv = await due_now(h, channel)
    await h.env.sleep(timedelta(minutes=10))  # any retry would have come by now
    assert len(fake.requests) == 1 and len(fake.accepted) == 1
    [row] = h.outbox(inv["id"])
    assert row.status == "uncertain"
    [event] = kinds(h, inv["id"], "reminder_sent")
    assert (event["step"], event["channel"], event["delivery"]) == ("due", channel, "uncertain")
    [task] = tasks(h, inv["id"], "delivery_uncertain")
    assert task.status == "open"
    assert task.data == {"step": "due", "channel": channel, "outbox_id": row.id}
    listed = await h.get("/v1/worklist", kind="delivery_uncertain")
    assert listed.status_code == 200
    assert [(t["invoice_id"], t["data"]["outbox_id"]) for t in listed.json()] == [
        (inv["id"], row.id)
    ]
    page = await web_worklist(h)
    assert "delivery_uncertain" in page and f'href="/app/invoices/{inv["id"]}"' in page


async def web_worklist(h: Harness) -> str:
    """The worklist page a viewer sees, signed in through the login form."""
    form = await h.http.get("/app/login")
    token = CSRF_IN_FORM.search(form.text)
    assert token, form.text
    data = {"api_key": API_KEYS["viewer"], "csrf_token": token[1], "next": "/app/worklist"}
    assert (await h.http.post("/app/login", data=data)).status_code == 303
    page = await h.http.get("/app/worklist")
    assert page.status_code == 200
    return page.text


# -- the agency webhook ----------------------------------------------------------------------


async def escalating(h: Harness, fake: MisbehavingProvider) -> dict[str, Any]:
    """An invoice whose ladder places it with a webhook agency (``fake``) about 1 minute
    from now; the clock is moved to 2 minutes."""
    await _create_agency(
        h,
        name="Hooked",
        delivery="webhook",
        endpoint_url=f"{fake.url}/arflow/placements",
        folder=None,
        secret=SECRET,
    )
    pol = await h.policy(
        escalate_after="PT1M",
        steps=[{"key": "late", "offset": "PT10S", "template": "reminder_overdue"}],
        ladder=[{"key": "collect", "kind": "agency"}],
    )
    now = await h.env.get_current_time()
    cust = await h.customer(email=None, phone=None)  # the dunning step goes to the outbox
    inv = await h.invoice(
        cust["id"], policy_id=pol["id"], due_at=now.isoformat(), due_date=now.date().isoformat()
    )
    await h.env.sleep(timedelta(minutes=2))
    return inv


def placements(fake: MisbehavingProvider) -> list[Any]:
    return [r for r in fake.requests if r.path == "/arflow/placements"]


def assert_placed_once(h: Harness, fake: MisbehavingProvider, invoice_id: int, n: int) -> None:
    """``n`` placement requests with one Idempotency-Key and one body, one placement at the
    agency and here, one ``escalated`` event, the failure task settled."""
    sent = placements(fake)
    assert len(sent) == n
    assert {r.headers["Idempotency-Key"] for r in sent} == {f"invoice-{invoice_id}-placement"}
    assert len({r.body for r in sent}) == 1, "a retry is not the same request"
    assert len([r for r in fake.accepted if r.path == "/arflow/placements"]) == 1
    with Session(h.engine) as s:
        [placement] = s.exec(
            select(AgencyPlacement).where(AgencyPlacement.invoice_id == invoice_id)
        ).all()
        assert s.get(Invoice, invoice_id).status == "escalated"  # type: ignore[union-attr]
    assert (placement.agency, placement.status) == ("Hooked", "placed")
    assert placement.reference == "AG-1"
    [event] = kinds(h, invoice_id, "escalated")
    assert event["reference"] == "AG-1"
    [task] = tasks(h, invoice_id, "agency_placement_failed")
    assert task.status == "done"


AGENCY_TAKES = Answer(200, b'{"reference": "AG-1"}', {"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "misbehaviour",
    ["500", "late", "reset"],
)
async def test_the_agency_misbehaving_is_retried_and_placed_once(
    fakes: tuple[Harness, MisbehavingProvider], misbehaviour: str
) -> None:
    h, fake = fakes
    fake.default = AGENCY_TAKES
    first = {
        "500": server_error(),
        "late": too_late(AGENCY_TAKES, TIMEOUT * 3),
        "reset": reset(),
    }[misbehaviour]
    fake.answer(first)
    inv = await escalating(h, fake)
    await h.env.sleep(timedelta(minutes=1))  # the activity's backoff
    assert_placed_once(h, fake, inv["id"], 2)


async def test_the_agency_saying_too_many_is_retried_after_retry_after(
    fakes: tuple[Harness, MisbehavingProvider],
) -> None:
    h, fake = fakes
    fake.default = AGENCY_TAKES
    fake.answer(too_many(300))
    inv = await escalating(h, fake)
    await h.env.sleep(timedelta(minutes=2))
    assert len(placements(fake)) == 1, "retried before Retry-After"
    await h.env.sleep(timedelta(minutes=5))
    assert_placed_once(h, fake, inv["id"], 2)


async def test_a_recall_without_an_answer_is_retried_as_the_same_request(
    fakes: tuple[Harness, MisbehavingProvider],
) -> None:
    h, fake = fakes
    fake.default = AGENCY_TAKES
    inv = await escalating(h, fake)
    fake.answer(reset())
    resp = await h.post(f"/v1/invoices/{inv['id']}/agency/recall", {"reason": "paid us direct"})
    assert resp.status_code == 200, resp.text
    recalls = [r for r in fake.requests if r.path == "/arflow/placements"][1:]
    assert len(recalls) == 2
    assert {r.headers["Idempotency-Key"] for r in recalls} == {f"invoice-{inv['id']}-recall"}
    assert len({r.body for r in recalls}) == 1, "a retry is not the same request"
    assert len([r for r in fake.accepted if json.loads(r.body)["type"] == "recall"]) == 1
    with Session(h.engine) as s:
        [placement] = s.exec(
            select(AgencyPlacement).where(AgencyPlacement.invoice_id == inv["id"])
        ).all()
    assert placement.status == "recalled"
    assert len(kinds(h, inv["id"], "agency_recalled")) == 1
    [task] = tasks(h, inv["id"], "agency_recall_failed")
    assert task.status == "done"
