"""Local launcher: the task runs as a child process in its own session and process group.

The child is reaped through a pidfd (``os.wait4`` once it is readable), which gives the exit
status and resource usage without a thread per child or a polling loop; signals go to the
whole group so grandchildren (shell pipelines, forked workers) are ended too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import anyio

from lute_async.communicators.fdio import wait_readable
from lute_async.communicators.readiness import readiness
from lute_async.errors import LaunchError
from lute_async.hostname import hostname
from lute_async.launchers.base import ExitStatus, GroupSignals, LaunchSpec, Notify
from lute_async.launchers.guardian import GUARDIAN
from lute_async.launchers.sandboxed import SandboxedProcess
from lute_async.launchers.sandboxed import launch as launch_sandboxed
from lute_async.limits import parent_death_shim


class LocalProcess(GroupSignals):
    """A local task process (and its process group)."""

    def __init__(
        self, popen: subprocess.Popen[bytes], argv: list[str], *, guarded: bool = False
    ) -> None:
        self._popen = popen
        self.pid: int | None = popen.pid
        self.argv = argv
        self.started = time.monotonic()
        self.returncode: int | None = None
        self._reaped_status: asyncio.Future[ExitStatus] | None = None  # once on_exit watches
        # Linux carries the parent's peak RSS into a vfork'd child's ru_maxrss (exec records
        # the old mm's high-water mark), so the child's figure is only its own above this.
        self.inherited_rss_kib = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        #: Registered with the guardian (killed if the executor dies) until it is reaped.
        self.guarded = guarded
        if guarded:
            GUARDIAN.watch(popen.pid)

    def on_exit(self, callback: Callable[[ExitStatus], None]) -> bool:
        """Call ``callback`` with the exit status from the readiness callback of the
        process's pidfd, which reaps it (no task waits); False on kernels without pidfds,
        where :meth:`wait` reaps in a worker thread instead."""
        pid = self._popen.pid
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        reaped = self._reaped_status = asyncio.get_running_loop().create_future()
        watching = readiness()

        def exited(_: int) -> None:
            try:
                # A readable pidfd means the child has exited: this returns at once.
                waited, status, rusage = os.wait4(pid, os.WNOHANG)
                if waited == 0:
                    return  # not exited after all (a stale event): watch on
                ended = self._reaped(status, rusage)
            except OSError as exc:  # reaped by someone else: the run still ends, saying so
                self._released(-1)
                message = f"pid {pid} could not be reaped: {exc}"
                error = {"type": "LaunchError", "message": message, "traceback": None}
                ended = ExitStatus(exit_code=None, error=error)
            watching.unwatch(pidfd)
            os.close(pidfd)  # nothing waits on it any more
            reaped.set_result(ended)
            callback(ended)

        watching.watch(pidfd, exited)
        return True

    async def wait(self) -> ExitStatus:
        if self._reaped_status is not None:  # reaped by on_exit's callback: its status
            return await asyncio.shield(self._reaped_status)
        pid = self._popen.pid
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        if pidfd is not None:
            try:
                await wait_readable(pidfd)
                # A readable pidfd means the child has exited: this wait4 returns at once.
                _, status, rusage = os.wait4(pid, 0)  # noqa: ASYNC222
            finally:
                os.close(pidfd)  # nothing waits on it any more
        else:  # kernels before 5.3: a worker thread blocks in wait4 instead
            _, status, rusage = await anyio.to_thread.run_sync(
                os.wait4, pid, 0, abandon_on_cancel=True
            )
        return self._reaped(status, rusage)

    def _reaped(self, status: int, rusage: resource.struct_rusage) -> ExitStatus:
        """The process was reaped with ``status`` and ``rusage``: release it, end what it
        left in its group, and say how it ended."""
        wall = time.monotonic() - self.started
        code = os.waitstatus_to_exitcode(status)
        self._released(code)
        usage = {
            "wall": wall,
            "user": rusage.ru_utime,
            "system": rusage.ru_stime,
            "max_rss_kib": float(rusage.ru_maxrss),
            "inherited_rss_kib": self.inherited_rss_kib,
        }
        if code < 0:
            return ExitStatus(exit_code=None, signal=-code, usage=usage)
        return ExitStatus(exit_code=code, usage=usage)

    def _released(self, code: int) -> None:
        """The process is gone with ``code``: Popen must not reap it again, the guardian
        forgets it, and what it left in its group is ended."""
        self.returncode = self._popen.returncode = code
        if self.guarded:
            GUARDIAN.release(self._popen.pid)
        self._end_stragglers()

    async def wait_stopped(self) -> None:
        """Wait until the process is stopped (after SIGSTOP) or has ended, without reaping it,
        so a ``stopped`` event is only fired once it is true."""
        if self.pid is None or self.returncode is not None:
            return
        with contextlib.suppress(ChildProcessError):
            await anyio.to_thread.run_sync(
                os.waitid,
                os.P_PID,
                self.pid,
                os.WSTOPPED | os.WEXITED | os.WNOWAIT,
                abandon_on_cancel=True,
            )

    def _end_stragglers(self) -> None:
        # Processes the task left behind in its group (background jobs, daemons that did not
        # setsid) would hold its pipes open and outlive the run: end them with it.
        self.send_signal(signal.SIGKILL)

    def describe(self) -> dict[str, Any]:
        return {"launch_command": self.argv, "pid": self.pid}


class Local:
    """Run the command on this machine (the default launcher)."""

    kind = "local"
    #: Applies ``LaunchSpec.sandbox`` (launchers without this attribute refuse a sandbox).
    sandboxes = True

    def __init__(self, *, parent_death_signal: bool = True) -> None:
        #: End the task (SIGKILL to its group) if the executor dies: the executor process's
        #: guardian (:mod:`lute_async.launchers.guardian`) watches it.
        self.parent_death_signal = parent_death_signal

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": hostname()}

    def communicators(self, requested: tuple[Any, ...]) -> tuple[Any, ...]:
        return requested

    def command(self, spec: LaunchSpec) -> list[str]:
        """The argv to execute, wrapped by the limits shim when limits are set."""
        argv = spec.limits.wrap(spec.argv) if spec.limits is not None else list(spec.argv)
        if spec.argv and argv[0] != spec.argv[0]:
            check_executable(spec)  # a shim would otherwise turn "not found" into exit 127
        return argv

    async def launch(self, spec: LaunchSpec, notify: Notify) -> LocalProcess | SandboxedProcess:
        process: LocalProcess | SandboxedProcess
        if spec.sandbox is not None:
            process = await self.start_sandboxed(spec)
            argv = process.argv
        else:
            argv = self.command(spec)
            # On the loop: vfork holds it only until the child's exec, while a worker-thread
            # hop cost the executor 0.4-0.8 ms more CPU a run (the hop, and the GIL handed
            # back and forth at each system call Popen makes), more than the exec's wait.
            # No await between the spawn and the notify: no cancel falls between them.
            process = spawn(argv, spec, guard=self.parent_death_signal)
        try:
            await notify("started", {"pid": process.pid, "host": hostname(), "command": argv})
        except BaseException:  # cancelled before the run holds the process: end it here
            process.send_signal(signal.SIGKILL)
            raise
        return process

    async def start_sandboxed(self, spec: LaunchSpec) -> SandboxedProcess:
        """``spec.argv`` in ``spec.sandbox``: bwrap around the limits shim, behind the
        parent-death one."""
        assert spec.sandbox is not None
        inner = spec.limits.wrap(spec.argv) if spec.limits is not None else list(spec.argv)
        if spec.argv:
            check_executable(spec)
        prefix = parent_death_shim() if self.parent_death_signal else []
        return await launch_sandboxed(spec.sandbox, spec, inner, prefix, spawn)


def check_executable(spec: LaunchSpec) -> None:
    """Raise the same LaunchError as :func:`spawn` when ``spec.argv[0]`` cannot be executed."""
    program = spec.argv[0]
    if os.sep in program:
        path: str | None = os.path.join(spec.cwd or os.getcwd(), program)
    else:
        path = shutil.which(program, path=spec.env.get("PATH", os.defpath))
    if path is None or not os.path.exists(path):
        raise LaunchError(
            f"command not found: {program!r} (run {spec.name!r}); check the name and PATH"
        )
    if not os.access(path, os.X_OK) or os.path.isdir(path):
        raise LaunchError(f"command {program!r} is not executable (run {spec.name!r})")


def spawn(argv: list[str], spec: LaunchSpec, *, guard: bool = False) -> LocalProcess:
    """Start ``argv`` in a new session with the spec's environment, cwd and fds (``guard``:
    watched by the guardian, so it dies with the executor).

    ``subprocess.Popen`` forks with vfork and no ``preexec_fn``, so it is safe in a threaded
    parent and takes well under a millisecond of the event loop.
    """
    if not argv:
        raise LaunchError(f"run {spec.name!r} has an empty command")
    try:
        popen = subprocess.Popen(
            argv,
            env=spec.env,
            cwd=spec.cwd,
            stdin=_devnull() if spec.stdin is None else spec.stdin,
            stdout=spec.stdout,
            stderr=spec.stderr,
            pass_fds=spec.pass_fds,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise _launch_error(exc, argv, spec) from exc
    return LocalProcess(popen, argv, guarded=guard)


@functools.cache
def _devnull() -> int:
    """/dev/null opened once for every task's stdin (``subprocess.DEVNULL`` opens and closes
    it at each spawn); close-on-exec, so only a child's fd 0 holds it."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _launch_error(exc: OSError, argv: list[str], spec: LaunchSpec) -> LaunchError:
    """Why ``argv`` could not start, in words. The working directory is looked at only here,
    once a spawn has failed (a stat less for every run)."""
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        return LaunchError(f"working directory {spec.cwd!r} of run {spec.name!r} does not exist")
    if isinstance(exc, FileNotFoundError):
        return LaunchError(
            f"command not found: {argv[0]!r} (run {spec.name!r}); check the name and PATH"
        )
    if isinstance(exc, PermissionError):
        return LaunchError(f"command {argv[0]!r} is not executable (run {spec.name!r})")
    return LaunchError(f"cannot start {argv[0]!r} for run {spec.name!r}: {exc}")
