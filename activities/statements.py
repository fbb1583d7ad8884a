"""The inbox import activity: every file in the statement inbox folder, imported once.

A file is moved to ``processed/`` once imported, or to ``failed/`` with a ``.error.txt`` beside
it when it cannot be read at all. A crash between import and move imports the file again on
the retry, which finds every line already taken (duplicates) and moves it then. CSV files need
a saved mapping, named in the file name: ``anything@mapping-name.csv``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity

from arflow.config import Settings
from arflow.db import SessionFactory
from arflow.errors import DomainError
from arflow.payments.reconcile import ImportResult, store_statement
from arflow.payments.service import deliver_all, redeliver
from workflows.types import InboxFile, InboxResult

log = logging.getLogger("arflow.inbox")


def mapping_of(path: Path) -> str | None:
    """``bank-export@sparkasse.csv`` -> ``sparkasse``."""
    stem = path.stem
    return stem.rpartition("@")[2] if "@" in stem else None


class StatementActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    def _store(self, path: Path, content: bytes) -> ImportResult:
        with self.sessions() as session:
            return store_statement(
                session,
                path.name,
                content,
                mapping=mapping_of(path),
                source="inbox",
                actor="schedule:statement-inbox",
            )

    @activity.defn(name="import_inbox")
    async def import_inbox(self) -> InboxResult:
        folder = Path(self.settings.inbox_folder)
        folder.mkdir(parents=True, exist_ok=True)
        client = activity.client()
        result = InboxResult()
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name[0] != "."):
            activity.heartbeat(path.name)
            content = path.read_bytes()
            try:
                imported = await asyncio.to_thread(self._store, path, content)
            except DomainError as exc:
                log.warning("statement %s failed: %s", path.name, exc.message)
                _move(path, folder / "failed").with_suffix(".error.txt").write_text(
                    exc.message + "\n"
                )
                result.files.append(InboxFile(path.name, "failed", error=exc.message))
                continue
            with self.sessions() as session:
                await deliver_all(session, client, self.settings, imported.payment_ids)
            _move(path, folder / "processed")
            result.files.append(
                InboxFile(path.name, "imported", imported.import_id, imported.counts)
            )
        # Payments stored earlier whose delivery failed (Temporal was down) go out now.
        with self.sessions() as session:
            result.redelivered = len(await redeliver(session, client, self.settings))
        return result

    def all(self) -> list[object]:
        return [self.import_inbox]


def _move(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` under a time-stamped name (files never overwrite)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = folder / f"{stamp}-{path.name}"
    path.rename(target)
    return target
