"""How every bench ends: its status as the exit code, and its report as JSON on request."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn


def write_json(path: str | None, report: dict[str, Any]) -> None:
    """``--json PATH``: the report, also as a file."""
    if path:
        Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {path}")


def exit_with(body: Callable[[], int]) -> NoReturn:
    """Run a bench's main ``body`` and exit with its status: 1 when it raised (the traceback
    printed), 130 on Ctrl-C. Through ``os._exit``: temporalio can abort the interpreter at
    exit (sdk-python #300)."""
    try:
        status = body()
    except KeyboardInterrupt:
        status = 130
    except Exception:  # noqa: BLE001 - any failure is the bench's status
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
