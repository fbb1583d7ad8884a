"""The legal stage of an invoice: the ``open_legal`` activity.

A thin adapter: it opens a session and calls ``arflow.legal.opening`` (the case, its claim
summary PDF, a task, the event, the status; once per invoice). An unknown invoice fails for
good.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from temporalio import activity

from activities.failures import final_on
from arflow.db import SessionFactory
from arflow.errors import NotFound
from arflow.legal import opening
from arflow.messages.documents import Seller
from workflows.types import LegalInput


class LegalActivities:
    """Bound methods are registered on the worker; dependencies come in through the constructor.

    Args:
        sessions: database sessions.
        folder: where generated documents are written (setting ``legal_folder``), one
            sub-folder per invoice.
        seller: the creditor named on the documents.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        folder: str | os.PathLike[str],
        seller: Seller | None = None,
    ) -> None:
        self.sessions = sessions
        self.folder = Path(folder)
        self.seller = seller or Seller("arflow")

    @activity.defn(name="open_legal")
    def open_legal(self, inp: LegalInput) -> None:
        """Open the invoice's legal case (once): documents, a task, the event, the status."""
        with self.sessions() as session, final_on(NotFound, "NotFound"):
            opening.open_legal(session, self.folder, self.seller, inp)

    def all(self) -> list[Any]:
        return [self.open_legal]
