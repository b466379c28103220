"""The Launcher protocol: how a run's command becomes running process(es), and the handle the
executor waits on and signals. One file per kind: local, MPI, SLURM."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lute_async.messages import EventName
from lute_async.private_paths import check_private_dir, ensure_private_dir

if TYPE_CHECKING:
    from lute_async.limits import Limits
    from lute_async.sandbox import Sandbox

#: How a launcher tells the executor about lifecycle changes (``queued``, ``started``).
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class LaunchSpec:
    """Everything a launcher needs to start one run."""

    argv: list[str]
    env: dict[str, str]
    run_id: str
    name: str
    run_dir: Path
    cwd: str | None = None
    pass_fds: tuple[int, ...] = ()
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    limits: Limits | None = None
    #: Run the task in this bubblewrap sandbox (launchers that cannot: a LaunchError).
    sandbox: Sandbox | None = None
    #: Which attempt of the run this is (1 for the first; a run with a retry has more).
    attempt: int = 1

    def private_run_dir(self) -> Path:
        """The run's own directory, made private (0700) on first use, under a working
        directory that is the user's own and open to no one else; one another user made or
        can write to raises :class:`~lute_async.private_paths.NotPrivateError` naming it (they
        could swap the files a run executes: a batch script, a params file)."""
        ensure_private_dir(self.run_dir.parent)
        try:
            os.mkdir(self.run_dir, 0o700)
        except FileExistsError:
            check_private_dir(self.run_dir)  # made by this run a moment ago, or planted
        return self.run_dir

    def write_private_file(self, name: str, data: bytes) -> Path:
        """Write a new file ``name`` (0600) in :meth:`private_run_dir`: never through a
        symlink, never over a file already there."""
        path = self.private_run_dir() / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return path


@dataclass(slots=True)
class ExitStatus:
    """How a run's process (or job) ended."""

    exit_code: int | None
    signal: int | None = None
    usage: dict[str, float] | None = None
    #: A terminal event the launcher knows better than the exit code (e.g. SLURM's TIMEOUT).
    terminal: str | None = None
    error: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def terminal_event(self) -> str:
        """The terminal event this ending fires, unless the executor ended the run itself."""
        if self.terminal is not None:
            return self.terminal
        ok = self.exit_code == 0 and self.error is None
        return EventName.DONE.value if ok else EventName.FAILED.value


class GroupSignals:
    """Signals for a started task that leads its own process group (``pid``): every signal
    goes to the whole group, and nothing happens once it is gone."""

    pid: int | None

    def send_signal(self, signum: int) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)
        self.send_signal(signal.SIGCONT)  # a stopped group must run to handle SIGTERM

    async def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class TaskProcess(Protocol):
    """A started run: something to wait for and to signal."""

    pid: int | None

    async def wait(self) -> ExitStatus:
        """Wait (on I/O or the scheduler, never a busy loop) until it has ended."""
        ...

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to every process of the run; nothing happens if they are gone."""
        ...

    async def terminate(self) -> None:
        """Ask the run to end (SIGTERM to the group, or the scheduler's cancel)."""
        ...

    async def kill(self) -> None:
        """End the run now (SIGKILL to the group, or the scheduler's forced cancel)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts for the record: launch command, job id, node list, ..."""
        ...


class Launcher(Protocol):
    """Turns a LaunchSpec into a running TaskProcess."""

    kind: str

    def describe(self) -> dict[str, Any]: ...

    def communicators(self, requested: tuple[Any, ...]) -> tuple[Any, ...]:
        """The communicators this launcher can serve, given those the run asked for."""
        ...

    async def launch(self, spec: LaunchSpec, notify: Notify) -> TaskProcess: ...
