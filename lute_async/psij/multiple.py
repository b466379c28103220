"""Multiple: a launcher that runs ``copies`` copies of the command on this machine as one run
(PSI/J's ``multiple`` launcher). Each copy is a local process in a session of its own, reaped
like one; the run fails with the first non-zero exit, and a signal goes to every copy."""

from __future__ import annotations

import socket
from typing import Any

import anyio

from lute_async.errors import ConfigError
from lute_async.launchers.base import ExitStatus, LaunchSpec, Notify
from lute_async.launchers.local import Local, LocalProcess, spawn


class Copies:
    """The copies of a command, waited on and signalled together."""

    def __init__(self, processes: list[LocalProcess]) -> None:
        self._processes = processes
        self.pid: int | None = processes[0].pid

    async def wait(self) -> ExitStatus:
        statuses: list[ExitStatus] = []

        async def reap(process: LocalProcess) -> None:
            statuses.append(await process.wait())

        async with anyio.create_task_group() as tg:
            for process in self._processes:
                tg.start_soon(reap, process)
        failed = [s for s in statuses if s.exit_code != 0 or s.signal is not None]
        first = failed[0] if failed else statuses[0]
        return ExitStatus(exit_code=first.exit_code, signal=first.signal, usage=first.usage)

    def send_signal(self, signum: int) -> None:
        for process in self._processes:
            process.send_signal(signum)

    async def terminate(self) -> None:
        for process in self._processes:
            await process.terminate()

    async def kill(self) -> None:
        for process in self._processes:
            await process.kill()

    def describe(self) -> dict[str, Any]:
        return {
            "launch_command": self._processes[0].argv,
            "pid": self.pid,
            "pids": [process.pid for process in self._processes],
        }


class Multiple:
    """Run ``copies`` copies of the command on this machine."""

    kind = "multiple"

    def __init__(self, copies: int) -> None:
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ConfigError(f"Multiple copies must be a positive integer, got {copies!r}")
        self.copies = copies
        self._local = Local()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "copies": self.copies, "host": socket.gethostname()}

    def communicators(self, requested: tuple[Any, ...]) -> tuple[Any, ...]:
        return requested

    async def launch(self, spec: LaunchSpec, notify: Notify) -> Copies:
        argv = self._local.command(spec)
        processes: list[LocalProcess] = []
        try:
            for _ in range(self.copies):
                processes.append(spawn(argv, spec, guard=self._local.parent_death_signal))
        except BaseException:
            for process in processes:
                await process.kill()
                await process.wait()
            raise
        copies = Copies(processes)
        await notify(
            "started",
            {
                "pid": copies.pid,
                "host": socket.gethostname(),
                "command": argv,
                "ranks": self.copies,
            },
        )
        return copies
