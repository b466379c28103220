"""Per-run resource limits, applied in the child before exec by the ``prlimit`` shim."""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from typing import Any

from lute_async.errors import LaunchError


@dataclass(slots=True, frozen=True)
class Limits:
    """Resource limits of one run. ``wall_time`` is enforced by the executor (like ``timeout``);
    the others are rlimits set before the task's first instruction."""

    wall_time: float | None = None
    cpu_time: int | None = None
    memory: int | None = None
    pids: int | None = None
    open_files: int | None = None
    output_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Limits.{name} must be positive, not {value!r}")

    def rlimit_options(self) -> list[str]:
        """``prlimit`` options for the rlimits that are set."""
        options = []
        if self.cpu_time is not None:
            # soft:hard one second apart, so the task gets SIGXCPU (a clear cpu_limit) first.
            cpu = int(self.cpu_time)
            options.append(f"--cpu={cpu}:{cpu + 1}")
        if self.memory is not None:
            options.append(f"--as={int(self.memory)}")
        if self.pids is not None:
            options.append(f"--nproc={int(self.pids)}")
        if self.open_files is not None:
            options.append(f"--nofile={int(self.open_files)}")
        return options

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` behind the ``prlimit`` exec shim when any rlimit is set."""
        options = self.rlimit_options()
        if not options:
            return list(argv)
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise LaunchError("resource limits need `prlimit` (util-linux), which is not on PATH")
        return [prlimit, *options, "--", *argv]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


@functools.cache
def parent_death_shim() -> list[str]:
    """``setpriv --pdeathsig KILL --`` when util-linux ``setpriv`` is installed, else ``[]``.

    ``setpriv`` sets PR_SET_PDEATHSIG and execs the task (no interpreter start, about a
    millisecond), so the kernel SIGKILLs the task's main process when the executor dies, even
    by SIGKILL. The signal is tied to the thread that spawned the task: the local launcher
    spawns from the event loop's thread, which lives as long as the executor.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv is not None else []
