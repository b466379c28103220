"""The Launcher protocol: how a run's command becomes running process(es), and the handle the
executor waits on and signals. One file per kind: local, MPI, SLURM."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lute_async.messages import EventName

if TYPE_CHECKING:
    from lute_async.limits import Limits

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
