"""Reminders through the real SendGrid and Twilio SDKs, sent by the running workflow to local
fake servers: what goes out, what a refusal or a lost answer does, one-click unsubscribe."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from sqlmodel import Session, select

from arflow.customers.unsubscribe import unsubscribe_url
from models import ContactBlock, Task
from tests.conftest import Harness
from tests.faults.fakes import Answer, FakeProvider
from tests.test_providers import twilio_created, twilio_error


async def due_now(h: Harness, channel: str, fallback: list[str] | None = None) -> dict[str, Any]:
    """An invoice whose one step (on ``channel``, then ``fallback``) falls due 1 hour from
    now; the clock is moved to 1 minute past it."""
    pol = await h.policy(
        escalate_after="P30D",
        steps=[{"key": "due", "offset": "PT0S", "channel": channel, "fallback": fallback or []}],
    )
    cust = await h.customer()
    due_at = (await h.env.get_current_time()) + timedelta(hours=1)
    inv = await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        due_at=due_at.isoformat(),
        due_date=due_at.date().isoformat(),
    )
    await h.env.sleep(timedelta(hours=1, minutes=1))
    return inv


async def test_email_goes_out_through_sendgrid_with_the_invoice_copy(
    fakes: tuple[Harness, FakeProvider],
) -> None:
    h, fake = fakes
    fake.answer(Answer(202, headers={"X-Message-Id": "sg-1"}))
    inv = await due_now(h, "email")
    [sent] = fake.requests
    body = sent.json()
    assert sent.path == "/v3/mail/send"
    assert body["personalizations"][0]["to"] == [{"email": "ap@acme.example.com"}]
    assert body["custom_args"]["invoice_id"] == str(inv["id"])
    [attachment] = body["attachments"]
    assert base64.b64decode(attachment["content"]).startswith(b"%PDF")
    html = next(c["value"] for c in body["content"] if c["type"] == "text/html")
    assert inv["pay_url"] in html
    assert (
        body["headers"]["List-Unsubscribe"]
        == f"<{unsubscribe_url(h.settings, inv['customer_id'])}>"
    )
    [row] = h.outbox(inv["id"])
    assert (row.status, row.provider_id) == ("sent", "sg-1")


async def test_refused_email_falls_back_to_sms_through_twilio(
    fakes: tuple[Harness, FakeProvider],
) -> None:
    h, fake = fakes
    fake.answer(
        Answer(400, body=b'{"errors": [{"message": "Does not contain a valid address."}]}'),
        twilio_created(),
    )
    inv = await due_now(h, "email", ["sms"])
    assert [r.path.split("/")[-1] for r in fake.requests] == ["send", "Messages.json"]
    sms = fake.requests[1].form()
    assert sms["To"] == "+4930123456" and inv["pay_url"] in sms["Body"]
    assert "STOP" in sms["Body"]
    assert [(m.channel, m.status) for m in h.outbox(inv["id"])] == [
        ("email", "failed"),
        ("sms", "sent"),
    ]


async def test_server_errors_are_retried_and_send_once(
    fakes: tuple[Harness, FakeProvider],
) -> None:
    h, fake = fakes
    fake.answer(Answer(503), Answer(202, headers={"X-Message-Id": "sg-2"}))
    inv = await due_now(h, "email")
    await h.env.sleep(timedelta(seconds=30))  # the activity retry's backoff
    assert len(fake.requests) == 2
    assert [(m.status, m.provider_id) for m in h.outbox(inv["id"])] == [("sent", "sg-2")]


async def test_a_lost_answer_is_never_resent(fakes: tuple[Harness, FakeProvider]) -> None:
    h, fake = fakes
    fake.answer(Answer(202, delay=3.0))  # longer than provider_timeout_seconds
    inv = await due_now(h, "email")
    await h.env.sleep(timedelta(minutes=5))
    assert len(fake.requests) == 1
    assert [m.status for m in h.outbox(inv["id"])] == ["uncertain"]
    with Session(h.engine) as s:
        tasks = s.exec(select(Task).where(Task.kind == "delivery_uncertain")).all()
    assert [t.invoice_id for t in tasks] == [inv["id"]]


async def test_twilio_stop_code_blocks_sms(fakes: tuple[Harness, FakeProvider]) -> None:
    h, fake = fakes
    fake.answer(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))
    inv = await due_now(h, "sms")
    with Session(h.engine) as s:
        blocks = s.exec(select(ContactBlock).where(ContactBlock.customer_id == inv["customer_id"]))
        assert [(b.channel, b.reason) for b in blocks] == [("sms", "stop")]


async def test_one_click_unsubscribe(fakes: tuple[Harness, FakeProvider]) -> None:
    h, _ = fakes
    cust = await h.customer()
    url = unsubscribe_url(h.settings, cust["id"]).removeprefix(h.settings.public_url)
    page = await h.http.get(url)
    assert page.status_code == 200 and "Unsubscribe" in page.text
    with Session(h.engine) as s:
        assert s.exec(select(ContactBlock)).all() == []  # GET alone changes nothing
    done = await h.http.post(url)
    assert done.status_code == 200
    again = await h.http.post(url)
    assert again.status_code == 200
    with Session(h.engine) as s:
        blocks = s.exec(select(ContactBlock)).all()
    assert [(b.customer_id, b.channel, b.reason) for b in blocks] == [
        (cust["id"], "email", "unsubscribed")
    ]
    forged = await h.http.post("/u/" + base64.urlsafe_b64encode(b"1.0000").decode())
    assert forged.status_code == 404


async def test_a_key_account_hears_from_its_collector_in_person(
    fakes: tuple[Harness, FakeProvider],
) -> None:
    """The key-account segment sends as the collector: the account's assigned collector (from
    the managed list) is the sender and gets the replies; the team's address stays the
    sending address."""
    h, fake = fakes
    fake.answer(Answer(202, headers={"X-Message-Id": "sg-ka"}))
    pol = await h.policy(
        escalate_after="P30D", steps=[{"key": "due", "offset": "PT0S", "channel": "email"}]
    )
    cust = await h.customer()
    listed = await h.post(
        "/v1/collectors", {"name": "Jana Weber", "email": "jana.weber@acme.example"}, "admin"
    )
    assert listed.status_code == 201, listed.text
    resp = await h.http.put(
        f"/v1/customers/{cust['id']}/profile",
        json={"segment": "key_account", "assigned_collector": "jana.weber@acme.example"},
        headers=h.as_role("specialist"),
    )
    assert resp.status_code == 200, resp.text
    due_at = (await h.env.get_current_time()) + timedelta(hours=1)
    await h.invoice(
        cust["id"],
        policy_id=pol["id"],
        due_at=due_at.isoformat(),
        due_date=due_at.date().isoformat(),
    )
    await h.env.sleep(timedelta(hours=1, minutes=1))
    [sent] = fake.requests
    body = sent.json()
    assert body["from"] == {"email": "billing@arflow.example.com", "name": "Jana Weber"}
    assert body["reply_to"] == {"email": "jana.weber@acme.example"}
