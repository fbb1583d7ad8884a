"""The Temporal worker: ``python worker.py`` (settings from ``ARFLOW_*``;
``ARFLOW_TEMPORAL_ADDRESS`` must point at a running Temporal frontend, which ``arflow run``
starts for you on a laptop).

The worker's code is ``activities/worker.py``: it builds the dependencies once and registers
the workflows and their activities. It lives inside a package so that lint-imports checks its
imports (import-linter reads packages, not top-level modules): like every activity, it never
imports ``api/``.
"""

from __future__ import annotations

from activities.worker import ACTIVITY_THREADS, build_worker, main, serve, workflow_runner

__all__ = ["ACTIVITY_THREADS", "build_worker", "main", "serve", "workflow_runner"]

if __name__ == "__main__":
    main()
