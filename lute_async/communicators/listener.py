"""A listening socket shared by the Unix-socket and TCP communicators: accept connections
while the task runs, drain the backlog once it has exited, read each connection's frames.

Floods are bounded: at most ``max_pending_hellos`` connections wait for their hello and the
run holds at most its channel's ``max_connections`` (extra ones are closed at once), and when
the process is out of file descriptors the accept loop backs off instead of spinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from lute_async.communicators.base import ChildSetup, FrameConnection, RunChannel
from lute_async.communicators.fdio import read_chunk
from lute_async.communicators.pump import pump_connection
from lute_async.errors import HandshakeError
from lute_async.logs import get_logger
from lute_async.messages import Hello

#: How one connection's hello is checked (None: the v1 hello) and what is sent to it first.
Handshake = tuple[Callable[[Any], Hello] | None, Callable[[], Awaitable[None]] | None]

#: Connections one listener lets wait for their hello at once: strangers (no hello, no
#: secret yet) can hold no more file descriptors than this for ``hello_timeout``.
MAX_PENDING_HELLOS = 64
#: accept() errors that concern only the connection being accepted (its peer went away, or
#: the network failed under it): take the next one. Any other error (EMFILE, ENFILE, ENOBUFS,
#: ENOMEM above all) holds for every connection waiting, so the accept loop backs off.
PEER_GONE = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.EPERM,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENOPROTOOPT,
        errno.EOPNOTSUPP,
    }
)
#: First and longest pause between accept retries while accept fails (descriptors exhausted).
RETRY_FIRST = 0.01
RETRY_LONGEST = 1.0


class Exhaustion:
    """A listener's episodes of failed accepts (out of file descriptors): the first failure of
    an episode is logged, the others counted, and one line says how many when it ends."""

    __slots__ = ("failed", "kind", "since")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        #: Failed accept() calls of the current episode, and when it began.
        self.failed = 0
        self.since = 0.0

    def note(self, exc: OSError) -> None:
        """Log the first failed accept of an episode; count the others."""
        if not self.failed:
            self.since = time.monotonic()
            get_logger().error("accept_failed", kind=self.kind, error=str(exc))
        self.failed += 1

    def accept_waiting(self, sock: socket.socket, admit: Callable[[socket.socket], None]) -> bool:
        """Accept every connection waiting on ``sock``, handing each to ``admit``; False when
        accept fails for all of them (out of file descriptors: noted as this episode's)."""
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno in PEER_GONE:
                    continue
                self.note(exc)
                return False
            self.end()
            admit(conn)

    def end(self) -> None:
        """End the episode (an accept worked, or the listener closes) with one line saying how
        many accepts failed."""
        if self.failed:
            get_logger().warning(
                "accept_failures",
                kind=self.kind,
                failed_accepts=self.failed,
                seconds=round(time.monotonic() - self.since, 3),
            )
            self.failed = 0


async def _cancel_when_set(event: asyncio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class ListeningCommunicator:
    """Base of socket communicators; subclasses bind the socket and name the child's variable."""

    kind = "listener"
    require_secret = False
    hello_timeout: float | None = None

    def __init__(self, *, max_pending_hellos: int = MAX_PENDING_HELLOS) -> None:
        self.max_pending_hellos = max_pending_hellos
        self._sock: socket.socket | None = None
        self._channel: RunChannel | None = None
        self._open: set[socket.socket] = set()
        #: Accepted connections that have not completed their hello yet.
        self._pending_hellos = 0
        self._exhaustion = Exhaustion(self.kind)

    def _bind(self) -> socket.socket:
        raise NotImplementedError

    def _child_env(self) -> dict[str, str]:
        raise NotImplementedError

    def _admit(self, conn: socket.socket) -> str | None:
        """Why ``conn`` must be refused, or None to accept it."""
        return None

    def _handshake(self, conn: socket.socket) -> Handshake:
        """How ``conn``'s hello is checked and its greeting: by default the v1 hello, no
        greeting."""
        return None, None

    async def open(self, channel: RunChannel) -> ChildSetup:
        self._channel = channel
        sock = self._bind()
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        self._sock = sock
        return ChildSetup(env=self._child_env())

    def child_started(self) -> None:
        """Nothing to hand over: children connect to the listening socket."""

    async def serve(self, exited: asyncio.Event) -> None:
        sock = self._sock
        assert sock is not None
        async with anyio.create_task_group() as connections:
            # The accept loop runs in this task until the exit cancels it (one task group less
            # per run than a task group of its own).
            with anyio.CancelScope() as accepting:
                connections.start_soon(_cancel_when_set, exited, accepting)
                await self._accept_forever(sock, connections)
            # Connections a finished task made but that were not accepted yet still hold its
            # messages: take every one waiting in the backlog before closing the listener.
            self._accept_waiting(sock, connections)
            self._close_listener()

    async def _accept_forever(self, sock: socket.socket, connections: TaskGroup) -> None:
        delay = RETRY_FIRST
        while True:
            await anyio.wait_readable(sock)
            if self._accept_waiting(sock, connections):
                delay = RETRY_FIRST
                continue
            # Out of descriptors. The listener stays readable while connections wait in the
            # backlog, so waiting on readiness alone would spin, and nothing signals that a
            # descriptor was freed: only retrying tells. A pause that doubles up to
            # RETRY_LONGEST keeps the retries few while the process recovers within a second.
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_LONGEST)

    def _accept_waiting(self, sock: socket.socket, connections: TaskGroup) -> bool:
        """Accept every connection waiting; False when accept fails for all of them (out of
        file descriptors)."""

        def admit(conn: socket.socket) -> None:
            refusal = self._refusal(conn)
            if refusal is not None:
                assert self._channel is not None
                self._channel.protocol_error(self.kind, 0, HandshakeError(refusal))
                conn.close()
                return
            conn.setblocking(False)
            self._open.add(conn)
            self._pending_hellos += 1
            connections.start_soon(self._read_connection, conn)

        return self._exhaustion.accept_waiting(sock, admit)

    def _refusal(self, conn: socket.socket) -> str | None:
        """Why ``conn`` is closed at once: refused by :meth:`_admit`, or over a cap."""
        assert self._channel is not None
        if self._pending_hellos >= self.max_pending_hellos:
            return f"{self.max_pending_hellos} connections already wait for their hello"
        reason = self._admit(conn)
        if reason is None and not self._channel.connection_opened():
            reason = f"the run already has {self._channel.max_connections} connections open"
        return reason

    async def _read_connection(self, conn: socket.socket) -> None:
        channel = self._channel
        assert channel is not None
        fd = conn.fileno()
        check_hello, greet = self._handshake(conn)
        parser = FrameConnection(
            channel, self.kind, require_secret=self.require_secret, check_hello=check_hello
        )
        waiting = True

        def greeted() -> None:
            nonlocal waiting
            waiting = False
            self._pending_hellos -= 1

        try:
            await pump_connection(
                lambda: read_chunk(fd),
                parser,
                channel.send,
                hello_timeout=self.hello_timeout,
                on_hello=greeted,
                greet=greet,
            )
        finally:
            if waiting:
                self._pending_hellos -= 1
            channel.connection_closed()
            self._open.discard(conn)
            anyio.notify_closing(conn)
            conn.close()

    def _close_listener(self) -> None:
        self._exhaustion.end()
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
