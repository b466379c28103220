"""One listening Unix socket per executor, shared by every run's ``"socket"`` communicator.

A socket of each run's own (bind, chmod, listen, an accept task, close, unlink) cost ~15% of
the executor's CPU per run, whether or not its task ever connected. An executor's
:class:`SocketHome` instead holds one
:class:`~lute_async.communicators.shared_listener.SharedListener`, bound on first use and
closed with the executor; every run registers with it (:class:`SharedSocketCommunicator`) and
its tasks find it through ``LUTE_ASYNC_SOCKET`` as before.

A connection's first frame, its hello, names its run. The listener reads it within the
pre-hello limits (``hello_timeout``, ``max_pending_hellos``, the hello decoder's), the run's
:class:`~lute_async.communicators.base.FrameConnection` checks it (the secret is required here:
the path no longer tells the runs apart), and the connection, with the bytes after its hello,
goes to that run's reader, within the run's ``max_connections``; after the task's exit the run
takes what still waits in the backlog before it stops listening.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio

from lute_async.communicators.base import ChildSetup, FrameConnection, RunChannel
from lute_async.communicators.fdio import read_chunk
from lute_async.communicators.listener import MAX_PENDING_HELLOS
from lute_async.communicators.pump import pump_connection
from lute_async.communicators.readers import Readers, serve_on_demand
from lute_async.communicators.shared_listener import HELLO_TIMEOUT, SharedListener
from lute_async.communicators.socket import check_length, private_temp_dir
from lute_async.errors import HandshakeError, ProtocolError
from lute_async.wire import ENV_SOCKET


class SocketHome:
    """One private (0700) directory for an executor's Unix socket, and the one listener bound
    there; made on first use, removed by :meth:`close` (or when collected, or at exit)."""

    def __init__(
        self,
        base: str | os.PathLike[str] | None = None,
        *,
        hello_timeout: float = HELLO_TIMEOUT,
        max_pending_hellos: int = MAX_PENDING_HELLOS,
    ) -> None:
        self.base = base
        self.hello_timeout = hello_timeout
        self.max_pending_hellos = max_pending_hellos
        self._path: Path | None = None
        self._finalizer: weakref.finalize[..., SocketHome] | None = None
        self._listener: SharedListener | None = None

    def socket_path(self) -> Path:
        """A fresh, unguessable socket path in the directory."""
        if self._path is None:
            self._path = private_temp_dir(self.base)
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._path, True)
        path = self._path / os.urandom(8).hex()
        check_length(path)
        return path

    def listener(self) -> SharedListener:
        """The shared listener, bound on first use, and again when its socket file was deleted
        or replaced (the old one then closes once its runs have ended)."""
        current = self._listener
        if current is None or not current.usable():
            if current is not None:
                current.close()
            current = self._listener = SharedListener(
                self.socket_path(),
                hello_timeout=self.hello_timeout,
                max_pending_hellos=self.max_pending_hellos,
            )
        return current

    def close(self) -> None:
        """Close the listener (once its runs have ended) and remove the directory."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._finalizer is not None:
            self._finalizer()
        self._path = self._finalizer = None


class SharedSocketCommunicator:
    """A run's side of its executor's shared Unix socket: registered with the listener while
    the run is open, it reads the connections whose hello names the run, as a run's own
    listener would (same frames, same checks, same caps, same drain after the exit).

    It reads on demand (:attr:`reads_on_demand`): the supervisor gives it a way to start
    readers (:meth:`read_with`) and tells it of the exit (:meth:`exited`) instead of giving it
    a task of its own, so a run whose task never connects costs a registration only."""

    kind = "socket"
    reads_on_demand = True

    def __init__(self, home: SocketHome) -> None:
        self.home = home
        self._listener: SharedListener | None = None
        self._channel: RunChannel | None = None
        self._spawn: Callable[[Coroutine[Any, Any, None]], object] | None = None
        #: Connections handed over before :meth:`read_with` was called.
        self._waiting: list[tuple[socket.socket, FrameConnection, bytes]] = []
        self._open: set[socket.socket] = set()
        #: The run's task process, once it runs (whose a refused connection is).
        self.task_pid: int | None = None

    async def open(self, channel: RunChannel) -> ChildSetup:
        self._channel = channel
        listener = self._listener = self.home.listener()
        listener.register(self, channel.run_id)
        return ChildSetup(env={ENV_SOCKET: os.fspath(listener.path)})

    def child_started(self) -> None:
        """Nothing to hand over: children connect to the shared socket."""

    def refused(self, error: ProtocolError) -> None:
        """A connection of this run's was refused before reaching it."""
        assert self._channel is not None
        self._channel.protocol_error(self.kind, 0, error)

    def take(self, conn: socket.socket, hello: bytes, rest: bytes) -> None:
        """Check the ``hello`` of a connection that names this run and read it from now on,
        starting with ``rest`` (the bytes after the hello); or refuse it, recorded."""
        channel = self._channel
        assert channel is not None
        parser = FrameConnection(channel, self.kind, require_secret=True)
        parser.feed(hello)  # the run's own checks: version, run, pid, rank, secret
        if parser.fatal is not None:
            conn.close()
            channel.protocol_error(self.kind, parser.conn, parser.fatal)
            return
        if not channel.connection_opened():
            conn.close()
            cap = channel.max_connections
            self.refused(HandshakeError(f"the run already has {cap} connections open"))
            return
        self._open.add(conn)
        if self._spawn is None:
            self._waiting.append((conn, parser, rest))
        else:
            self._spawn(self._read(conn, parser, rest))

    def read_with(self, readers: Readers) -> None:
        """Read every connection from now on in a task of ``readers`` (the run's), beginning
        with those that arrived before."""
        spawn = self._spawn = readers.spawn
        self.task_pid = readers.task_pid
        if self.task_pid is not None and self._listener is not None:
            self._listener.note_pid(self, self.task_pid)
        for waiting in self._waiting:
            spawn(self._read(*waiting))
        self._waiting.clear()

    def exited(self) -> None:
        """The task exited: take the connections it made that still wait to be accepted, or
        their hello to be read, then stop listening for the run."""
        listener = self._listener
        assert listener is not None and self._channel is not None
        listener.drain()
        listener.unregister(self, self._channel.run_id)

    async def serve(self, exited: asyncio.Event) -> None:
        """Read the run's connections until the exit (for a caller that serves every
        communicator in a task of its own)."""
        try:
            await serve_on_demand(self, exited)
        finally:
            self._spawn = None
            if self._listener is not None and self._channel is not None:
                self._listener.unregister(self, self._channel.run_id)

    async def _read(self, conn: socket.socket, parser: FrameConnection, rest: bytes) -> None:
        channel = self._channel
        assert channel is not None
        fd = conn.fileno()
        first = [rest] if rest else []

        async def receive() -> bytes:
            return first.pop() if first else await read_chunk(fd)

        try:
            await pump_connection(receive, parser, channel.send)
        finally:
            channel.connection_closed()
            self._open.discard(conn)
            anyio.notify_closing(conn)
            conn.close()

    def describe(self) -> dict[str, Any]:
        path = self._listener.path if self._listener is not None else None
        return {"kind": self.kind, "path": os.fspath(path) if path else None, "shared": True}

    async def aclose(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        """Stop listening for the run and close its connections, at once."""
        if self._listener is not None and self._channel is not None:
            self._listener.unregister(self, self._channel.run_id)
        for _ in self._waiting:
            assert self._channel is not None
            self._channel.connection_closed()
        self._waiting.clear()
        for conn in self._open:
            conn.close()
        self._open.clear()
