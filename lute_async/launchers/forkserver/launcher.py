"""The Forkserver launcher: ``@task`` functions forked from a server that imported them once.

``launcher=Forkserver(preload=["mypkg.tasks"])`` on :meth:`Executor.run_function` (or
``launcher = {kind = "forkserver", preload = [...]}`` in a task file). The forked child is the
task as a spawned worker would be: its own pid, session and process group, the run's fds (by
``SCM_RIGHTS``, at the numbers the communicators chose), environment, cwd and rlimits, and the
same record. The executor signals the child's group as the local launcher does; it learns of
its exit from the server (its parent), and waits on a pidfd when the server itself has died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from lute_async.communicators.fdio import close_fd
from lute_async.errors import LaunchError
from lute_async.launchers.base import ExitStatus, GroupSignals, LaunchSpec, Notify
from lute_async.launchers.forkserver.boxed import BoxedServer, box_key, boxed_request
from lute_async.launchers.forkserver.server import Server, server_for
from lute_async.launchers.forkserver.waiting import Exit, ServerDied
from lute_async.worker import ENTRY as WORKER_ENTRY

#: This machine's name, for records and the ``started`` event (one lookup, not one a run).
HOST = socket.gethostname()
#: How long the child of a dead server may take to be gone (it is SIGKILLed by the kernel).
ORPHAN_WAIT = 5.0


def worker_target(argv: Sequence[str]) -> str | None:
    """The ``@task`` target of a worker command line (``python -c ENTRY target``), else None."""
    if len(argv) == 4 and argv[1] == "-c" and argv[2] == WORKER_ENTRY:
        return argv[3]
    return None


def checked_target(spec: LaunchSpec) -> str:
    """The @task target of ``spec``; LaunchError for a command or a missing cwd."""
    target = worker_target(spec.argv)
    if target is None:
        raise LaunchError(
            f"the forkserver launcher runs @task functions (run_function), not the command "
            f"{spec.argv[:1]!r} of run {spec.name!r}"
        )
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        raise LaunchError(f"working directory {spec.cwd!r} of run {spec.name!r} does not exist")
    return target


class ForkserverProcess(GroupSignals):
    """A task forked by a fork server: signalled by process group, reaped by the server."""

    def __init__(
        self,
        server: Server,
        pid: int,
        argv: list[str],
        inherited_rss: float,
        reported_as: int | None = None,
    ) -> None:
        self._server = server
        self.pid: int | None = pid
        #: The pid the server reports it by (its own, inside a sandbox's pid namespace).
        self.reported_as = pid if reported_as is None else reported_as
        self.argv = argv
        self.started = time.monotonic()
        self.returncode: int | None = None
        self.inherited_rss_kib = inherited_rss  # a fork starts at the server's RSS
        self._status: asyncio.Future[ExitStatus] | None = None  # once on_exit watches
        self._orphan_wait: asyncio.Task[ExitStatus] | None = None  # held while it runs

    def on_exit(self, callback: Callable[[ExitStatus], None]) -> bool:
        """Call ``callback`` with the exit status from the server's report callback (no task
        waits for it). If the server dies first, a task waits for the orphaned child to go
        (a few seconds at most) and then calls it."""
        loop = asyncio.get_running_loop()
        status = self._status = loop.create_future()

        def settle(result: ExitStatus) -> None:
            status.set_result(result)
            callback(result)

        def reported(ended: Exit | None) -> None:
            if ended is not None:
                settle(self._ended(ended))
                return
            died = ServerDied(self._server.dead or f"the fork server (pid {self._server.pid}) died")
            orphaned = self._orphan_wait = loop.create_task(self._orphaned(died))
            orphaned.add_done_callback(
                lambda task: None if task.cancelled() else settle(task.result())
            )

        self._server.call_on_exit(self.reported_as, reported)
        return True

    async def wait(self) -> ExitStatus:
        if self._status is not None:  # reported to on_exit's callback: the same status
            return await asyncio.shield(self._status)
        try:
            ended = await self._server.wait_exit(self.reported_as)
        except ServerDied as died:
            return await self._orphaned(died)
        return self._ended(ended)

    def _ended(self, ended: Exit) -> ExitStatus:
        """The child's end as the server reported it; its group's stragglers are ended."""
        code = os.waitstatus_to_exitcode(ended.status)
        self.returncode = code
        self.send_signal(signal.SIGKILL)  # stragglers in its group, as the local launcher does
        usage = {
            "wall": time.monotonic() - self.started,
            **{key: float(value) for key, value in ended.usage.items()},
            "inherited_rss_kib": self.inherited_rss_kib,
        }
        if code < 0:
            return ExitStatus(exit_code=None, signal=-code, usage=usage)
        return ExitStatus(exit_code=code, usage=usage)

    async def _orphaned(self, died: ServerDied) -> ExitStatus:
        """The server died under this task: the kernel kills the child (its death signal);
        wait until it is gone (on a pidfd: it is not ours to wait4), then FAILED with the
        reason. The pidfd is opened only now, not for every task: until its new parent
        reaps it, the killed child keeps its pid."""
        self.send_signal(signal.SIGKILL)
        try:
            pidfd: int | None = os.pidfd_open(self.pid) if self.pid is not None else None
        except OSError:  # already reaped: gone
            pidfd = None
        if pidfd is not None:
            try:
                with anyio.move_on_after(ORPHAN_WAIT):
                    await anyio.wait_readable(pidfd)
            finally:
                close_fd(pidfd)
        self.returncode = -signal.SIGKILL
        message = f"{died}; the task (pid {self.pid}) was killed with it"
        error = {"type": "ForkserverDied", "message": message, "traceback": None}
        usage = {"wall": time.monotonic() - self.started}
        return ExitStatus(exit_code=None, usage=usage, error=error)

    async def wait_stopped(self) -> None:
        """Until the server reports the child stopped (``WUNTRACED``) or ended."""
        if self.pid is not None and self.returncode is None:
            with contextlib.suppress(ServerDied):
                await self._server.wait_stopped(self.reported_as)

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "launch_command": self.argv,
            "pid": self.pid,
            "forkserver_pid": self._server.pid,
        }
        if isinstance(self._server.popen, BoxedServer):
            facts["sandbox"] = {**self._server.popen.describe(), "task_pid": self.reported_as}
        return facts


class Forkserver:
    """Run ``@task`` functions as children forked from a server that imported ``preload``.

    One server per executor, Python, ``PYTHONPATH`` and preload list, started on first use
    (a preload that fails to import is a LaunchError naming it) and restarted if it dies."""

    kind = "forkserver"
    #: Applies ``LaunchSpec.sandbox``: the server runs inside it (see :mod:`.boxed`).
    sandboxes = True

    def __init__(self, preload: Sequence[str] = (), *, python: str | None = None) -> None:
        if isinstance(preload, str) or not all(isinstance(m, str) and m for m in preload):
            raise TypeError(f"preload must be a list of module names, not {preload!r}")
        self.preload = tuple(preload)
        #: The server's interpreter; by default the one of the run's worker command.
        self.python = python

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": HOST, "preload": list(self.preload)}

    def communicators(self, requested: tuple[Any, ...]) -> tuple[Any, ...]:
        """The pipe alone when the run asked for the pipe and a socket (the default): a forked
        task reports over fd 3, and a socket bound and served per run costs a share of what
        the fork does.
        A run that asks for a socket (or TCP) without the pipe gets what it asked for."""
        if "pipe" in requested and "socket" in requested:
            return tuple(kind for kind in requested if kind != "socket")
        return requested

    async def launch(self, spec: LaunchSpec, notify: Notify) -> ForkserverProcess:
        target = checked_target(spec)
        python = self.python or spec.argv[0] or sys.executable
        boxed = box_key(spec) if spec.sandbox is not None else None
        key = (
            os.fspath(spec.run_dir.parent),
            python,
            spec.env.get("PYTHONPATH", ""),
            self.preload,
            boxed,
        )
        fds, targets = [], []
        for fd, number in ((spec.stdin, 0), (spec.stdout, 1), (spec.stderr, 2)):
            if fd is not None:
                fds.append(fd)
                targets.append(number)
        fds += spec.pass_fds
        targets += spec.pass_fds
        env, opened = spec.env, list[int]()
        if boxed is not None:
            env, opened = boxed_request(spec, targets)
        try:
            box = None if boxed is None else BoxedServer(*boxed, name=spec.name)
            server = await server_for(key, spec.env, box)
            spawned = await self._spawn(server, spec, target, env, fds + opened, targets)
        finally:
            for fd in opened:
                os.close(fd)
        process = ForkserverProcess(
            server, spawned["host_pid"], list(spec.argv), spawned["rss_kib"], spawned["pid"]
        )
        command = [f"forkserver:{server.pid}", target]
        try:
            await notify("started", {"pid": process.pid, "host": HOST, "command": command})
        except BaseException:  # cancelled before the run could hold it: nobody would end it
            process.send_signal(signal.SIGKILL)
            raise
        return process

    async def _spawn(
        self,
        server: Server,
        spec: LaunchSpec,
        target: str,
        env: dict[str, str],
        fds: list[int],
        targets: list[int],
    ) -> dict[str, Any]:
        request = {
            "target": target,
            "env": env,
            "cwd": spec.cwd,
            "fds": targets,
            "limits": spec.limits.to_dict() if spec.limits is not None else None,
        }
        return await server.spawn(request, fds)
