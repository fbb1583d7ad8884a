"""A TCP proxy to put between arflow and a server it depends on, to fail that server on cue.

It runs its own event loop in a thread (``ProxyThread``): the API's async routes use the
database synchronously, and a proxy on the test's loop would wait for them while they wait for it.

PostgreSQL is shared on the test machines and must never be stopped: the fault tests stop this
proxy instead. ``down()`` closes every connection and refuses new ones (the server is gone, as
after a crash); ``up()`` accepts again (it is back, as after a restart)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.accepted = 0
        self.silent = False  # accept, then never answer (a host gone from the network)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        """Listen (on a free port the first time, on the same port after ``down()``)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def up(self) -> None:
        if self._server is None:
            await self.start()

    async def down(self) -> None:
        """Stop listening (a connect is refused) and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a polite close: as a dead server looks
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.down()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        self.accepted += 1
        server_w: asyncio.StreamWriter | None = None
        try:
            if self.silent:
                await asyncio.Event().wait()  # until ``down()`` or ``close()`` cancels it
            server_r, server_w = await asyncio.open_connection(*self.target)
            self._writers.add(server_w)
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (client_w, server_w):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.transport.abort()


class ProxyThread:
    """A ``TcpProxy`` on its own event loop in a daemon thread, driven from any thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.proxy = TcpProxy(target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        self._run(self.proxy.start())
        return self

    def __exit__(self, *_: object) -> None:
        self._run(self.proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        return self.proxy.port

    def down(self) -> None:
        self._run(self.proxy.down())

    def up(self) -> None:
        self._run(self.proxy.up())

    def silent(self) -> None:
        """New connections are accepted and then never answered; open ones carry on."""
        self.proxy.silent = True
