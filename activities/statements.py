"""The inbox import activity: every file in the statement inbox folder, imported once (see
``arflow.payments.inbox``: which files, where they go once imported or rejected). The
activity keeps the heartbeats and the delivery of the stored payments to their workflows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import activity

from arflow.config import Settings
from arflow.db import SessionFactory
from arflow.errors import DomainError
from arflow.payments import inbox
from arflow.payments.reconcile import ImportResult
from arflow.payments.service import deliver_all, redeliver
from workflows.types import InboxFile, InboxResult


class StatementActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    def _store(self, path: Path, content: bytes) -> ImportResult:
        with self.sessions() as session:
            return inbox.import_file(session, path, content, self.settings.our_ibans)

    @activity.defn(name="import_inbox")
    async def import_inbox(self) -> InboxResult:
        folder = Path(self.settings.inbox_folder)
        files = inbox.inbox_files(folder)
        client = activity.client()
        result = InboxResult()
        for path in files:
            activity.heartbeat(path.name)
            content = path.read_bytes()
            try:
                imported = await asyncio.to_thread(self._store, path, content)
            except DomainError as exc:
                inbox.reject(folder, path, exc.message)
                result.files.append(InboxFile(path.name, "failed", error=exc.message))
                continue
            with self.sessions() as session:
                await deliver_all(session, client, self.settings, imported.payment_ids)
            inbox.processed(folder, path)
            result.files.append(
                InboxFile(path.name, "imported", imported.import_id, imported.counts)
            )
        # Payments stored earlier whose delivery failed (Temporal was down) go out now.
        with self.sessions() as session:
            result.redelivered = len(await redeliver(session, client, self.settings))
        return result

    def all(self) -> list[object]:
        return [self.import_inbox]
