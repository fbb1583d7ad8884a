"""Which local ports are taken, and by which process: ``arflow run`` says so before it starts
anything, instead of failing half-way with a child that cannot bind."""

from __future__ import annotations

import errno
import socket

import psutil


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the system's pick), for a server about to start; until
    it binds, nothing listens there either."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def busy_ports(wanted: list[tuple[str, str, int]]) -> list[str]:
    """One line per ``(what, host, port)`` that cannot be bound, naming the holder."""
    return [
        f"{what} port {port} ({host}) is held by {holder(port)}"
        for what, host, port in wanted
        if not _free(host, port)
    ]


def _free(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now (with SO_REUSEADDR, as servers
    bind, so a connection in TIME_WAIT does not count as taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            # Anything else (an address not on this machine, say) is the child's to report.
            return exc.errno != errno.EADDRINUSE
    return True


def holder(port: int) -> str:
    """``pid 1234 (temporal server start-dev ...)`` for the process listening on ``port``."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return "a process this user cannot see"
    pids = sorted(
        {
            c.pid
            for c in conns
            if c.laddr and c.laddr.port == port and not c.raddr and c.pid is not None
        }
    )
    if not pids:
        return "a process this user cannot see"
    return ", ".join(_describe(pid) for pid in pids)


def _describe(pid: int) -> str:
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        cmdline = "?"
    return f"pid {pid} ({cmdline[:300]})"
