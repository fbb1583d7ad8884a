"""``arflow run`` stops every child on every way out, says who holds a port it needs, and
refuses a Temporal store that belongs to another database.

Each test starts the real command as a subprocess on free ports, with its own data folder and
database; its children are found afterwards by a token in their environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import psutil
import pytest
from sqlmodel import Session

from arflow.db import make_engine
from arflow.deployment import StoreMismatch, bind_temporal_store, deployment_id
from arflow.migrate import upgrade
from arflow.policies.service import ensure_default_policy
from arflow.ports import free_port
from models import Customer, Invoice
from tests.conftest import BIN

pytestmark = pytest.mark.timeout(90)

# The demo load made to fail, as a broken API or database would make it fail after the start.
FAILING_DEMO = """
import sys
import arflow.demo

def _fail(*args, **kwargs):
    raise RuntimeError("the demo data cannot be loaded (made to fail by the test)")

arflow.demo.load = _fail
from arflow.cli import main
sys.argv[0] = "arflow"
main()
"""


@dataclass
class Run:
    """One ``arflow run`` of a test: its ports, folders and the token its children carry."""

    tmp: Path
    token: str
    api_port: int
    temporal_port: int
    ui_port: int

    @property
    def log(self) -> Path:
        return self.tmp / "run.log"

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.tmp / 'arflow.db'}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARFLOW_")}
        env.update(
            ARFLOW_DATABASE_URL=self.database_url,
            ARFLOW_DATA_DIR=str(self.data),
            ARFLOW_API_PORT=str(self.api_port),
            ARFLOW_WORKER_METRICS_PORT="0",
            ARFLOW_LOG_FORMAT="text",
            ARFLOW_RUN_TEST_TOKEN=self.token,
        )
        return env

    def start(self, *args: str, failing_demo: bool = False) -> subprocess.Popen[bytes]:
        ports = ["--temporal-port", str(self.temporal_port), "--ui-port", str(self.ui_port)]
        if failing_demo:
            cmd = [sys.executable, "-c", FAILING_DEMO, "run", *ports, *args]
        else:
            cmd = [str(BIN / "arflow"), "run", *ports, *args]
        # Output to a file, not a pipe: orphans would hold a pipe open after the run exits.
        with self.log.open("w") as out:
            return subprocess.Popen(
                cmd, env=self.env(), cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT
            )

    def processes(self) -> list[psutil.Process]:
        """Every live process started by this run (they inherit the token)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("ARFLOW_RUN_TEST_TOKEN") == self.token:
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def ports_in_use(self) -> list[int]:
        taken = []
        for port in (self.api_port, self.temporal_port, self.ui_port):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    taken.append(port)
        return taken

    def wait_healthy(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"arflow run exited early:\n{self.log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.api_port}/healthz", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("the API did not answer")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path, uuid.uuid4().hex, free_port(), free_port(), free_port())
    yield r
    for proc in r.processes():  # what a failed test left behind (the orphans of the bug)
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def _finish(run: Run, proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    """The exit code and output of ``arflow run``."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"arflow run did not exit within {timeout} s:\n{run.log.read_text()}"
        ) from None
    return proc.returncode, run.log.read_text()


def _assert_all_gone(run: Run) -> None:
    deadline = time.monotonic() + 5  # a process killed just now may take a moment to vanish
    while (left := run.processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [" ".join(p.cmdline()) for p in left]
    assert run.ports_in_use() == []


def test_a_failing_demo_load_stops_every_child_and_frees_the_ports(run: Run) -> None:
    code, out = _finish(run, run.start(failing_demo=True))
    _assert_all_gone(run)  # so the next run finds its ports free
    assert code == 1, out
    assert "arflow run failed" in out and "the demo data cannot be loaded" in out, out
    assert "Traceback" not in out, out


def test_sigterm_during_a_run_stops_every_child(run: Run) -> None:
    proc = run.start("--no-demo")
    run.wait_healthy(proc)
    children = [p for p in run.processes() if p.pid != proc.pid]
    assert len(children) >= 3, [p.cmdline() for p in children]  # dev server, worker, API
    proc.send_signal(signal.SIGTERM)
    code, out = _finish(run, proc)
    assert code == 0, out
    assert "SIGTERM: stopping" in out and "Traceback" not in out, out
    _assert_all_gone(run)


def test_a_child_that_dies_stops_the_others(run: Run) -> None:
    proc = run.start("--no-demo")
    run.wait_healthy(proc)
    [worker] = [p for p in run.processes() if any("worker.py" in a for a in p.cmdline())]
    worker.kill()
    code, out = _finish(run, proc, timeout=40)
    _assert_all_gone(run)
    assert code == 1, out
    assert "the worker exited with -9; stopping" in " ".join(out.split()), out


def test_a_port_in_use_names_its_holder_and_starts_nothing(run: Run) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", run.api_port))
        held.listen()
        code, out = _finish(run, run.start("--no-demo"), timeout=30)
        assert code == 2, out
        flat = " ".join(out.split())
        assert f"API port {run.api_port}" in flat, out
        assert f"pid {os.getpid()}" in flat, out  # this test process holds it
        assert "Traceback" not in out, out
        _assert_all_gone_but(run, run.api_port)


def _assert_all_gone_but(run: Run, held: int) -> None:
    assert run.processes() == []
    assert run.ports_in_use() == [held]


# -- the Temporal store belongs to its database ------------------------------------------------


def _invoice(engine_url: str) -> None:
    with Session(make_engine(engine_url)) as s:
        cust = Customer(external_id="C-1", name="Acme", timezone="Europe/Berlin")
        s.add(cust)
        s.flush()
        policy = ensure_default_policy(s)
        assert cust.id is not None and policy.id is not None
        s.add(
            Invoice(
                external_id="I-1",
                number="INV-1",
                customer_id=cust.id,
                policy_id=policy.id,
                request_hash="0" * 64,
                currency="EUR",
                amount_minor=1000,
                balance_minor=1000,
                issued_on=date(2026, 1, 1),
                due_date=date(2026, 2, 1),
                due_at=datetime(2026, 2, 1, tzinfo=UTC),
            )
        )
        s.commit()


def test_a_fresh_database_beside_another_databases_store_is_refused(run: Run) -> None:
    """The store (and its marker) of a database that was deleted; a new database: refused
    before anything starts, with what to do."""
    run.data.mkdir(parents=True)
    (run.data / "temporal.db").write_bytes(b"the old store")
    (run.data / "temporal.db.deployment").write_text(uuid.uuid4().hex + "\n")
    code, out = _finish(run, run.start("--no-demo"), timeout=40)
    flat = " ".join(out.split())
    assert code == 2, out
    assert "belongs to another database" in flat, out
    assert "remove" in flat and "restore the database" in flat, out
    _assert_all_gone(run)


def test_a_store_from_before_markers_beside_an_empty_database_is_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'arflow.db'}")
    upgrade(engine)
    (tmp_path / "temporal.db").write_bytes(b"old")
    with pytest.raises(StoreMismatch, match="no invoices"):
        bind_temporal_store(engine, tmp_path)
    assert not (tmp_path / "temporal.db.deployment").exists()


def test_an_existing_database_keeps_its_store_and_its_ids(tmp_path: Path) -> None:
    """An installation from before the marker (invoices, a store): adopted, nothing renamed;
    from then on only this database may use the store."""
    url = f"sqlite:///{tmp_path / 'arflow.db'}"
    engine = make_engine(url)
    upgrade(engine)
    _invoice(url)
    (tmp_path / "temporal.db").write_bytes(b"old")
    ours = bind_temporal_store(engine, tmp_path)
    assert ours == deployment_id(engine)
    assert (tmp_path / "temporal.db.deployment").read_text().strip() == ours
    assert bind_temporal_store(engine, tmp_path) == ours  # the next start is fine
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    assert deployment_id(other) != ours
    with pytest.raises(StoreMismatch, match="belongs to another database"):
        bind_temporal_store(other, tmp_path)


def test_a_new_store_is_bound_to_its_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'arflow.db'}")
    upgrade(engine)
    ours = bind_temporal_store(engine, tmp_path / "data")
    assert (tmp_path / "data" / "temporal.db.deployment").read_text().strip() == ours


def test_a_removed_store_starts_afresh_whatever_its_marker_said(tmp_path: Path) -> None:
    """The remedy the refusal names: remove the store (the marker may stay behind)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'arflow.db'}")
    upgrade(engine)
    (tmp_path / "temporal.db.deployment").write_text("another-database\n")
    ours = bind_temporal_store(engine, tmp_path)
    assert (tmp_path / "temporal.db.deployment").read_text().strip() == ours
