"""``arflow statements``: import bank statement files from the command line (the same path as
``POST /v1/bank-statements`` and the daily inbox schedule)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from arflow.config import get_settings

statements_app = typer.Typer(help="Bank statements: import camt.053, MT940 or CSV files.")
console = Console()


@statements_app.command("import")
def import_file(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    mapping: str | None = typer.Option(None, help="saved CSV mapping (CSV files only)"),
    as_json: bool = typer.Option(False, "--json", help="print the reports as JSON"),
) -> None:
    """Import statement files: matched lines pay their invoices, the rest wait in the
    unmatched queue; a file imported again applies nothing twice. Needs the database and a
    Temporal server (``arflow run``, or ARFLOW_TEMPORAL_ADDRESS)."""
    code = asyncio.run(_import(files, mapping, as_json))
    sys.stdout.flush()
    raise typer.Exit(code)


async def _import(files: list[Path], mapping: str | None, as_json: bool) -> int:
    from sqlmodel import Session
    from temporalio.client import Client

    from arflow.codec import data_converter
    from arflow.db import make_engine
    from arflow.errors import DomainError
    from arflow.payments.reconcile import import_statement

    settings = get_settings()
    engine = make_engine(settings.database_url)
    client = await Client.connect(
        settings.temporal_address or "127.0.0.1:7233",
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
    )
    failed = False
    reports = []
    for path in files:
        with Session(engine) as session:
            try:
                result, deliveries = await import_statement(
                    session,
                    client,
                    settings,
                    path.name,
                    path.read_bytes(),
                    mapping=mapping,
                    source="cli",
                    actor="cli",
                )
            except DomainError as exc:
                failed = True
                console.print(f"[red]{path}: {exc.message}[/red]")
                continue
        pending = sum(1 for d in deliveries if d.outcome == "pending")
        failed |= bool(result.errors) or bool(pending)
        reports.append(
            {
                "file": str(path),
                **result.counts,
                "errors": result.errors,
                "accounts": result.accounts,
            }
        )
        if not as_json:
            table = Table(title=f"{path.name} ({result.format}, import {result.import_id})")
            for key, value in result.counts.items():
                table.add_row(key, str(value))
            if pending:
                table.add_row("[yellow]not yet delivered[/yellow]", str(pending))
            console.print(table)
            if len(result.accounts) > 1:
                console.print(_accounts_table(result.accounts))
            for err in result.errors:
                console.print(f"  line {err['line']}: {err['reason']}")
    if as_json:
        print(json.dumps(reports, indent=2))
    return 1 if failed else 0


_ACCOUNT_COLUMNS = ("statements", "lines", "matched", "unmatched", "duplicate", "skipped")


def _accounts_table(accounts: list[dict[str, Any]]) -> Table:
    """Per account of a multi-account file; lines of accounts not ours are skipped."""
    table = Table("account", "ours", *_ACCOUNT_COLUMNS, title="per account")
    for account in accounts:
        table.add_row(
            account["account"],
            "yes" if account["ours"] else "no",
            *(str(account[c]) for c in _ACCOUNT_COLUMNS),
        )
    return table
