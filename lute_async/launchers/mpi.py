"""MPI launcher: the task runs as ``np`` ranks under ``mpirun`` (outside SLURM) or
``srun --mpi=pmix`` (inside an allocation), spawned and reaped like a local task.

Ranks cannot share the frame pipe (fd 3): the launcher keeps the pipe communicator for the
launcher's own stdout/stderr, takes the frame fd away from the child, and makes sure the run
has a socket that every rank connects to. Each rank's reporter tags its hello with its rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from lute_async.errors import ConfigError, LaunchError
from lute_async.launchers.base import ExitStatus, LaunchSpec, Notify
from lute_async.launchers.local import Local, LocalProcess, spawn
from lute_async.launchers.sandboxed import SandboxedProcess, until_stopped
from lute_async.wire import ENV_FD

MpiStarter = Literal["auto", "mpirun", "mpiexec", "srun"]

#: Interpreter names replaced by the task's own interpreter: ranks never run a bare ``python``.
BARE_PYTHONS = frozenset({"python", "python3"})
#: Open MPI's switches for running as root, set only when the executor runs as root.
ROOT_FLAGS = ("--allow-run-as-root", "--oversubscribe")


def own_python(argv: Sequence[str], python: str | None = None) -> list[str]:
    """``argv`` with a leading bare ``python``/``python3`` replaced by ``python`` (default: this
    interpreter), so the task runs in the executor's environment, not whatever is on PATH."""
    resolved = list(argv)
    if resolved and resolved[0] in BARE_PYTHONS:
        resolved[0] = python or sys.executable
    return resolved


def default_ranks(environ: Mapping[str, str] | None = None) -> int:
    """Rank count from the allocation (``SLURM_NTASKS``, then ``SLURM_NPROCS``), else the
    number of CPUs this process may run on."""
    env = os.environ if environ is None else environ
    for name in ("SLURM_NTASKS", "SLURM_NPROCS"):
        value = env.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))


def in_allocation(environ: Mapping[str, str] | None = None) -> bool:
    """True inside a SLURM allocation (a batch job, ``salloc`` or ``srun``)."""
    env = os.environ if environ is None else environ
    return bool(env.get("SLURM_JOB_ID"))


def session_members(sid: int) -> list[int]:
    """Pids of the live processes in session ``sid`` (Linux ``/proc``)."""
    members = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            # After the command: state, ppid, pgrp, session.
            if len(fields) > 3 and fields[3] == str(sid).encode() and fields[0] != b"Z":
                members.append(int(entry.name))
    return members


class MPIProcess:
    """The starter (``mpirun``/``srun``) and its ranks. Open MPI puts each local rank in a
    process group of its own, so signals go to every process of the starter's session, and
    ranks a dying starter left behind are ended with it."""

    def __init__(
        self, process: LocalProcess | SandboxedProcess, *, ranks: int, starter: str
    ) -> None:
        self._process = process
        self.pid: int | None = process.pid
        self.ranks = ranks
        self.starter = starter
        #: The session the ranks are in: the starter's, or the sandbox's pid 1's (whose
        #: death at the end takes every rank along).
        self.session = process.init_pid if isinstance(process, SandboxedProcess) else self.pid

    async def wait(self) -> ExitStatus:
        status = await self._process.wait()
        self._signal_session(signal.SIGKILL)
        return status

    def _signal_session(self, signum: int) -> None:
        if self.session is None:
            return
        for pid in session_members(self.session):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def send_signal(self, signum: int) -> None:
        self._process.send_signal(signum)
        self._signal_session(signum)

    async def wait_stopped(self) -> None:
        """Until the starter is stopped, then (briefly) every rank of its session."""
        await self._process.wait_stopped()
        await until_stopped(lambda: [] if self.session is None else session_members(self.session))

    async def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)
        self.send_signal(signal.SIGCONT)  # stopped ranks must run to handle SIGTERM

    async def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def describe(self) -> dict[str, Any]:
        return {**self._process.describe(), "ranks": self.ranks, "mpi_launcher": self.starter}


class MPI:
    """Run the command as an MPI program with ``np`` ranks.

    ``launcher="auto"`` picks ``srun --mpi=pmix`` inside a SLURM allocation and ``mpirun``
    elsewhere. ``extra_args`` go to the starter before the command, as given; nothing else is
    added but the rank count (and Open MPI's root switches when running as root). A command
    starting with a bare ``python``/``python3`` runs with ``python`` (default: this
    interpreter) so every rank uses the task's own environment.
    """

    kind = "mpi"
    #: Applies ``LaunchSpec.sandbox`` with ``mpirun`` (ranks on this node), not ``srun``.
    sandboxes = True

    def __init__(
        self,
        np: int | None = None,
        launcher: MpiStarter = "auto",
        extra_args: Sequence[str] = (),
        python: str | None = None,
        *,
        parent_death_signal: bool = True,
    ) -> None:
        if np is not None and np < 1:
            raise ConfigError(f"MPI np must be at least 1, got {np}")
        if launcher not in ("auto", "mpirun", "mpiexec", "srun"):
            raise ConfigError(
                f"MPI launcher must be auto, mpirun, mpiexec or srun, got {launcher!r}"
            )
        self.np = np
        self.launcher = launcher
        self.extra_args = list(extra_args)
        self.python = python
        self._local = Local(parent_death_signal=parent_death_signal)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "np": self.np,
            "launcher": self.launcher,
            "extra_args": self.extra_args,
            "host": socket.gethostname(),
        }

    def communicators(self, requested: tuple[Any, ...]) -> tuple[Any, ...]:
        """Ranks report over a socket: keep the pipe (for the starter's stdout/stderr) and add
        a Unix socket when the run asked for the pipe but not for a socket."""
        kinds = list(requested)
        if "pipe" in kinds and "socket" not in kinds and "tcp" not in kinds:
            kinds.append("socket")
        return tuple(kinds)

    def starter(self, environ: Mapping[str, str] | None = None) -> str:
        """``srun``, ``mpirun`` or ``mpiexec``, as configured or from the environment."""
        if self.launcher != "auto":
            return self.launcher
        return "srun" if in_allocation(environ) else "mpirun"

    def command(self, spec: LaunchSpec) -> tuple[list[str], int]:
        """The starter's argv for ``spec`` (before the local shims) and the rank count."""
        env = spec.env
        ranks = self.np if self.np is not None else default_ranks(env)
        starter = self.starter(env)
        program = shutil.which(starter, path=env.get("PATH"))
        if program is None:
            raise LaunchError(
                f"{starter} not found on PATH for MPI run {spec.name!r}; install Open MPI "
                "(mpirun) or run inside a SLURM allocation (srun), or set MPI(launcher=...)"
            )
        argv = own_python(spec.argv, self.python)
        if starter == "srun":
            head = [program, "--mpi=pmix", "-n", str(ranks)]
        else:
            head = [program, "-np", str(ranks)]
            if os.geteuid() == 0:
                head += ROOT_FLAGS
        return [*head, *self.extra_args, *argv], ranks

    async def launch(self, spec: LaunchSpec, notify: Notify) -> MPIProcess:
        if not spec.argv:
            raise LaunchError(f"run {spec.name!r} has an empty command")
        argv, ranks = self.command(spec)
        env = dict(spec.env)
        pass_fds = spec.pass_fds
        frame_pipe = env.pop(ENV_FD, None)
        if frame_pipe is not None:
            # Ranks would interleave frames on one pipe: they connect to the socket instead,
            # and the starter does not hold the frame pipe open.
            fd_text = frame_pipe.partition(":")[0]
            if fd_text.isdigit():
                pass_fds = tuple(fd for fd in pass_fds if fd != int(fd_text))
        local_spec = dataclasses.replace(spec, argv=argv, env=env, pass_fds=pass_fds)
        starter = self.starter(env)
        started: LocalProcess | SandboxedProcess
        if spec.sandbox is not None:  # mpirun and its ranks inside, as a local command
            if starter == "srun":
                raise LaunchError(
                    f"MPI run {spec.name!r}: srun starts ranks through slurmd, outside any "
                    "sandbox; a sandboxed MPI run needs MPI(launcher='mpirun') (one node)"
                )
            started = await self._local.start_sandboxed(local_spec)
        else:
            started = spawn(
                self._local.command(local_spec),
                local_spec,
                guard=self._local.parent_death_signal,
            )
        process = MPIProcess(started, ranks=ranks, starter=starter)
        await notify(
            "started",
            {
                "pid": process.pid,
                "host": socket.gethostname(),
                "command": argv,
                "ranks": ranks,
                "mpi_launcher": process.starter,
            },
        )
        return process
