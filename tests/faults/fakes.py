"""Fake providers: a local ``http.server`` that the real SendGrid and Twilio SDKs (and our
agency webhook adapter) talk to, recording each request and answering as the test tells it.

``FakeProvider`` answers as told, then 200; an answer can come late (after the client's
timeout), or the server can read the request and hang up (FIN) or reset the connection
(``SO_LINGER`` 0: the client sees ``ECONNRESET``, not a clean close). The last three are the
dangerous ones: the provider had the whole request and may have acted on it.

``MisbehavingProvider`` (the fault suite's) also keeps what ``Idempotency-Key`` promises, as
an agency (the IETF draft "The Idempotency-Key HTTP Header Field"): a request with a key it
has seen gets the first answer again and places nothing new, and the same key with a
different body is refused with 422, so a test sees both a doubled placement and a retry that
is not the same request.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass
class Answer:
    """How to answer one request: a status (with body and headers), or misbehave."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (past the client's timeout: no answer)
    hang_up: bool = False  # read the whole request, then close without answering
    reset: bool = False  # read the whole request, then reset the connection

    @property
    def cuts_off(self) -> bool:
        return self.hang_up or self.reset

    @property
    def accepts(self) -> bool:
        """True when the provider takes the request (it may act on it even if the client
        never hears so): a 2xx, however late, or a cut-off after reading it all."""
        return self.cuts_off or 200 <= self.status < 300


def server_error() -> Answer:
    return Answer(500, b'{"errors": [{"message": "internal error"}]}')


def too_many(retry_after: int) -> Answer:
    return Answer(
        429,
        b'{"code": 20429, "message": "Too Many Requests", "status": 429}',
        {"Content-Type": "application/json", "Retry-After": str(retry_after)},
    )


def too_late(answer: Answer, delay: float) -> Answer:
    return Answer(answer.status, answer.body, answer.headers, delay=delay)


def reset() -> Answer:
    return Answer(reset=True)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # on arrival

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


class FakeProvider:
    """``http.server`` in a thread on a free port; ``answer`` queues how the next requests are
    answered (then 200), ``requests`` records them."""

    keep_alive = False  # HTTP/1.1 keep-alive, as the real APIs do

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: list[Answer] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if fake.keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = fake._take(Received("POST", self.path, dict(self.headers.items()), body))
                if answer.reset:
                    self._reset()
                    return
                if answer.hang_up:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    self.close_connection = True  # the client gave up waiting

            def _reset(self) -> None:
                """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
                self.close_connection = True
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.rfile.close()  # the last reference besides the socket's own
                self.connection.close()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A kept-alive connection holds its thread: closing must not wait for it.
        self.server.daemon_threads = self.keep_alive
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def _take(self, got: Received) -> Answer:
        """Record ``got``; how to answer it."""
        self.requests.append(got)
        return self.answers.pop(0) if self.answers else Answer()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MisbehavingProvider(FakeProvider):
    """A ``FakeProvider`` that answers ``default`` once the queued answers are used, over
    keep-alive connections. ``accepted`` counts what it took (sent, placed): a request it
    answered 2xx or cut off after reading, once per ``Idempotency-Key``."""

    keep_alive = True

    def __init__(self, default: Answer | None = None) -> None:
        self.default = default or Answer()
        self.accepted: list[Received] = []
        self.by_key: dict[str, tuple[bytes, Answer]] = {}
        self.lock = threading.Lock()
        super().__init__()

    def _take(self, got: Received) -> Answer:
        with self.lock:
            self.requests.append(got)
            key = got.headers.get(IDEMPOTENCY_HEADER)
            if key is not None and key in self.by_key:
                first_body, first_answer = self.by_key[key]
                if first_body != got.body:
                    return Answer(422, b'{"error": "idempotency key reused with another body"}')
                return first_answer  # done already: the same answer again, nothing done twice
            answer = self.answers.pop(0) if self.answers else self.default
            if answer.accepts:
                self.accepted.append(got)
                if key is not None:  # what it would have answered, on time
                    kept = self.default if answer.cuts_off else answer
                    self.by_key[key] = (got.body, Answer(kept.status, kept.body, kept.headers))
            return answer
