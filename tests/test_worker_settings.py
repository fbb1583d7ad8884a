"""The worker's sticky cache and workflow-task slots come from the settings (bench/README.md,
"100,000 open invoices", measures the memory they bound)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from activities.worker import build_worker
from arflow.config import Settings


async def test_worker_takes_cache_and_task_slots_from_settings(
    ts_env: WorkflowEnvironment, sqlite_engine: Engine
) -> None:
    settings = Settings(
        environment="test",
        database_url=str(sqlite_engine.url),
        worker_max_cached_workflows=250,
        worker_max_concurrent_workflow_tasks=20,
    )
    worker = build_worker(ts_env.client, settings, sqlite_engine, task_queue=f"tq-{uuid.uuid4()}")
    config = worker.config()
    assert config.get("max_cached_workflows") == 250
    assert config.get("max_concurrent_workflow_tasks") == 20


def test_defaults_are_the_sdks_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("WORKER_MAX_CACHED_WORKFLOWS", "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS"):
        monkeypatch.delenv(f"ARFLOW_{name}", raising=False)
    defaults = Settings(environment="test")
    assert (
        defaults.worker_max_cached_workflows,
        defaults.worker_max_concurrent_workflow_tasks,
    ) == (
        1000,
        100,
    )
    monkeypatch.setenv("ARFLOW_WORKER_MAX_CACHED_WORKFLOWS", "300")
    assert Settings(environment="test").worker_max_cached_workflows == 300
