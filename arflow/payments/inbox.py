"""The statement inbox folder: every file in it, imported once.

A file is moved to ``processed/`` once imported, or to ``failed/`` with a ``.error.txt`` beside
it when it cannot be read at all. A crash between import and move imports the file again on
the retry, which finds every line already taken (duplicates) and moves it then. CSV files need
a saved mapping, named in the file name: ``anything@mapping-name.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session

from arflow.payments.reconcile import ImportResult, store_statement

log = logging.getLogger("arflow.inbox")


def mapping_of(path: Path) -> str | None:
    """``bank-export@sparkasse.csv`` -> ``sparkasse``."""
    stem = path.stem
    return stem.rpartition("@")[2] if "@" in stem else None


def inbox_files(folder: Path) -> list[Path]:
    """The files waiting in ``folder`` (created when missing), by name; hidden ones are not."""
    folder.mkdir(parents=True, exist_ok=True)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name[0] != ".")


def import_file(
    session: Session, path: Path, content: bytes, our_ibans: Collection[str] = ()
) -> ImportResult:
    """Store the statement ``content`` read from ``path`` (``DomainError`` when it cannot be
    read at all); lines of accounts other than ``our_ibans`` are reported, not applied."""
    return store_statement(
        session,
        path.name,
        content,
        mapping=mapping_of(path),
        source="inbox",
        actor="schedule:statement-inbox",
        our_ibans=our_ibans,
    )


def reject(folder: Path, path: Path, message: str) -> None:
    """``path`` could not be imported: into ``failed/``, with the reason beside it."""
    log.warning("statement %s failed: %s", path.name, message)
    _move(path, folder / "failed").with_suffix(".error.txt").write_text(message + "\n")


def processed(folder: Path, path: Path) -> None:
    """``path`` is imported: into ``processed/``."""
    _move(path, folder / "processed")


def _move(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` under a time-stamped name (files never overwrite)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = folder / f"{stamp}-{path.name}"
    path.rename(target)
    return target
