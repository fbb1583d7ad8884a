"""``arflow`` command line: run everything on a laptop, or one part at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from arflow.config import get_settings

app = typer.Typer(help="arflow: accounts-receivable collections orchestrator", no_args_is_help=True)
console = Console()
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def _wait_for_temporal(address: str, timeout: float = 30.0) -> None:
    from temporalio.client import Client

    async def probe() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await Client.connect(address)
                return
            except Exception:
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


@app.command()
def run(
    demo: bool = typer.Option(True, help="load demo customers and invoices"),
    ui_port: int = typer.Option(8233, help="Temporal Web UI port (embedded server)"),
    temporal_port: int = typer.Option(7233, help="Temporal gRPC port (embedded server)"),
) -> None:
    """Start the embedded Temporal dev server, the worker and the API; load demo data."""
    from arflow.db import make_engine
    from arflow.migrate import upgrade

    settings = get_settings()
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)

    def stop(*_: object) -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        console.print("stopped")
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        address = settings.temporal_address
        ui_url = settings.temporal_ui_url
        if not address:
            address = f"127.0.0.1:{temporal_port}"
            ui_url = f"http://127.0.0.1:{ui_port}"
            # State on disk: a killed run resumes its timers instead of losing them.
            procs.append(
                subprocess.Popen(
                    [
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
                        "--log-level",
                        "warn",
                    ]
                )
            )
            env["ARFLOW_TEMPORAL_ADDRESS"] = address
        console.print(f"waiting for Temporal at {address} ...")
        _wait_for_temporal(address)
        upgrade(make_engine(settings.database_url))
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, cwd=ROOT))
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.app:create_app",
                    "--factory",
                    "--host",
                    settings.api_host,
                    "--port",
                    str(settings.api_port),
                    "--log-level",
                    "warning",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        _wait_for_http(f"{api_url}/healthz", procs[-1])
        keys = settings.parsed_api_keys()
        admin_key = next(k for k, r in keys.items() if r.value == "admin")
        table = Table(title="arflow is running", show_header=False)
        table.add_row("API", api_url)
        table.add_row("API docs", f"{api_url}/docs")
        table.add_row("Temporal UI", ui_url)
        for key, role in keys.items():
            table.add_row(
                f"{role.value} key", key if settings.environment == "development" else "***"
            )
        table.add_row("database", settings.database_url)
        if demo:
            from arflow.demo import load

            invoices = load(api_url, admin_key, settings.webhook_secret)
            first = invoices[0]["id"]
            table.add_row("demo invoices", ", ".join(str(i["id"]) for i in invoices))
            table.add_row(
                "try",
                f"curl -H 'Authorization: Bearer {admin_key}' "
                f"{api_url}/v1/invoices/{first}/timeline",
            )
        console.print(table)
        console.print("reminders appear on the demo timelines within a minute; Ctrl-C stops")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        console.print("[red]a component exited; stopping[/red]")
    except KeyboardInterrupt:
        pass
    stop()


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
