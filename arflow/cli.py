"""``arflow`` command line: run everything on a laptop, or one part at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from arflow.config import Settings, get_settings
from arflow.statements_cli import statements_app

if TYPE_CHECKING:
    from arflow.invoices.bulk import ImportResult

app = typer.Typer(
    help="arflow: accounts-receivable collections orchestrator",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # an error must not print row data or secrets
)
console = Console()
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SEARCH_ATTRIBUTE_ARGS = [
    arg
    for name in ("ArflowStatus", "ArflowStage", "ArflowSegment")
    for arg in ("--search-attribute", f"{name}=Keyword")
]
# The dev server's SQLite file store in write-ahead-log mode, synced at checkpoints rather than
# at every commit: a commit is in the log (the OS's page cache) when the server answers, so a
# killed server (SIGKILL, a crash) loses nothing, which the fault suite proves by killing it
# three times mid-run (tests/processes.py starts it so); a power cut can lose the last
# transactions. It doubled the rate of workflow starts here (bench/README.md).
FILE_STORE_ARGS = [
    "--sqlite-pragma",
    "journal_mode=wal",
    "--sqlite-pragma",
    "synchronous=normal",
]


def _wait_for_temporal(
    address: str,
    timeout: float = 30.0,
    exited: Callable[[], tuple[str, int] | None] = lambda: None,
) -> None:
    """Until a client connects to ``address``; raises when ``exited()`` names a child that
    has ended (the dev server could not start), or after ``timeout`` seconds."""
    from temporalio.client import Client

    async def probe() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await Client.connect(address)  # only a probe: no payloads, no converter
                return
            except Exception:
                if ended := exited():
                    raise RuntimeError(f"the {ended[0]} exited with {ended[1]}") from None
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    asyncio.run(probe())


def _wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) to ARFLOW_DATABASE_URL."""
    from arflow.db import make_engine
    from arflow.migrate import upgrade

    upgrade(make_engine(get_settings().database_url))
    console.print("database is at the latest migration")


class _Stopped(Exception):
    """SIGTERM, SIGINT or SIGHUP asked ``arflow run`` to stop."""


class _Children:
    """The processes ``arflow run`` starts, each in its own process group (so whatever it
    starts goes with it), stopped together on every way out of the run."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str], output: IO[bytes] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``args``; its output goes to ``output`` (default: this process's)."""
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, start_new_session=True, stdout=output, stderr=output
        )
        self.procs.append((name, proc))
        return proc

    def exited(self) -> tuple[str, int] | None:
        """The first child that has ended, with its exit code; None while all run."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                return name, proc.returncode
        return None

    def stop(self, timeout: float = 10.0) -> None:
        """Last started first (the API and the worker while Temporal still answers them):
        SIGTERM to its group, up to ``timeout`` seconds to end, then SIGKILL to whatever is
        left of the group (grandchildren that outlived their parent too)."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        for _, proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def _raise_stopped(signum: int, _frame: object) -> NoReturn:
    raise _Stopped(signal.Signals(signum).name)


@app.command()
def run(
    demo: bool = typer.Option(True, help="load demo customers and invoices"),
    ui_port: int = typer.Option(8233, help="Temporal Web UI port (embedded server)"),
    temporal_port: int = typer.Option(7233, help="Temporal gRPC port (embedded server)"),
) -> None:
    """Start the embedded Temporal dev server, the worker and the API; load demo data.

    Every way out (an error, Ctrl-C, SIGTERM, a component that exits) stops all of them.
    Exit status: 0 stopped by a signal; 1 a component or the demo load failed; 2 a port is
    taken, or the Temporal store belongs to another database. Runs in
    ``ARFLOW_ENVIRONMENT=development`` (development keys and secrets allowed), for itself and
    its children, unless the environment or ``.env`` sets another one.
    """
    from arflow.db import make_engine
    from arflow.deployment import StoreMismatch, bind_temporal_store
    from arflow.migrate import upgrade
    from arflow.ports import busy_ports

    _development_unless_set()
    get_settings.cache_clear()
    settings = get_settings()
    data = Path(settings.data_dir)
    embedded = not settings.temporal_address
    wanted = [("API", settings.api_host, settings.api_port)]
    if embedded:
        wanted += [("Temporal", "127.0.0.1", temporal_port), ("Temporal UI", "127.0.0.1", ui_port)]
    if settings.worker_metrics_port:
        wanted.append(("worker metrics", "0.0.0.0", settings.worker_metrics_port))
    taken = busy_ports(wanted)
    if taken:
        console.print("[red]arflow run cannot start: ports are in use[/red]")
        for line in taken:
            console.print(f"  {line}", markup=False, highlight=False)
        console.print("Stop that process (or choose other ports) and run again.")
        raise typer.Exit(2)
    data.mkdir(parents=True, exist_ok=True)
    children = _Children()
    env = dict(os.environ)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_stopped)
    status = 0
    try:
        address = settings.temporal_address
        ui_url = settings.temporal_ui_url
        engine = make_engine(settings.database_url)
        upgrade(engine)
        if embedded:
            bind_temporal_store(engine, data)
            address = f"127.0.0.1:{temporal_port}"
            ui_url = f"http://127.0.0.1:{ui_port}"
            children.start("Temporal dev server", _temporal_args(temporal_port, ui_port, data), env)
            env["ARFLOW_TEMPORAL_ADDRESS"] = address
        console.print(f"waiting for Temporal at {address} ...")
        _wait_for_temporal(address, exited=children.exited)
        children.start("worker", [sys.executable, str(ROOT / "worker.py")], env)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        api_proc = children.start("API", _api_args(settings.api_host, settings.api_port), env)
        _wait_for_http(f"{api_url}/healthz", api_proc)
        console.print(_running(settings, api_url, ui_url, demo))
        console.print("reminders appear on the demo timelines within a minute; Ctrl-C stops")
        while (ended := children.exited()) is None:
            time.sleep(0.5)
        console.print(f"[red]the {ended[0]} exited with {ended[1]}; stopping[/red]")
        status = 1
    except _Stopped as stop:
        console.print(f"{stop}: stopping")
    except StoreMismatch as exc:
        console.print("arflow run cannot start:", exc, style="red", markup=False, highlight=False)
        status = 2
    except Exception as exc:  # reported in one line; the finally below stops the children
        console.print(
            "arflow run failed:",
            f"{type(exc).__name__}: {exc}",
            style="red",
            markup=False,
            highlight=False,
        )
        status = 1
    finally:
        children.stop()
    console.print("stopped")
    raise typer.Exit(status)


def _development_unless_set() -> None:
    """Settings default to production (fail closed); the laptop stack is development."""
    from dotenv import dotenv_values

    if "ARFLOW_ENVIRONMENT" not in os.environ and not dotenv_values(".env").get(
        "ARFLOW_ENVIRONMENT"
    ):
        os.environ["ARFLOW_ENVIRONMENT"] = "development"


def _temporal_args(temporal_port: int, ui_port: int, data: Path) -> list[str]:
    """The embedded Temporal dev server. State on disk: a killed run resumes its timers
    instead of losing them."""
    return [
        str(BIN / "temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(temporal_port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(data / "temporal.db"),
        *FILE_STORE_ARGS,
        "--log-level",
        "warn",
        # Typed search attributes of invoice workflows (workflows/search.py).
        *SEARCH_ATTRIBUTE_ARGS,
    ]


def _api_args(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "api.app:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def _running(settings: Settings, api_url: str, ui_url: str, demo: bool) -> Table:
    """What runs where, with the keys; loads the demo data first when ``demo``."""
    keys = settings.parsed_api_keys()
    admin_key = next(k for k, r in keys.items() if r.value == "admin")
    table = Table(title="arflow is running", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")  # links are copied whole, never cut with an ellipsis
    table.add_row("API", api_url)
    table.add_row("API docs", f"{api_url}/docs")
    table.add_row("Temporal UI", ui_url)
    for key, role in keys.items():
        table.add_row(f"{role.value} key", key if settings.environment == "development" else "***")
    table.add_row("database", settings.database_url)
    if demo:
        from arflow.demo import load

        invoices = load(api_url, admin_key, settings.webhook_secret)
        first = invoices[0]["id"]
        table.add_row("demo invoices", ", ".join(str(i["id"]) for i in invoices))
        table.add_row(
            "try",
            f"curl -H 'Authorization: Bearer {admin_key}' {api_url}/v1/invoices/{first}/timeline",
        )
        customer = invoices[0]["customer_id"]
        made = httpx.post(
            f"{api_url}/v1/customers/{customer}/portal-links",
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=30,
        )
        if made.status_code == 201:
            table.add_row("customer portal", made.json()["url"])
    return table


@app.command()
def worker() -> None:
    """Run the Temporal worker only (ARFLOW_TEMPORAL_ADDRESS must point at a server)."""
    import worker as worker_module

    worker_module.main()


@app.command()
def api() -> None:
    """Run the API only."""
    import uvicorn

    settings = get_settings()
    uvicorn.run("api.app:create_app", factory=True, host=settings.api_host, port=settings.api_port)


# -- arflow import ---------------------------------------------------------------------------

import_app = typer.Typer(
    help="Import customers or invoices from CSV files (idempotent: re-running a file is safe).",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")
app.add_typer(statements_app, name="statements")

_EXIT_CODES = (
    "Exit status: 0 all rows imported or unchanged; 1 some rows rejected (see the rejects "
    "file); 2 stopped: the file cannot be read (encoding, not CSV, missing or unknown "
    "columns: nothing is imported) or the database cannot be used"
)
_FORMAT = (
    "The header line names the API's fields; an empty cell is an absent field. Each row is "
    "checked as the API checks a request; a row whose external_id is already stored with the "
    "same data is counted unchanged and skipped, one with different data is rejected. "
    "Rejected rows go to the rejects file (the row, its line, the reason); the others are "
    "imported."
)
FileArg = typer.Argument(..., help="CSV file (UTF-8, comma-separated, header line first)")
RejectsOpt = typer.Option(
    None, "--rejects", help="where to write the rejected rows (default: FILE.rejects.csv)"
)
BatchOpt = typer.Option(500, "--batch-size", min=1, max=5000, help="rows per transaction")


class _RichProgress:
    """``arflow.invoices.bulk.Progress`` drawn as rich progress bars, one per stage."""

    LABELS = {"validated": "rows validated", "stored": "rows stored", "workflows": "workflows"}

    def __init__(self, progress: Progress, stages: tuple[str, ...]) -> None:
        self.progress = progress
        self.tasks = {s: progress.add_task(self.LABELS[s], total=0) for s in stages}

    def add_total(self, stage: str, n: int) -> None:
        task = self.tasks[stage]
        total = self.progress.tasks[self.tasks[stage]].total or 0
        self.progress.update(task, total=total + n)

    def advance(self, stage: str, n: int) -> None:
        self.progress.advance(self.tasks[stage], n)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>15}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _summary(result: ImportResult) -> int:
    """Print the result table and what to do next; the exit status."""
    table = Table(title=f"import {result.kind} from {result.path}", show_header=False)
    table.add_row("created", str(result.created))
    table.add_row("unchanged", str(result.unchanged))
    if result.kind == "invoices" and result.updated:
        table.add_row("updated", str(result.updated))
    table.add_row("rejected", str(result.rejected))
    if result.kind == "invoices":
        table.add_row("workflows started", str(result.workflows_started))
        table.add_row("workflows already running", str(result.workflows_running))
        if result.workflows_not_started:
            table.add_row("workflows NOT started", f"[red]{result.workflows_not_started}[/red]")
    table.add_row("elapsed seconds", f"{result.seconds:.2f}")
    if result.seconds > 0:
        table.add_row("rows/s", f"{result.rows / result.seconds:.0f}")
    console.print(table)
    if result.rejects:
        console.print(
            f"[yellow]{result.rejected} row(s) rejected[/yellow], written to {result.rejects_path}:"
        )
        for rej in sorted(result.rejects, key=lambda r: r.row.line)[:5]:
            console.print(f"  line {rej.row.line}: {rej.reason}", markup=False, highlight=False)
        if result.rejected > 5:
            console.print(f"  ... and {result.rejected - 5} more in the rejects file")
    if result.workflows_not_started:
        console.print(
            f"[red]The workflows of {result.workflows_not_started} invoice(s) were NOT started"
            "[/red] (the invoices are stored): "
            f"{result.temporal_error}\nStart Temporal (`arflow run`, or a server at "
            "ARFLOW_TEMPORAL_ADDRESS) and run the same command again: stored rows count as "
            "unchanged and their workflows are started.",
            highlight=False,
        )
    return result.exit_code


def _database_failed(exc: Exception) -> NoReturn:
    """A database error in the middle of an import: short, without the statement's data."""
    first = str(exc).splitlines()[0] if str(exc) else repr(exc)
    console.print(
        f"[red]stopped by a database error:[/red] {first}\nThe batches committed before it are "
        "stored; running the same command again is safe (they count as unchanged).",
        highlight=False,
    )
    raise typer.Exit(2)


@import_app.command(
    "customers",
    help="Import customers: columns external_id and name, and optionally the API's other "
    "customer fields (email, phone in E.164, timezone as an IANA name, locale, segment, iban, "
    f"...).\n\n{_FORMAT}\n\n{_EXIT_CODES}.",
)
def import_customers(
    file: Path = FileArg,
    rejects: Path | None = RejectsOpt,
    batch_size: int = BatchOpt,
) -> None:
    from arflow.db import make_engine
    from arflow.invoices import bulk
    from models.customer import CustomerCreate

    settings = get_settings()
    try:
        csv_file = bulk.read_csv(file, CustomerCreate)
        with _progress() as bars:
            result = bulk.import_customers(
                csv_file,
                make_engine(settings.database_url),
                rejects_path=rejects,
                batch_size=batch_size,
                progress=_RichProgress(bars, ("validated", "stored")),
            )
    except bulk.ImportAborted as exc:
        console.print(f"[red]nothing imported:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except SQLAlchemyError as exc:
        _database_failed(exc)
    raise typer.Exit(_summary(result))


@import_app.command(
    "invoices",
    help="Import invoices and start their workflows: columns external_id, number, "
    "customer_external_id (or customer_id), currency, amount_minor (an integer of minor "
    "units), issued_on, due_date (YYYY-MM-DD) and optionally due_at (RFC 3339), policy_name "
    "(or policy_id; default: the default policy), discount_percent with discount_days, lines "
    "(JSON, as in the API)."
    "\n\nTemporal must be running, with a worker: `arflow run` (the embedded server), or "
    "another server at ARFLOW_TEMPORAL_ADDRESS. When it is unreachable the invoices are still "
    "stored and the command says that their workflows were not started: run the same command "
    "again once Temporal is up, and it starts them."
    f"\n\n{_FORMAT}\n\n{_EXIT_CODES}; 3 invoices stored but some workflows not started.",
)
def import_invoices(
    file: Path = FileArg,
    rejects: Path | None = RejectsOpt,
    concurrency: int = typer.Option(
        32, "--concurrency", min=1, max=512, help="workflow starts in flight"
    ),
    batch_size: int = BatchOpt,
    update: bool = typer.Option(
        False,
        "--update",
        help="a row whose invoice exists with another due date, policy or a lower amount "
        "updates it (a credit note for the difference) instead of being rejected",
    ),
) -> None:
    from arflow.db import make_engine
    from arflow.invoices import bulk
    from models.invoice import InvoiceCreate

    settings = get_settings()

    async def run_import(csv_file: bulk.CsvFile) -> ImportResult:
        client, problem = await bulk.connect_temporal(settings)
        with _progress() as bars:
            return await bulk.import_invoices(
                csv_file,
                make_engine(settings.database_url),
                settings,
                client,
                temporal_error=problem,
                rejects_path=rejects,
                batch_size=batch_size,
                concurrency=concurrency,
                progress=_RichProgress(bars, ("validated", "stored", "workflows")),
                update=update,
            )

    try:
        csv_file = bulk.read_csv(file, InvoiceCreate)
        result = asyncio.run(run_import(csv_file))
    except bulk.ImportAborted as exc:
        console.print(f"[red]nothing imported:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except SQLAlchemyError as exc:
        _database_failed(exc)
    raise typer.Exit(_summary(result))


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:
        status = 0
    if "temporalio.client" in sys.modules:
        # temporalio can abort the interpreter at exit (sdk-python #300): leave without teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    main()
