"""A listening socket shared by the Unix-socket and TCP communicators: accept connections
while the task runs, drain the backlog once it has exited, read each connection's frames."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import anyio
from anyio.abc import TaskGroup

from lute_async.communicators.base import ChildSetup, FrameConnection, RunChannel, pump_connection
from lute_async.communicators.fdio import read_chunk
from lute_async.errors import HandshakeError
from lute_async.logs import get_logger


class ListeningCommunicator:
    """Base of socket communicators; subclasses bind the socket and name the child's variable."""

    kind = "listener"
    require_secret = False
    hello_timeout: float | None = None

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._channel: RunChannel | None = None
        self._open: set[socket.socket] = set()

    def _bind(self) -> socket.socket:
        raise NotImplementedError

    def _child_env(self) -> dict[str, str]:
        raise NotImplementedError

    def _admit(self, conn: socket.socket) -> str | None:
        """Why ``conn`` must be refused, or None to accept it."""
        return None

    async def open(self, channel: RunChannel) -> ChildSetup:
        self._channel = channel
        sock = self._bind()
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        self._sock = sock
        return ChildSetup(env=self._child_env())

    def child_started(self) -> None:
        """Nothing to hand over: children connect to the listening socket."""

    async def serve(self, exited: anyio.Event) -> None:
        sock = self._sock
        assert sock is not None
        async with anyio.create_task_group() as connections:
            async with anyio.create_task_group() as accepting:
                accepting.start_soon(self._accept_forever, sock, connections)
                await exited.wait()
                accepting.cancel_scope.cancel()
            # Connections a finished task made but that were not accepted yet still hold its
            # messages: take every one waiting in the backlog before closing the listener.
            self._accept_waiting(sock, connections)
            self._close_listener()

    async def _accept_forever(self, sock: socket.socket, connections: TaskGroup) -> None:
        while True:
            await anyio.wait_readable(sock)
            self._accept_waiting(sock, connections)

    def _accept_waiting(self, sock: socket.socket, connections: TaskGroup) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: refuse this one, keep the run going
                get_logger().error("accept_failed", kind=self.kind, error=str(exc))
                return
            reason = self._admit(conn)
            if reason is not None:
                assert self._channel is not None
                self._channel.protocol_error(self.kind, 0, HandshakeError(reason))
                conn.close()
                continue
            conn.setblocking(False)
            self._open.add(conn)
            connections.start_soon(self._read_connection, conn)

    async def _read_connection(self, conn: socket.socket) -> None:
        channel = self._channel
        assert channel is not None
        fd = conn.fileno()
        parser = FrameConnection(channel, self.kind, require_secret=self.require_secret)
        try:
            await pump_connection(
                lambda: read_chunk(fd), parser, channel.send, hello_timeout=self.hello_timeout
            )
        finally:
            self._open.discard(conn)
            anyio.notify_closing(conn)
            conn.close()

    def _close_listener(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(RuntimeError):
                anyio.notify_closing(self._sock)
            self._sock.close()
            self._sock = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    async def aclose(self) -> None:
        self._close_listener()
        for conn in list(self._open):
            conn.close()
        self._open.clear()
