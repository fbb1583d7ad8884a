"""The payload codec (issue 15): free text is encrypted before Temporal stores it.

Unit tests of ``arflow.codec`` (round trip, key rotation, unknown keys, pass-through of
unencrypted payloads), of the key settings, of the ``/codec`` endpoints Temporal's Web UI and
CLI call, and an end-to-end run on the time-skipping server whose history, read without the
codec, holds neither the dispute's text nor the customer's name or email.
"""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from arflow.codec import (
    ENCODING,
    KEY_ID,
    CodecDecryptFailed,
    CodecKeyUnknown,
    data_converter,
)
from arflow.config import Settings
from tests.conftest import (
    API_KEYS,
    CODEC_KEY_NEW,
    CODEC_KEY_OLD,
    CODEC_KEYS,
    Harness,
    harness,
)
from workflows.invoice import InvoiceWorkflow
from workflows.types import OpenDisputeRequest

REASON = "Lieferung beschädigt, Max Mustermann"
NAME = "Max Mustermann"
EMAIL = "max.mustermann@example.com"
CSRF_IN_FORM = re.compile(r'name="csrf_token" value="([^"]+)"')


def converter(keys: str) -> DataConverter:
    return data_converter(Settings(environment="test", codec_keys=keys))


def request() -> OpenDisputeRequest:
    return OpenDisputeRequest(reason=REASON, actor="specialist:abc")


def plain_forms(text: str) -> list[bytes]:
    """How ``text`` can stand in payload bytes: UTF-8, and JSON's ``\\u`` escapes."""
    escaped = text.encode("ascii", "backslashreplace").decode().replace("\\x", "\\u00")
    return [text.encode(), escaped.encode(), b"Mustermann"]


# -- the codec ----------------------------------------------------------------------------


async def test_round_trip_encrypts_and_gives_back_the_value() -> None:
    conv = converter(CODEC_KEYS)
    (payload,) = await conv.encode([request()])
    assert payload.metadata["encoding"] == ENCODING
    assert payload.metadata[KEY_ID] == b"k1"  # the first key encrypts
    assert not any(form in payload.SerializeToString() for form in plain_forms(REASON))
    assert (await conv.decode([payload], [OpenDisputeRequest])) == [request()]
    (again,) = await conv.encode([request()])
    assert again.data != payload.data  # a fresh nonce each time


async def test_rotation_old_payloads_decode_new_ones_use_the_new_key() -> None:
    (old,) = await converter(CODEC_KEY_OLD).encode([request()])
    assert old.metadata[KEY_ID] == b"k0"
    rotated = converter(CODEC_KEYS)  # k1 added in front of k0
    assert (await rotated.decode([old], [OpenDisputeRequest])) == [request()]
    (new,) = await rotated.encode([request()])
    assert new.metadata[KEY_ID] == b"k1"


async def test_unknown_key_id_is_a_clear_error() -> None:
    (old,) = await converter(CODEC_KEY_OLD).encode([request()])
    with pytest.raises(CodecKeyUnknown, match=r"key id 'k0'.*not in ARFLOW_CODEC_KEYS"):
        await converter(CODEC_KEY_NEW).decode([old], [OpenDisputeRequest])


async def test_altered_ciphertext_does_not_decrypt() -> None:
    (payload,) = await converter(CODEC_KEYS).encode([request()])
    payload.data = payload.data[:-1] + bytes([payload.data[-1] ^ 1])
    with pytest.raises(CodecDecryptFailed, match="'k1'"):
        await converter(CODEC_KEYS).decode([payload], [OpenDisputeRequest])


async def test_unencrypted_payloads_pass_through() -> None:
    """Histories written before the codec was switched on still decode."""
    (plain,) = await DataConverter.default.encode([request()])
    codec = converter(CODEC_KEYS).payload_codec
    assert codec is not None
    assert (await codec.decode([plain])) == [plain]
    assert (await converter(CODEC_KEYS).decode([plain], [OpenDisputeRequest])) == [request()]


def test_no_keys_is_the_default_converter() -> None:
    assert converter("") is DataConverter.default


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("k1", "kid:base64key"),
        ("k1:not base64!", "'k1' is not base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "'k1' has 5 bytes"),
        (f"{CODEC_KEY_OLD},{CODEC_KEY_OLD}", "'k0' twice"),
    ],
)
def test_malformed_keys_refuse_to_start(keys: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(environment="test", codec_keys=keys)


def test_production_needs_a_codec_key() -> None:
    secrets: dict[str, Any] = {
        "webhook_secret": "w" * 32,
        "api_keys": f"{'k' * 32}:admin",
        "session_secret": "s" * 32,
        "link_secret": "l" * 32,
    }
    with pytest.raises(ValidationError, match="ARFLOW_CODEC_KEYS must be set"):
        Settings(environment="production", **secrets)
    assert Settings(environment="production", codec_keys=CODEC_KEYS, **secrets).codec_keys
    assert CODEC_KEYS.split(",")[0].split(":")[1] not in repr(
        Settings(environment="test", codec_keys=CODEC_KEYS)
    )


# -- the /codec endpoints (Temporal's remote codec protocol) ------------------------------


def as_json(payloads: list[Payload]) -> dict[str, Any]:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


def from_json(body: dict[str, Any]) -> list[Payload]:
    return [
        Payload(
            metadata={k: base64.b64decode(v) for k, v in p["metadata"].items()},
            data=base64.b64decode(p["data"]),
        )
        for p in body["payloads"]
    ]


@pytest.fixture
async def hc(ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path) -> Any:
    """The harness with the codec on (keys k1, k0)."""
    async with harness(ts_env, sqlite_engine, tmp_path, codec_keys=CODEC_KEYS) as h:
        yield h


async def test_codec_endpoints_need_an_admin(hc: Harness) -> None:
    body = as_json(await DataConverter.default.encode([request()]))
    for path in ("/codec/decode", "/codec/encode"):
        missing = await hc.http.post(path, json=body)
        assert missing.status_code == 401, missing.text
        assert missing.json()["error"]["code"]
        specialist = await hc.post(path, body, role="specialist")
        assert specialist.status_code == 403, specialist.text


async def test_codec_decode_gives_the_original_payload(hc: Harness) -> None:
    (plain,) = await DataConverter.default.encode([request()])
    (sealed,) = await converter(CODEC_KEY_OLD).encode([request()])  # an older key, still held
    resp = await hc.http.post(
        "/codec/decode",
        json=as_json([sealed, plain]),
        headers=hc.as_role("admin") | {"X-Namespace": "default"},
    )
    assert resp.status_code == 200, resp.text
    assert from_json(resp.json()) == [plain, plain]

    encoded = await hc.post("/codec/encode", as_json([plain]), role="admin")
    assert encoded.status_code == 200, encoded.text
    (again,) = from_json(encoded.json())
    assert again.metadata[KEY_ID] == b"k1"
    assert (await converter(CODEC_KEYS).decode([again], [OpenDisputeRequest])) == [request()]


async def test_web_ui_path_takes_an_admin_session_cookie(hc: Harness) -> None:
    """The Web UI cannot send a fixed bearer key: it sends the dashboard's session cookie
    (path /app) to /app/codec; a viewer's session is refused, /codec still wants the key."""
    (sealed,) = await converter(CODEC_KEYS).encode([request()])
    (plain,) = await DataConverter.default.encode([request()])
    assert (await hc.http.post("/app/codec/decode", json=as_json([sealed]))).status_code == 401
    for role, status in (("viewer", 403), ("admin", 200)):
        hc.http.cookies.clear()
        form = await hc.http.get("/app/login")
        token = CSRF_IN_FORM.search(form.text)
        assert token, form.text
        login = await hc.http.post(
            "/app/login", data={"api_key": API_KEYS[role], "csrf_token": token[1]}
        )
        assert login.status_code == 303, login.text
        resp = await hc.http.post("/app/codec/decode", json=as_json([sealed]))
        assert resp.status_code == status, resp.text
    assert from_json(resp.json()) == [plain]
    assert (await hc.http.post("/codec/decode", json=as_json([sealed]))).status_code == 401


async def test_codec_endpoint_refusals_are_4xx_with_the_error_body(hc: Harness) -> None:
    (unknown,) = await converter("k9:" + base64.b64encode(bytes(32)).decode()).encode([request()])
    resp = await hc.post("/codec/decode", as_json([unknown]), role="admin")
    assert resp.status_code == 422, resp.text
    assert "'k9'" in resp.json()["error"]["message"]
    bad = await hc.post("/codec/decode", {"payloads": [{"data": "%%%"}]}, role="admin")
    assert bad.status_code == 422, bad.text
    other = await hc.http.post(
        "/codec/decode",
        json={"payloads": []},
        headers=hc.as_role("admin") | {"X-Namespace": "someone-else"},
    )
    assert other.status_code == 400, other.text
    assert other.json()["error"]["code"] == "wrong_namespace"


async def test_codec_endpoint_allows_the_web_ui_origin_only(hc: Harness) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    ui = await hc.http.options(
        "/codec/decode", headers=preflight | {"Origin": "http://127.0.0.1:8233"}
    )
    assert ui.status_code == 200, ui.text
    assert ui.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
    assert ui.headers["access-control-allow-credentials"] == "true"
    other = await hc.http.options(
        "/codec/decode", headers=preflight | {"Origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
    api = await hc.http.options(
        "/v1/invoices", headers=preflight | {"Origin": "http://127.0.0.1:8233"}
    )
    assert "access-control-allow-origin" not in api.headers  # CORS for /codec/ only


# -- end to end: what Temporal stores -----------------------------------------------------


def leaks(history: WorkflowHistory) -> list[str]:
    """The personal data found anywhere in the history's events, as stored."""
    found = []
    for event in history.events:
        raw = event.SerializeToString()
        for text in (REASON, NAME, EMAIL):
            if any(form in raw for form in plain_forms(text)):
                found.append(f"{text!r} in event {event.event_id} ({event.event_type})")
    return found


async def test_history_holds_no_personal_data_with_the_codec_on(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine, tmp_path: Path
) -> None:
    async with harness(ts_env, sqlite_engine, tmp_path, codec_keys=CODEC_KEYS) as h:
        cust = await h.customer(name=NAME, email=EMAIL)
        inv = await h.invoice(cust["id"])
        await ts_env.sleep(timedelta(days=33))  # reminders out: activities ran
        opened = await h.post(f"/v1/invoices/{inv['id']}/disputes", {"reason": REASON})
        assert opened.status_code == 200, opened.text
        twice = await h.post(f"/v1/invoices/{inv['id']}/disputes", {"reason": REASON})
        assert twice.status_code == 409  # the workflow's refusal reads through the codec
        assert "already has an open dispute" in twice.json()["error"]["message"]
        dispute_id = (await h.get(f"/v1/invoices/{inv['id']}/disputes")).json()[0]["id"]
        resolved = await h.post(
            f"/v1/invoices/{inv['id']}/disputes/{dispute_id}/resolve",
            {"outcome": "rejected", "note": f"Rückruf bei {NAME}: Ware war in Ordnung"},
        )
        assert resolved.status_code == 200, resolved.text
        await ts_env.sleep(timedelta(minutes=5))

        raw = await ts_env.client.get_workflow_handle(inv["workflow_id"]).fetch_history()
        assert [
            e.event_id
            for e in raw.events
            if e.HasField("workflow_execution_update_accepted_event_attributes")
        ], "the dispute went to the workflow as an update"
        assert leaks(raw) == []

        # With the codec the update's input reads as sent.
        accepted = next(
            e.workflow_execution_update_accepted_event_attributes
            for e in raw.events
            if e.HasField("workflow_execution_update_accepted_event_attributes")
            and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            == "open_dispute"
        )
        (decoded,) = await h.client.data_converter.decode(
            accepted.accepted_request.input.args.payloads, [OpenDisputeRequest]
        )
        assert decoded.reason == REASON

        # The admin's history view decrypts too (the actor of each update is shown).
        view = await h.get(f"/v1/invoices/{inv['id']}/history", role="admin")
        assert view.status_code == 200, view.text
        updates = [e for e in view.json()["events"] if e["kind"] == "update_accepted"]
        assert updates and all(e["details"].get("actor") for e in updates), updates

        # The history replays with the codec's converter, and only with it.
        replayer = Replayer(workflows=[InvoiceWorkflow], data_converter=h.client.data_converter)
        assert (await replayer.replay_workflow(raw)).replay_failure is None
        blind = Replayer(workflows=[InvoiceWorkflow])
        assert (await blind.replay_workflow(raw, raise_on_replay_failure=False)).replay_failure
