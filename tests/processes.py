"""The processes a test starts, kills and starts again as production runs them: the worker
(``python worker.py``) and the Temporal dev server on a file store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from temporalio.client import Client

from arflow.cli import FILE_STORE_ARGS, SEARCH_ATTRIBUTE_ARGS
from tests.conftest import ROOT, TEMPORAL_CLI, Harness


def start_worker(h: Harness, log: Path) -> subprocess.Popen[bytes]:
    """``python worker.py`` as production runs it (its default sandbox settings), on the
    harness's database, server and task queue."""
    env = dict(os.environ)
    env.update(
        ARFLOW_ENVIRONMENT="test",
        ARFLOW_DATABASE_URL=h.settings.database_url,
        ARFLOW_TEMPORAL_ADDRESS=h.client.service_client.config.target_host,
        ARFLOW_TASK_QUEUE=h.settings.task_queue,
        ARFLOW_WORKFLOW_ID_PREFIX=h.settings.workflow_id_prefix,
        ARFLOW_DATA_DIR=h.settings.data_dir,
    )
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py")], env=env, stdout=out, stderr=out
    )


def start_dev_server(db_file: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``temporal server start-dev`` on a file store, as ``arflow run`` starts it: started
    again on the same file, it resumes its workflows and timers."""
    out = log.open("ab")
    return subprocess.Popen(
        [
            str(TEMPORAL_CLI),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--headless",
            "--db-filename",
            str(db_file),
            *FILE_STORE_ARGS,
            "--log-level",
            "error",
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
            *SEARCH_ATTRIBUTE_ARGS,
        ],
        stdout=out,
        stderr=out,
    )


async def connect(address: str, timeout: float = 30) -> Client:
    """A client of the server at ``address``, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no shutdown of any kind, as a power cut."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=20)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown), SIGKILL if it takes over 20 seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill(proc)
