"""The listening side of an executor's shared Unix socket (see
:mod:`lute_async.communicators.shared_socket`): accept, read each connection's hello within
the pre-hello limits, hand the connection to the run it names, refuse the others.

It works from event-loop reader callbacks, not tasks: a run whose task never connects costs a
registration and nothing more. A connection refused before it reaches a run is recorded as a
protocol error of the run its hello names, else of the run its process belongs to
(``LUTE_ASYNC_RUN`` in its environment, read only then), else logged, bounded by an error
budget.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
from pathlib import Path
from typing import Any, Protocol

from lute_async.communicators.bounds import HELLO_BUFFER, HelloDecoder
from lute_async.communicators.listener import (
    MAX_PENDING_HELLOS,
    RETRY_FIRST,
    RETRY_LONGEST,
    Exhaustion,
)
from lute_async.communicators.socket import bind_unix, peer_credentials, uid_refusal
from lute_async.error_budget import ErrorBudget
from lute_async.errors import HandshakeError, ProtocolError
from lute_async.logs import get_logger
from lute_async.messages import _brief
from lute_async.wire import ENV_RUN

#: Seconds a connection of the shared socket may take to send its hello (as TCP's default).
HELLO_TIMEOUT = 10.0
_RUN_VARIABLE = f"{ENV_RUN}=".encode()


class SharedRun(Protocol):
    """A run registered with the listener, as the listener sees it."""

    def refused(self, error: ProtocolError) -> None:
        """A connection of the run's was refused before reaching it."""

    def take(self, conn: socket.socket, hello: bytes, rest: bytes) -> None:
        """A connection whose hello (``hello``, followed by ``rest``) names the run."""

    @property
    def task_pid(self) -> int | None:
        """The pid of the run's task process, once it runs."""


class PendingHello:
    """An accepted connection whose hello is not complete yet."""

    __slots__ = ("conn", "decoder", "fd", "pid", "refusal", "timer", "watched")

    def __init__(self, conn: socket.socket, pid: int, refusal: str | None) -> None:
        self.conn = conn
        self.fd = conn.fileno()
        self.pid = pid
        #: Why it is refused whatever its hello says (another uid's); None for none.
        self.refusal = refusal
        self.decoder = HelloDecoder(HELLO_BUFFER)
        self.timer: asyncio.TimerHandle | None = None
        self.watched = False  # a reader callback is registered for it


class SharedListener:
    """The listening socket at ``path`` that the runs registered with it share."""

    kind = "socket"

    def __init__(
        self,
        path: Path,
        *,
        hello_timeout: float = HELLO_TIMEOUT,
        max_pending_hellos: int = MAX_PENDING_HELLOS,
    ) -> None:
        self.path = path
        self.hello_timeout = hello_timeout
        self.max_pending_hellos = max_pending_hellos
        self._loop = asyncio.get_running_loop()
        sock = bind_unix(path)
        try:
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
            info = os.stat(path)
        except OSError:
            sock.close()
            raise
        self._identity = (info.st_dev, info.st_ino)
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        #: Whether connections wait in the backlog, asked at each run's exit.
        self._backlog = select.poll()
        self._backlog.register(self._fd, select.POLLIN)
        self._runs: dict[str, SharedRun] = {}
        #: The runs by their task's pid: whose a refused connection is, even once the task has
        #: exited (its /proc environment is gone by then).
        self._pids: dict[int, SharedRun] = {}
        self._pending: set[PendingHello] = set()
        self._exhaustion = Exhaustion(self.kind)
        self._delay = RETRY_FIRST
        self._retry: asyncio.TimerHandle | None = None
        self._closing = False
        #: Protocol errors of connections that reached no run.
        self.errors = ErrorBudget("protocol_errors", "(no run)")
        self._loop.add_reader(self._fd, self._on_acceptable)

    # -- the runs ---------------------------------------------------------------------------

    def usable(self) -> bool:
        """True while new runs can use it: open, served by the running loop, and its socket
        file still the one it bound."""
        if self._closing or self._loop is not asyncio.get_running_loop():
            return False
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._identity

    def register(self, communicator: SharedRun, run_id: str) -> None:
        self._runs[run_id] = communicator

    def note_pid(self, communicator: SharedRun, pid: int) -> None:
        """The run's task process is ``pid``."""
        self._pids[pid] = communicator

    def unregister(self, communicator: SharedRun, run_id: str) -> None:
        """Forget the run: hellos naming it are refused from now on."""
        if self._runs.get(run_id) is communicator:
            del self._runs[run_id]
        pid = communicator.task_pid
        if pid is not None and self._pids.get(pid) is communicator:
            del self._pids[pid]
        if self._closing and not self._runs:
            self._shut()

    def drain(self) -> None:
        """Take every connection waiting in the backlog and every hello already received, so
        that what an exited task sent reaches its run before the run stops listening."""
        if self._sock is None:
            return
        if self._backlog.poll(0):  # a poll, not an accept that fails (an exception a run)
            self._accept_waiting()
        for pending in list(self._pending):
            self._read_hello(pending)

    # -- accepting --------------------------------------------------------------------------

    def _on_acceptable(self) -> None:
        if self._accept_waiting():
            self._delay = RETRY_FIRST
            return
        # Out of descriptors: the listener stays readable while connections wait, so stop
        # watching it and retry after a pause that doubles up to RETRY_LONGEST.
        self._loop.remove_reader(self._fd)
        self._retry = self._loop.call_later(self._delay, self._resume)
        self._delay = min(self._delay * 2, RETRY_LONGEST)

    def _resume(self) -> None:
        self._retry = None
        if self._sock is not None:
            self._loop.add_reader(self._fd, self._on_acceptable)

    def _accept_waiting(self) -> bool:
        """Accept every connection waiting; False when accept fails for all of them (out of
        file descriptors)."""
        assert self._sock is not None
        return self._exhaustion.accept_waiting(self._sock, self._admit)

    def _admit(self, conn: socket.socket) -> None:
        try:
            pid, uid = peer_credentials(conn)
        except OSError:  # no credentials to check: nothing to trust
            conn.close()
            return
        pending = PendingHello(conn, pid, uid_refusal(pid, uid))
        if len(self._pending) >= self.max_pending_hellos:
            cap = self.max_pending_hellos
            self._refuse(pending, HandshakeError(f"{cap} connections already wait for their hello"))
            return
        conn.setblocking(False)
        self._pending.add(pending)
        pending.timer = self._loop.call_later(self.hello_timeout, self._timed_out, pending)
        self._read_hello(pending)  # a reporter's hello is usually there already

    def _read_hello(self, pending: PendingHello) -> None:
        """Read what ``pending`` sent until its hello is complete (then route it), it fails,
        or nothing more is there yet (then wait for it with a reader callback)."""
        conn, decoder = pending.conn, pending.decoder
        while True:
            try:
                chunk = conn.recv(HELLO_BUFFER)
            except (BlockingIOError, InterruptedError):
                if not pending.watched:
                    pending.watched = True
                    self._loop.add_reader(pending.fd, self._read_hello, pending)
                return
            except OSError:
                chunk = b""  # reset by the peer: an end like any other
            if not chunk:
                self._ended(pending)
                return
            try:
                greeted = decoder.feed(chunk)
            except ProtocolError as exc:
                self._refuse(pending, exc)
                return
            if greeted is not None:
                self._route(pending, *greeted)
                return

    def _ended(self, pending: PendingHello) -> None:
        """The peer closed before its hello was complete."""
        left = pending.decoder.pending
        if not left:  # it sent nothing: nothing to report
            self._forget(pending)
            pending.conn.close()
            return
        message = f"connection ended inside a frame; {left} bytes discarded"
        self._refuse(pending, ProtocolError(message, offset=0))

    def _timed_out(self, pending: PendingHello) -> None:
        pending.timer = None
        error = f"no hello frame within {self.hello_timeout} s; connection dropped"
        self._refuse(pending, HandshakeError(error))

    def _route(self, pending: PendingHello, frame: Any, hello: bytes, rest: bytes) -> None:
        """Hand a connection to the run its hello names, once that run has checked it."""
        hello_like = type(frame) is dict and "v" in frame
        named = frame.get("run") if hello_like else None
        run = self._runs.get(named) if type(named) is str else None
        if pending.refusal is not None:
            self._refuse(pending, HandshakeError(pending.refusal), run)
        elif not hello_like:
            self._refuse(pending, HandshakeError("first frame was not a hello"))
        elif run is None:
            unknown = f"hello for unknown run {_brief(named)} (no run by that id listens here)"
            self._refuse(pending, HandshakeError(unknown))
        else:
            self._forget(pending)
            run.take(pending.conn, hello, rest)

    # -- refusing ---------------------------------------------------------------------------

    def _forget(self, pending: PendingHello) -> None:
        """Stop reading ``pending``'s hello (its connection stays open)."""
        self._pending.discard(pending)
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if pending.watched:
            pending.watched = False
            self._loop.remove_reader(pending.fd)

    def _refuse(
        self,
        pending: PendingHello,
        error: ProtocolError,
        run: SharedRun | None = None,
    ) -> None:
        """Close ``pending``'s connection with ``error``, recorded by ``run``, else by the run
        its process belongs to, else logged."""
        self._forget(pending)
        # Whose it is: the run whose task it is, or (a descendant) named in its environment,
        # read before the close lets the peer go on (and perhaps exit).
        run = run or self._pids.get(pending.pid)
        run = run or self._runs.get(run_of_process(pending.pid) or "")
        pending.conn.close()
        if run is not None:
            run.refused(error)
        elif self.errors.add(type(error).__name__, last_source=self.kind, last_error=str(error)):
            get_logger().error(
                "protocol_error",
                run_id=None,
                source=self.kind,
                pid=pending.pid,
                socket=os.fspath(self.path),
                error=str(error),
            )

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop taking new runs; close the socket once the registered runs have ended."""
        self._closing = True
        if not self._runs:
            self._shut()

    def _shut(self) -> None:
        if self._sock is None:
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        else:
            self._loop.remove_reader(self._fd)
        self._sock.close()
        self._sock = None
        for pending in list(self._pending):
            self._forget(pending)
            pending.conn.close()
        self._exhaustion.end()


def run_of_process(pid: int) -> str | None:
    """The run process ``pid`` belongs to: ``LUTE_ASYNC_RUN`` in its environment as it started
    (None when it has none or cannot be read). Only for telling a run about a connection that
    named none; never trusted for anything else."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return None
    for entry in entries:
        if entry.startswith(_RUN_VARIABLE):
            return entry[len(_RUN_VARIABLE) :].decode(errors="replace")
    return None
