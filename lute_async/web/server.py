"""Dashboard: the web dashboard of an executor's runs, served by uvicorn in the executor's loop.

``Executor(dashboard=Dashboard())`` registers it as a ``"*"`` hook (it keeps what each event
says, see :mod:`~lute_async.web.live`) and opens it on ``async with``: it binds its socket
(127.0.0.1 and a free port by default), prints its address with the token, and serves until the
executor closes. Without an executor (``lute-async serve``) it serves the records database only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import anyio
import uvicorn

from lute_async.errors import ConfigError
from lute_async.logs import get_logger
from lute_async.records.location import as_target
from lute_async.web.access import cookie_name, new_token
from lute_async.web.live import LiveHub

if TYPE_CHECKING:
    from lute_async.hooks.events import Event
    from lute_async.hooks.observer import Observed
    from lute_async.records import RecordStore

__all__ = ["Dashboard"]


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port), ready before uvicorn runs,
    so the address is known, and connections wait in its backlog, from the start."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"dashboard: cannot listen on {host}:{port}: {exc}") from None
    return sock


class Dashboard:
    """The dashboard: pages of the live runs, their history, each run and each graph.

    ``host``/``port``: where it listens (127.0.0.1 and a free port by default; any address
    still needs the token). ``token``: the secret every request must carry (random by default,
    printed at start). ``allow_control``: show cancel buttons (POST, CSRF-checked).
    ``db``: the records database when no executor is attached. ``announce``: where the address
    is said (stderr by default).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        allow_control: bool = False,
        db: str | os.PathLike[str] | None = None,
        announce: Callable[[str], None] | None = _say,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"dashboard: port: expected 0 to 65535, got {port!r}")
        if not isinstance(allow_control, bool):
            raise ConfigError(
                f"dashboard: allow_control: expected true or false, got {allow_control!r}"
            )
        if not isinstance(host, str) or not host:
            raise ConfigError(f"dashboard: host: expected an address to listen on, got {host!r}")
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise ConfigError("dashboard: token: expected a string of at least 16 characters")
        self.host = host
        self.port = port
        self.token = token or new_token()
        self.allow_control = allow_control
        self.db = as_target(db) if db is not None else None  # a file, or a PostgreSQL URL
        self.hub = LiveHub()
        self._announce = announce
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._store: RecordStore | None = None
        self._own_store = False
        #: ``http://host:port`` once open.
        self.address = ""

    @property
    def url(self) -> str:
        """The address to open, with the token (once open)."""
        return f"{self.address}/?token={self.token}" if self.address else ""

    def __call__(self, event: Event) -> None:
        """The ``"*"`` hook: keep what the event says, wake the pages watching its run."""
        self.hub.observe(event)

    async def open(self, executor: Observed | None = None) -> None:
        """Start serving: the runs of ``executor`` live (and its records), or with no
        executor the records database ``db`` only."""
        if self._task is not None:
            raise RuntimeError("this dashboard is already open")
        self.hub.closed = False  # open again after a close
        from lute_async.records import RecordStore
        from lute_async.records.location import default_db

        if executor is not None:
            self._store = await executor.store()
        else:
            path = self.db if self.db is not None else default_db()
            self._store = await anyio.to_thread.run_sync(lambda: RecordStore(path, mark_lost=False))
            self._own_store = True
        sock = _bind(self.host, self.port)
        try:
            self._server = self._make_server(live=executor is not None)
        except BaseException:
            sock.close()
            raise
        name = sock.getsockname()
        shown = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
        self.address = f"http://{shown}:{name[1]}"
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        if self._announce is not None:
            self._announce(f"lute-async dashboard: {self.url}")

    def _make_server(self, *, live: bool) -> _Server:
        from lute_async.web.app import DashboardState, build_app

        store = self._store
        assert store is not None
        state = DashboardState(
            hub=self.hub,
            store=lambda: store,
            token=self.token,
            allow_control=self.allow_control,
            live=live,
            limiter=anyio.CapacityLimiter(1),
        )
        app = build_app(state, cookie=cookie_name(self.token))
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            date_header=False,
            timeout_graceful_shutdown=2,
        )
        return _Server(config)

    async def aclose(self) -> None:
        """Stop serving (every open page stream is ended first) and close what it opened."""
        self.hub.close()
        if self._task is not None:
            task, self._task = self._task, None
            assert self._server is not None
            self._server.stop()
            with anyio.CancelScope(shield=True):
                try:
                    await task
                except Exception as exc:  # the server failed: say so, still close the rest
                    get_logger().error("dashboard_failed", error=f"{type(exc).__name__}: {exc}")
        if self._own_store and self._store is not None:
            store, self._store = self._store, None
            await anyio.to_thread.run_sync(store.close)

    async def __aenter__(self) -> Dashboard:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Server(uvicorn.Server):
    """uvicorn's server inside our loop: it leaves the process's signals to its owner (the
    CLI's Ctrl-C handling) and waits for :meth:`stop` on an event, not on a timer."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stopping = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self.on_tick(0)  # the default headers, once
        await self._stopping.wait()

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()
