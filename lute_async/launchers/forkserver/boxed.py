"""A fork server inside a bubblewrap sandbox: ``Forkserver(...)`` with ``sandbox=Sandbox(...)``.

The server itself is started by :func:`lute_async.launchers.sandboxed.launch` (bwrap, behind
the parent-death shim, with the sandbox's view, namespaces and no capabilities), so every task
it forks is born inside the sandbox and shares its namespaces. bwrap's binds are fixed when the
server starts, so a server is kept per sandbox settings *and* working directory (the one dir
it binds writable): runs that share both share a server; a run with another cwd starts another.

What a run brings with it that the server's sandbox cannot see is handled here: its params
file travels as an open fd (read at ``/proc/self/fd/N``), and a Unix socket (bound per run for
a spawned sandbox) is refused: a forked task reports over fd 3, or over TCP with the network.
The task's pid inside is the server's business; the one outside (the record's, the one the
executor signals) comes from the task's own hello (:mod:`lute_async.forkserver_main`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from lute_async.errors import LaunchError
from lute_async.launchers.base import LaunchSpec
from lute_async.launchers.local import LocalProcess
from lute_async.launchers.local import spawn as spawn_local
from lute_async.launchers.sandboxed import SandboxedProcess
from lute_async.launchers.sandboxed import launch as launch_sandboxed
from lute_async.limits import parent_death_shim
from lute_async.sandbox import Sandbox, check_communicators
from lute_async.wire import ENV_PARAMS_FILE, ENV_SOCKET

__all__ = ["BoxedServer", "box_key", "boxed_request"]


def box_key(spec: LaunchSpec) -> tuple[Sandbox, str]:
    """What a sandboxed server is kept by besides the plain key: the sandbox and the cwd."""
    assert spec.sandbox is not None
    return spec.sandbox, os.path.realpath(spec.cwd or os.getcwd())


def boxed_request(spec: LaunchSpec, targets: list[int]) -> tuple[dict[str, str], list[int]]:
    """The run's environment as its forked task sees it inside the server's sandbox, and the
    fds to send for it (opened here: the caller closes them), at numbers after ``targets``
    (which gains them). A LaunchError for what the sandbox cannot reach."""
    assert spec.sandbox is not None
    check_communicators(spec.sandbox, spec)
    if ENV_SOCKET in spec.env:
        raise LaunchError(
            f"run {spec.name!r}: a sandboxed fork-server task reports over fd 3 (the pipe "
            "communicator) or TCP with network=true, not over a Unix socket (the server's "
            "sandbox is fixed when it starts; a spawned sandbox binds each run's socket)"
        )
    env, fds = dict(spec.env), []
    if ENV_PARAMS_FILE in env:
        number = max([*targets, 2]) + 1
        fds.append(os.open(env[ENV_PARAMS_FILE], os.O_RDONLY | os.O_CLOEXEC))
        targets.append(number)
        env[ENV_PARAMS_FILE] = f"/proc/self/fd/{number}"
    return env, fds


class BoxedServer:
    """A fork server's process inside a sandbox: bwrap outside, the server its task inside
    (:class:`~lute_async.launchers.forkserver.server.Box`)."""

    def __init__(self, sandbox: Sandbox, cwd: str, name: str) -> None:
        self.sandbox = sandbox
        self.cwd = cwd
        self.name = name
        self.process: SandboxedProcess | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's pid here (bwrap's while it is not known, 0 before the start)."""
        process = self.process
        return 0 if process is None else process.task_pid or process.pid or 0

    async def start(self, command: list[str], env: dict[str, str], fd: int) -> None:
        """Start the server's ``command`` in the sandbox (its control connection ``fd``
        passed in); a LaunchError with bubblewrap's message if the sandbox cannot start."""
        spec = LaunchSpec(
            argv=command,
            env=env,
            run_id="forkserver",
            name=self.name,
            run_dir=Path(self.cwd),
            cwd=self.cwd,
            pass_fds=(fd,),
        )
        self.process = await launch_sandboxed(
            self.sandbox, spec, command, parent_death_shim(), self._spawn
        )

    def _spawn(self, argv: list[str], spec: LaunchSpec) -> LocalProcess:
        process = spawn_local(argv, spec)
        self._popen = process._popen
        return process

    def wait(self, timeout: float | None = None) -> int:
        """Reap bwrap (it ends with the server); the server's exit code, negative for a
        signal; then end the namespace's pid 1 (and so everything left inside)."""
        if self._popen is None or self.process is None:
            return 0
        code = self._popen.wait(timeout)
        self.process.release()
        if 128 < code <= 128 + signal.NSIG:
            return 128 - code
        return code

    def kill(self) -> None:
        if self.process is not None and self._popen is not None:
            with contextlib.suppress(ProcessLookupError):
                if self._popen.returncode is None:
                    self.process.send_signal(signal.SIGKILL)

    def describe(self) -> dict[str, Any]:
        process = self.process
        pids = {"init_pid": process.init_pid, "server_pid": process.task_pid} if process else {}
        return {**self.sandbox.to_dict(), **pids}
