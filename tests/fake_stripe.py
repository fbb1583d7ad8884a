"""A fake Stripe API for the real ``stripe`` SDK: a local ``http.server`` in a thread on a free
port (``ARFLOW_STRIPE_API_BASE`` points at ``FakeStripe.url``).

It implements what ``create_checkout`` calls (``POST /v1/checkout/sessions``, form-encoded as
the SDK sends it, with Stripe's idempotency: the same ``Idempotency-Key`` answers the same
session; ``GET /v1/checkout/sessions/{id}``) and a hosted payment page: ``GET /pay/{id}``
marks the session paid and redirects (303) to its ``success_url``, as Checkout does after a
card payment. ``event``, ``complete``, ``refunded`` and ``disputed`` build the webhook events
Stripe would send; ``signed`` signs one as Stripe does (``Stripe-Signature: t=..,v1=..``, an
HMAC-SHA256 of ``f"{t}.{payload}"`` with the endpoint's secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx

SECRET = "whsec_test_0123456789abcdefghijklmnopqrstuv"
API_KEY = "sk_test_fake_0123456789abcdef"


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``line_items[0][price_data][currency]=eur``) back into a
    nested dict (numeric keys stay dict keys: ``items()`` lists them in order)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "idempotency-key"), None)

    def line_items(self) -> list[dict[str, Any]]:
        items = self.form.get("line_items", {})
        return [items[k] for k in sorted(items, key=int)]


class FakeStripe:
    """The fake API: ``requests`` records what the SDK sent; ``sessions`` what it created."""

    def __init__(self, webhook_url: str | None = None, secret: str = SECRET) -> None:
        """``webhook_url`` set (an app served on a real port, as in the browser tests): paying
        on the hosted page also sends the signed ``checkout.session.completed`` there before
        the redirect, as Stripe would; ``deliveries`` keeps each answer's status code."""
        self.webhook_url = webhook_url
        self.secret = secret
        self.deliveries: list[int] = []
        self.requests: list[Request] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                got = Request("POST", self.path, dict(self.headers.items()), _nest(parse_qsl(body)))
                if self.path == "/v1/checkout/sessions":
                    self._json(200, fake._create(got))
                else:
                    self._json(404, {"error": {"type": "invalid_request_error"}})

            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(Request("GET", self.path, dict(self.headers.items())))
                api = re.fullmatch(r"/v1/checkout/sessions/([\w]+)", self.path)
                page = re.fullmatch(r"/pay/([\w]+)", self.path)
                if api and api.group(1) in fake.sessions:
                    self._json(200, fake.sessions[api.group(1)])
                elif page and page.group(1) in fake.sessions:
                    target = fake.pay(page.group(1))
                    if fake.webhook_url:
                        fake.send(fake.complete(page.group(1)))
                    self.send_response(303)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {"error": {"type": "invalid_request_error"}})

            def _json(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def creates(self) -> list[Request]:
        """The ``POST /v1/checkout/sessions`` requests, in order."""
        return [r for r in self.requests if r.path == "/v1/checkout/sessions"]

    def _create(self, got: Request) -> dict[str, Any]:
        with self.lock:
            self.requests.append(got)
            key = got.idempotency_key
            if key and key in self.by_key:
                return self.sessions[self.by_key[key]]
            session_id = f"cs_test_{uuid.uuid4().hex[:24]}"
            items = got.line_items()
            form = got.form
            session = {
                "id": session_id,
                "object": "checkout.session",
                "mode": form.get("mode"),
                "status": "open",
                "payment_status": "unpaid",
                "payment_intent": None,
                "amount_total": sum(int(i["price_data"]["unit_amount"]) for i in items),
                "currency": items[0]["price_data"]["currency"] if items else None,
                "metadata": form.get("metadata", {}),
                "client_reference_id": form.get("client_reference_id"),
                "success_url": form.get("success_url"),
                "cancel_url": form.get("cancel_url"),
                "url": f"{self.url}/pay/{session_id}",
                "created": int(time.time()),
            }
            self.sessions[session_id] = session
            if key:
                self.by_key[key] = session_id
            return session

    def pay(self, session_id: str) -> str:
        """The customer pays on the hosted page: the session is complete and paid (with a
        payment intent and its charge); returns the success URL it redirects to."""
        session = self.sessions[session_id]
        if session["payment_status"] != "paid":
            session.update(
                status="complete",
                payment_status="paid",
                payment_intent=f"pi_test_{uuid.uuid4().hex[:24]}",
                charge=f"ch_test_{uuid.uuid4().hex[:24]}",
            )
        url = str(session["success_url"])
        return url.replace("{CHECKOUT_SESSION_ID}", session_id)

    def send(self, body: dict[str, Any]) -> int:
        """POST ``body`` signed to ``webhook_url``; the answer's status code."""
        assert self.webhook_url
        raw, headers = signed(body, self.secret)
        status = httpx.post(self.webhook_url, content=raw, headers=headers, timeout=30).status_code
        self.deliveries.append(status)
        return status

    # -- events ---------------------------------------------------------------------------

    def complete(self, session_id: str) -> dict[str, Any]:
        """The ``checkout.session.completed`` event of a paid session (paid here if not yet)."""
        self.pay(session_id)
        obj = {k: v for k, v in self.sessions[session_id].items() if k != "charge"}
        return event("checkout.session.completed", obj)

    def refunded(self, session_id: str, amount_refunded: int) -> dict[str, Any]:
        """``charge.refunded`` of the session's charge, ``amount_refunded`` in total so far."""
        session = self.sessions[session_id]
        charge = {
            "id": session["charge"],
            "object": "charge",
            "amount": session["amount_total"],
            "amount_refunded": amount_refunded,
            "currency": session["currency"],
            "payment_intent": session["payment_intent"],
            "refunded": amount_refunded >= session["amount_total"],
        }
        return event("charge.refunded", charge)

    def disputed(self, session_id: str, amount: int, dispute_id: str = "") -> dict[str, Any]:
        session = self.sessions[session_id]
        dispute = {
            "id": dispute_id or f"dp_test_{uuid.uuid4().hex[:24]}",
            "object": "dispute",
            "amount": amount,
            "currency": session["currency"],
            "charge": session["charge"],
            "payment_intent": session["payment_intent"],
            "reason": "fraudulent",
            "status": "needs_response",
        }
        return event("charge.dispute.created", dispute)


def event(kind: str, obj: dict[str, Any], event_id: str = "") -> dict[str, Any]:
    """A Stripe event around ``obj`` (each call a new event id, as Stripe's redelivery of a
    fact in another event would have)."""
    return {
        "id": event_id or f"evt_test_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2025-01-01",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": kind,
        "data": {"object": obj},
    }


def signed(
    body: Any, secret: str = SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The event's bytes and headers, signed as Stripe signs: sent several times, every copy
    is the same delivery (as Stripe's retries are)."""
    raw = json.dumps(body).encode()
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return raw, {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}
