"""Throwaway PostgreSQL schemas for the benchmarks: each run migrates its own schema of the
given database and drops it afterwards, so runs never see each other's rows."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from arflow.db import normalize_url


def throwaway_schema(database_url: str, schema: str) -> tuple[str, Callable[[], None]]:
    """A URL whose connections use a new, empty schema ``schema`` of ``database_url``'s
    database, and the function that drops it (and everything in it)."""
    base = normalize_url(database_url)
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        admin.dispose()

    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}", drop
