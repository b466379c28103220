"""Starting a run inside its :class:`~lute_async.sandbox.Sandbox` (bubblewrap), and the process
handle that signals and reaps it.

Three processes matter. ``bwrap`` (the one spawned, behind the parent-death shim) stays outside
as the monitor: it is the pid the record keeps and the executor reaps, and it exits with the
task's status (``128+n`` for signal ``n``, read back as that signal). Its child is pid 1 of the
new pid namespace and, through ``--new-session``, leader of the group every sandboxed process is
in; the task is that pid 1's child (pid 2 inside). So:

* SIGTERM/SIGINT/... go to that group: the task gets them (pid 1 has no handler and ignores
  them), may clean up within the grace period and its exit status comes back through bwrap;
* SIGSTOP/SIGCONT go to the group and to bwrap, so "stopped" is true of every process;
* SIGKILL goes to both as well: pid 1 dying takes down the whole namespace, including anything
  that left the group with ``setsid``; bwrap dying does the same (``--die-with-parent``), and the
  executor dying kills bwrap (the ``setpriv`` shim);
* once bwrap is reaped, pid 1 is killed and awaited on its pidfd: a pid namespace's init ends
  only after every process in it, so nothing is left behind in or out of the namespace.

Any launcher that execs an argv can do the same and say ``sandboxes = True``: :func:`launch`
takes the launcher's own ``spawn(argv, spec)``, which must start the argv with ``spec``'s
``pass_fds`` (bwrap's info, ready and task-stderr pipes) and ``stderr`` (bwrap's own), and
return a handle with ``pid``, ``argv``, ``returncode``, ``wait``, ``wait_stopped``,
``send_signal`` and ``describe`` (:class:`MonitorProcess`). A fork server passes those fds to
its server (SCM_RIGHTS) with the prepared argv, and its handle reaps bwrap there; the rest
(signals to the sandbox's group, pid 1's pidfd, the exit status) is this module's. Its
parent-death shim ties bwrap to the server, which must itself die with the executor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from lute_async.communicators.fdio import close_fd
from lute_async.errors import LaunchError
from lute_async.launchers.base import ExitStatus, LaunchSpec
from lute_async.sandbox import Sandbox, SandboxFds, find_bwrap, sandbox_command

#: Signals that go to the monitor (bwrap) as well as to the sandbox's group.
_BOTH = frozenset({signal.SIGSTOP, signal.SIGCONT, signal.SIGKILL})
#: Seconds to wait for the namespace to empty once its pid 1 has been SIGKILLed.
_TEARDOWN = 5.0
#: Seconds to wait for the task to show as stopped after SIGSTOP.
_STOPPING = 1.0


#: Seconds bwrap may take to set the sandbox up before the launch fails.
_SETUP = 30.0


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command (state, ppid, ...); [] when gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return []


def _state(pid: int) -> str:
    """The state letter of ``pid`` (``R``, ``S``, ``T``...), ``X`` when it is gone."""
    fields = _stat(pid)
    return fields[0] if fields else "X"


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if len(fields) > 1 else None


async def until_stopped(pids: Callable[[], list[int]]) -> None:
    """Until every process of ``pids()`` is stopped or gone (at most ``_STOPPING`` seconds):
    no event says a process that is not our child has stopped, so its state is read."""
    with anyio.move_on_after(_STOPPING):
        while any(_state(pid) not in "TtZX" for pid in pids()):  # noqa: ASYNC110
            await anyio.sleep(0.001)


@dataclasses.dataclass(slots=True)
class Prepared:
    """A sandboxed launch made ready: the argv, the spec to spawn it with (fds to pass, bwrap's
    stderr) and the parent's ends of the pipes (closed by :meth:`close_child_ends`)."""

    argv: list[str]
    spec: LaunchSpec
    info: int
    ready: int
    errors: int
    child_ends: list[int]

    def close_child_ends(self) -> None:
        for fd in self.child_ends:
            os.close(fd)
        self.child_ends = []


def prepare(sandbox: Sandbox, spec: LaunchSpec, argv: list[str], prefix: list[str]) -> Prepared:
    """The bwrap command for ``argv`` (``prefix``, e.g. the parent-death shim, goes first)."""
    bwrap = find_bwrap()
    pipes = [os.pipe() for _ in range(3)]
    (info_r, info_w), (ready_r, ready_w), (err_r, err_w) = pipes
    task_stderr = spec.stderr if spec.stderr is not None else os.dup(2)
    child_ends = [info_w, ready_w, err_w] + ([task_stderr] if spec.stderr is None else [])
    try:
        fds = SandboxFds(info=info_w, stderr=task_stderr, ready=ready_w)
        command = prefix + sandbox_command(sandbox, spec, argv, fds, bwrap=bwrap)
    except BaseException:
        for fd in (info_r, ready_r, err_r, *child_ends):
            os.close(fd)
        raise
    child = dataclasses.replace(
        spec, stderr=err_w, pass_fds=(*spec.pass_fds, info_w, ready_w, task_stderr)
    )
    return Prepared(command, child, info_r, ready_r, err_r, child_ends)


async def _read_all(fd: int) -> bytes:
    """Everything written to pipe ``fd`` until its writers close it."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def launch(
    sandbox: Sandbox,
    spec: LaunchSpec,
    argv: list[str],
    prefix: list[str],
    spawn: Callable[[list[str], LaunchSpec], MonitorProcess],
) -> SandboxedProcess:
    """Start ``argv`` in ``sandbox`` (``spawn`` execs the prepared argv, as the launcher
    would the plain one) and return once the task has been exec'd inside it; a
    sandbox that cannot be set up is a LaunchError with bubblewrap's own message."""
    prepared = prepare(sandbox, spec, argv, prefix)
    try:
        process = SandboxedProcess(spawn(prepared.argv, prepared.spec), sandbox)
    except BaseException:
        prepared.close_child_ends()
        for fd in (prepared.info, prepared.ready, prepared.errors):
            os.close(fd)
        raise
    prepared.close_child_ends()
    try:
        await process.attach(prepared)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await process.kill()
            status = await process.wait()
        if process.ready:  # its fds are the process's now, closed by wait()
            raise
        os.set_blocking(prepared.errors, False)
        message = ""
        with contextlib.suppress(BlockingIOError):
            message = os.read(prepared.errors, 65536).decode(errors="replace").strip()
        os.close(prepared.errors)
        if not isinstance(exc, LaunchError):
            raise
        detail = message or f"{exc} (bubblewrap ended with {status.exit_code or status.signal})"
        raise LaunchError(f"the sandbox of run {spec.name!r} failed to start: {detail}") from None
    return process


class MonitorProcess(Protocol):
    """What is spawned (bwrap, behind its shims): a local process handle."""

    pid: int | None
    argv: list[str]
    returncode: int | None

    async def wait(self) -> ExitStatus: ...

    async def wait_stopped(self) -> None: ...

    def send_signal(self, signum: int) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class SandboxedProcess:
    """A run in a bubblewrap sandbox: the bwrap monitor (``pid``) and the sandbox's group."""

    def __init__(self, monitor: MonitorProcess, sandbox: Sandbox) -> None:
        self.monitor = monitor
        self.pid = monitor.pid
        self.argv = monitor.argv
        self.sandbox = sandbox
        self.init_pid: int | None = None
        self.task_pid: int | None = None
        self.ready = False
        self._init_fd: int | None = None
        self._errors: int | None = None

    async def attach(self, prepared: Prepared) -> None:
        """Wait until the task runs inside the sandbox; learn the sandbox's pid 1."""
        try:
            with anyio.move_on_after(_SETUP) as setup:
                self.ready = (await _read_all(prepared.ready)) == b"x"
                info = await _read_all(prepared.info) if self.ready else b""
        finally:
            os.close(prepared.ready)
            os.close(prepared.info)
        if setup.cancelled_caught:
            self.ready = False
            raise LaunchError(f"bubblewrap did not set the sandbox up within {_SETUP:g} s")
        if not self.ready:
            raise LaunchError("the sandbox did not start")
        self._errors = prepared.errors
        self.init_pid = int(json.loads(info)["child-pid"])
        with contextlib.suppress(OSError):
            self._init_fd = os.pidfd_open(self.init_pid)
        # The pidfd is pid 1's only while its parent is still bwrap (unreaped, so not reused):
        # had pid 1 already exited and been reaped, another process could have its number.
        if self._init_fd is not None and _parent(self.init_pid) != self.pid:
            os.close(self._init_fd)
            self._init_fd = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            children = f"/proc/{self.init_pid}/task/{self.init_pid}/children"
            with open(children) as listing:  # noqa: ASYNC230 (procfs: never blocks)
                self.task_pid = int(listing.read().split()[0])

    async def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)
        self.send_signal(signal.SIGCONT)  # a stopped sandbox must run to handle SIGTERM

    async def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait_stopped(self) -> None:
        """Until bwrap is stopped (waitid) and the task too: a signal to a process that is not
        our child stops it a moment later, with no event to wait on, so its state is read
        (a few times, at most for ``_STOPPING`` seconds)."""
        await self.monitor.wait_stopped()
        await until_stopped(lambda: [] if self.task_pid is None else [self.task_pid])

    def _init_alive(self) -> bool:
        """True while the sandbox's pid 1 runs (its pidfd is readable once it has ended)."""
        if self._init_fd is None:
            return False
        return not select.select([self._init_fd], [], [], 0)[0]

    def send_signal(self, signum: int) -> None:
        if self.init_pid is not None and self._init_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.init_pid, signum)
            if signum == signal.SIGKILL and self._init_fd is not None:  # the whole namespace
                with contextlib.suppress(ProcessLookupError, OSError):
                    signal.pidfd_send_signal(self._init_fd, signum)
        if self.init_pid is None or signum in _BOTH:
            self.monitor.send_signal(signum)

    async def wait(self) -> ExitStatus:
        status = await self.monitor.wait()
        await self._teardown()
        if not self.ready:
            return status
        usage = {"wall": status.usage["wall"]} if status.usage else None
        code = status.exit_code
        if code is not None and 128 < code <= 128 + signal.NSIG:
            return ExitStatus(exit_code=None, signal=code - 128, usage=usage)
        return ExitStatus(exit_code=code, signal=status.signal, usage=usage)

    def release(self) -> None:
        """What :meth:`wait` does once the monitor is reaped, blocking (for a synchronous
        close): SIGKILL the sandbox's pid 1, wait until the namespace is empty, close its fds."""
        fd, self._init_fd = self._init_fd, None
        if fd is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], _TEARDOWN)  # a killed namespace ends in milliseconds
            os.close(fd)
        if self._errors is not None:
            os.close(self._errors)
            self._errors = None

    async def _teardown(self) -> None:
        """SIGKILL the sandbox's pid 1 and wait until the namespace is empty."""
        fd, self._init_fd = self._init_fd, None
        if fd is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            with anyio.move_on_after(_TEARDOWN, shield=True):
                await anyio.wait_readable(fd)
            close_fd(fd)
        if self._errors is not None:
            os.close(self._errors)
            self._errors = None

    def describe(self) -> dict[str, Any]:
        facts = self.monitor.describe()
        pids = {"init_pid": self.init_pid, "task_pid": self.task_pid}
        facts["sandbox"] = {**self.sandbox.to_dict(), **pids}
        return facts
