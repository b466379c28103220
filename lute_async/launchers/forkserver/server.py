"""The executor's side of one fork server: start it, send it spawn requests, read its reports.

The server (:mod:`lute_async.forkserver_main`) is this process's child; its tasks are not, so
their exit status and rusage come from the server's ``wait4`` over the control connection, and
a stop from its ``WUNTRACED``. There is no reader task: an event-loop reader callback reads the
connection while anyone waits for a report, and a report wakes the waiters it is for (by pid or
request id), so nothing outlives the runs that use the server. Servers are kept per executor
(its working directory), Python, ``PYTHONPATH`` and preload list (and sandbox and cwd: a
:class:`Box` starts the server inside a sandbox, :mod:`.boxed`), started on first use and ended
by :func:`close_servers`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import anyio
import msgpack

from lute_async.errors import LaunchError
from lute_async.forkserver_main import ENTRY, MAX_FDS, MAX_MESSAGE, SANDBOXED
from lute_async.launchers.forkserver.waiting import Exit, Reports, ReportWaiters, ServerDied

#: What a server is shared by: (workdir, python, PYTHONPATH, preloads, sandbox and its cwd).
Key = tuple[str, str, str, tuple[str, ...], tuple[Any, ...] | None]
#: A ``struct ucred`` (pid, uid, gid), as SCM_CREDENTIALS carries it.
UCRED = struct.Struct("iII")

#: The prefix of the variables a run sets for its task (none of them is the server's).
RUN_VARIABLES = "LUTE_ASYNC_"
#: The key of the waiters for the server's ``ready`` report (children are > 0, requests < 0).
READY = 0
#: How long a spawn request may take to be answered (a fork is well under a second).
SPAWN_TIMEOUT = 30.0


class ServerProcess(Protocol):
    """The server's process as the executor holds it (a ``Popen``, or a sandbox's)."""

    @property
    def pid(self) -> int: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class Box(ServerProcess, Protocol):
    """A server process started inside a sandbox (:mod:`.boxed`), once ``start`` is done."""

    async def start(self, command: list[str], env: dict[str, str], fd: int) -> None: ...


class Server(ReportWaiters):
    """One running fork server and its control connection."""

    def __init__(
        self, python: str, preload: Sequence[str], env: Mapping[str, str], box: Box | None = None
    ) -> None:
        self.preload = tuple(preload)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with contextlib.suppress(OSError):  # a spawn request carries the run's environment
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        self.sock = ours
        # No run's variables (its secret, params, fds): each child gets its own after the fork.
        server_env = {k: v for k, v in env.items() if not k.startswith(RUN_VARIABLES)}
        server_env["PYTHONUNBUFFERED"] = "1"  # its children's stdout, like a spawned worker's
        command = [python, "-c", ENTRY, str(theirs.fileno()), str(os.getpid()), *self.preload]
        self.popen: ServerProcess
        self._pending: tuple[Box, list[str], dict[str, str], socket.socket] | None = None
        self._launched = anyio.Event()
        if box is not None:  # started by start(): tasks say hello with their credentials
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self.popen = box
            self._pending = (box, [*command[:3], SANDBOXED, *command[3:]], server_env, theirs)
        else:
            try:
                self.popen = subprocess.Popen(
                    command,
                    env=server_env,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
            except OSError as exc:
                ours.close()
                raise LaunchError(f"cannot start a fork server with {python!r}: {exc}") from exc
            finally:
                theirs.close()
            self._launched.set()
        self.boxed = box is not None
        self.ready = False
        #: The server's environment as its ``ready`` report gave it (None: not known).
        self.env: dict[str, str] | None = None
        self.dead: str | None = None
        self._reports = Reports()
        self._next_id = 0
        #: The waiters by what wakes them: a child's pid, minus a request's id, READY.
        self._waiting = {}
        #: The loop whose reader callback reads the connection (while anyone waits).
        self._watching = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    # -- reading reports --------------------------------------------------------------------

    def _read(self) -> None:
        """Every report waiting on the connection (without blocking)."""
        while self.dead is None:
            try:
                data, sender = self._receive()
            except BlockingIOError:
                return
            except OSError as exc:
                self._died(f"its connection failed: {exc}")
                return
            if not data:
                self._died("it closed its connection")
                return
            report = msgpack.unpackb(data, raw=False)
            if report.get("kind") == "hello" and sender is not None:
                self._reports.hellos[report["id"]] = sender
                self._wake(-report["id"])
            else:
                self._wake(self._report(report))

    def _receive(self) -> tuple[bytes, int | None]:
        """One report and (from a sandboxed server) the sender's pid in this namespace."""
        if not self.boxed:
            return self.sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT), None
        data, ancillary, _, _ = self.sock.recvmsg(
            MAX_MESSAGE, socket.CMSG_SPACE(UCRED.size), socket.MSG_DONTWAIT
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                return data, int(UCRED.unpack(payload[: UCRED.size])[0])
        return data, None

    def _report(self, report: dict[str, Any]) -> int | None:
        """Keep ``report``; the key of the waiters it is for (None: every waiter)."""
        kind, reports = report.get("kind"), self._reports
        if kind == "exit":
            pid = report["pid"]
            reports.exits[pid] = Exit(report["status"], report["usage"])
            return int(pid)
        if kind in ("spawned", "refused"):
            reports.spawned[report["id"]] = report
            return -int(report["id"])
        if kind == "stopped":
            reports.stopped.add(report["pid"])
            return int(report["pid"])
        if kind == "ready":
            self.ready = True
            self.env = report.get("env")
            return READY
        if kind == "preload_failed":
            self.dead = (
                f"the fork server cannot import its preload module {report['module']!r}: "
                f"{report['error']}"
            )
        return None

    def _died(self, why: str) -> None:
        """The connection ended: reap the server and say how it ended."""
        self._unwatch()
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            code = self.popen.wait(timeout=5)  # it has closed its end: it is exiting
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if self.dead is None:
            self.dead = f"the fork server (pid {self.pid}) ended ({how}): {why}"
        self._wake(None)  # every waiter: ServerDied

    # -- requests ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Wait until the server has imported its preloads (LaunchError naming the module that
        failed, or saying how the server ended); a sandboxed one is started here, once."""
        if self._pending is not None:
            (box, command, env, theirs), self._pending = self._pending, None
            try:
                await box.start(command, env, theirs.fileno())
            except BaseException:
                self.dead = "its sandbox did not start"
                raise
            finally:
                theirs.close()
                self._launched.set()
        await self._launched.wait()
        try:
            await self._until(READY, lambda: self.ready)
        except ServerDied as died:
            raise LaunchError(f"{died} (preload {list(self.preload)})") from None

    async def spawn(self, request: dict[str, Any], fds: Sequence[int]) -> dict[str, Any]:
        """Have the server fork a child for ``request`` with ``fds``; its ``spawned`` report.

        Shielded: a spawn half-done when its caller is cancelled would leave a task no one
        waits for; the caller ends the child instead."""
        self._next_id += 1
        request = {**request, "kind": "spawn", "id": self._next_id}
        if self.env is not None:  # what differs from the server's: the child changes only that
            request["env"], request["unset"] = env_changes(self.env, request["env"])
        data = msgpack.packb(request, use_bin_type=True)
        if len(data) > MAX_MESSAGE or len(fds) > MAX_FDS:
            raise LaunchError(
                f"a spawn request of {len(data)} bytes and {len(fds)} fds is over the fork "
                f"server's {MAX_MESSAGE} bytes and {MAX_FDS} fds (a very large environment?)"
            )
        self._read()  # what the server has sent so far: it must never block on a full buffer
        if self.dead is not None:
            raise ServerDied(self.dead)
        try:
            socket.send_fds(self.sock, [data], list(fds))
        except OSError as exc:
            self._died(f"a spawn request could not be sent: {exc}")
            raise ServerDied(self.dead or str(exc)) from exc
        spawned, hellos, number = self._reports.spawned, self._reports.hellos, request["id"]

        def done() -> bool:  # a sandboxed child's own hello says its pid out here
            report = spawned.get(number)
            return report is not None and (
                not self.boxed or report["kind"] == "refused" or number in hellos
            )

        # One scope, shielded with its own deadline (fail_after would add a second).
        deadline = anyio.current_time() + SPAWN_TIMEOUT
        with anyio.CancelScope(shield=True, deadline=deadline) as scope:
            await self._until(-number, done)
        if scope.cancelled_caught:
            raise TimeoutError(f"the fork server did not answer in {SPAWN_TIMEOUT:g} s")
        report = spawned.pop(number)
        if report["kind"] == "refused":
            raise LaunchError(f"the fork server refused the task: {report['error']}")
        report["host_pid"] = hellos.pop(number, report["pid"])
        return report

    async def wait_exit(self, pid: int) -> Exit:
        """The exit of child ``pid`` (ServerDied if the server ends first); see also
        :meth:`call_on_exit`."""
        exits = self._reports.exits
        await self._until(pid, lambda: pid in exits)
        self._reports.stopped.discard(pid)
        return exits.pop(pid)

    async def wait_stopped(self, pid: int) -> None:
        """Until child ``pid`` is stopped or has exited (its exit stays to be waited for)."""
        reports = self._reports
        await self._until(pid, lambda: pid in reports.stopped or pid in reports.exits)
        reports.stopped.discard(pid)

    def close(self) -> None:
        """End the server (its children are SIGKILLed by it, or by their death signal)."""
        if self.dead is None:
            self.dead = f"the fork server (pid {self.pid}) was closed"
        self._unwatch()
        with contextlib.suppress(OSError):
            self.sock.close()
        self._wake(None)  # every waiter: ServerDied
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait()


def env_changes(
    base: Mapping[str, str], env: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """What ``env`` sets that ``base`` lacks or has otherwise, and what ``base`` has that
    ``env`` lacks."""
    changed = {key: value for key, value in env.items() if base.get(key) != value}
    return changed, [key for key in base if key not in env]


_SERVERS: dict[Key, Server] = {}


async def server_for(key: Key, env: Mapping[str, str], box: Box | None = None) -> Server:
    """The running server for ``key``, started (and waited for) on first use, inside ``box``
    if given; a dead one is replaced."""
    server = _SERVERS.get(key)
    if server is not None and server.ready and server.dead is None:
        return server  # the common case: no start to wait for (not even a checkpoint)
    if server is not None and server.dead is not None:
        del _SERVERS[key]
        server.close()
        server = None
    if server is None:
        server = _SERVERS[key] = Server(key[1], key[3], env, box)
    try:
        await server.start()
    except LaunchError:
        if _SERVERS.get(key) is server:
            del _SERVERS[key]
        server.close()
        raise
    return server


def close_servers(workdir: str | os.PathLike[str] | None = None) -> None:
    """End the fork servers of the executor with ``workdir`` (all of them for None)."""
    wanted = None if workdir is None else os.fspath(workdir)
    for key in [key for key in _SERVERS if wanted is None or key[0] == wanted]:
        _SERVERS.pop(key).close()
