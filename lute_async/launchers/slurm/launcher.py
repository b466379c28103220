"""The SLURM launcher: a run becomes a batch job; its ranks report back over TCP.

The launcher builds a batch script (only the ``#SBATCH`` options the user gave), keeps a copy in
the run's directory (a new file, mode 0600, never through a link), gives sbatch the script on
its stdin with ``sbatch --parsable`` and hands the job to :class:`SlurmJob` to follow. The
run's secret reaches the job through sbatch's environment (``--export=ALL``), never through
the script. No directive value may hold a control character: a newline would end the
``#SBATCH`` line and make the rest a shell command.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from lute_async.communicators.spool import SpoolCommunicator
from lute_async.communicators.tcp import TcpCommunicator
from lute_async.errors import ConfigError, LaunchError, LuteAsyncError
from lute_async.launchers.base import LaunchSpec, Notify
from lute_async.launchers.mpi import own_python
from lute_async.launchers.slurm.client import run_client, submitted_job_id
from lute_async.launchers.slurm.job import SlurmJob
from lute_async.options import control_character
from lute_async.wire import ENV_SPOOL

#: The directory, in a run's own, its job's reporters spool to (:mod:`lute_async.task.spool`).
SPOOL_DIR = "spool"
_BATCH_SCRIPT = re.compile(r"job(?:-(\d+))?\.sbatch")


def attempt_name(stem: str, attempt: int, suffix: str = "") -> str:
    """A file's name for attempt ``attempt`` of a retried run: ``job.sbatch``, then
    ``job-2.sbatch``... (each attempt is a new job: new script, new spool)."""
    return f"{stem}{suffix}" if attempt == 1 else f"{stem}-{attempt}{suffix}"


def spool_dir_of(batch_script: Path) -> Path:
    """The spool directory of the attempt whose kept batch script is ``batch_script``."""
    found = _BATCH_SCRIPT.fullmatch(batch_script.name)
    attempt = int(found.group(1)) if found is not None and found.group(1) else 1
    return batch_script.parent / attempt_name(SPOOL_DIR, attempt)


class Slurm:
    """Run the command as a SLURM batch job.

    Only the options given become ``#SBATCH`` lines (``extra_sbatch`` verbatim, last). With
    ``mpi=True`` and more than one task or node the command runs under ``srun --mpi=pmix``
    (every task runs it), otherwise the batch shell runs it once. Ranks report over TCP to
    ``tcp_host`` (an address, interface or host name; default ``$LUTE_ASYNC_TCP_HOST``, else
    the address of this host's name: :mod:`lute_async.communicators.address`). A command
    starting with a bare ``python`` runs with ``python`` (default: this interpreter).
    ``requeue=True`` passes ``--requeue`` (``False``: ``--no-requeue``; None: the cluster's
    default): a job the scheduler requeues is followed through the queue to its next attempt.
    """

    kind = "slurm"

    def __init__(
        self,
        *,
        partition: str | None = None,
        ntasks: int | None = None,
        nodes: int | str | None = None,
        cpus_per_task: int | None = None,
        time: str | None = None,
        mem: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        job_name: str | None = None,
        extra_sbatch: Sequence[str] = (),
        mpi: bool = True,
        tcp_host: str | None = None,
        tcp_advertise: str | None = None,
        python: str | None = None,
        requeue: bool | None = None,
    ) -> None:
        self.options: dict[str, str] = {
            key: str(value)
            for key, value in (
                ("partition", partition),
                ("ntasks", ntasks),
                ("nodes", nodes),
                ("cpus-per-task", cpus_per_task),
                ("time", time),
                ("mem", mem),
                ("account", account),
                ("qos", qos),
                ("job-name", job_name),
            )
            if value is not None
        }
        for key, value in self.options.items():
            _line(f"launcher.{key.replace('-', '_')}", value, ConfigError)
        for i, arg in enumerate(extra_sbatch):
            _line(f"launcher.extra_sbatch[{i}]", arg, ConfigError)
        self.ntasks = ntasks
        self.nodes = nodes
        self.extra_sbatch = list(extra_sbatch)
        self.mpi = mpi
        self.tcp_host = tcp_host
        self.tcp_advertise = tcp_advertise
        self.python = python
        if requeue is not None and not isinstance(requeue, bool):
            raise ConfigError(
                f"key 'launcher.requeue': expected true, false or None, got {requeue!r}"
            )
        self.requeue = requeue
        #: The spool readers of runs being launched, by run id (see SpoolCommunicator).
        self._spools: dict[str, SpoolCommunicator] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sbatch": dict(self.options),
            "extra_sbatch": list(self.extra_sbatch),
            "mpi": self.mpi,
            "requeue": self.requeue,
            "host": socket.gethostname(),
        }

    def communicators(self, requested: tuple[Any, ...]) -> tuple[Any, ...]:
        """A job's processes run elsewhere: they can reach the executor over TCP only; what
        they spool when a connection breaks is read once the job has ended."""
        spool = SpoolCommunicator(follow=False, claims=self._spools)
        if self.tcp_host is None and self.tcp_advertise is None:
            return ("tcp", spool)
        return (TcpCommunicator(self.tcp_host, advertise=self.tcp_advertise), spool)

    def batch_script(self, spec: LaunchSpec, output: Path) -> str:
        """The batch script's text: options, working directory and the command, no secrets."""
        argv = own_python(spec.argv, self.python)
        argv = spec.limits.wrap(argv) if spec.limits is not None else argv
        options = {"job-name": spec.name, "output": os.fspath(output), **self.options}
        for key, value in options.items():
            _line(f"--{key}", value, LaunchError, f"run {spec.name!r}: ")
        lines = [
            "#!/bin/bash",
            *(f"#SBATCH --{key}={value}" for key, value in options.items()),
            *self._requeue_lines(),
            *(f"#SBATCH {shlex.quote(arg)}" for arg in self.extra_sbatch),
            f"# lute-async run {spec.run_id}; the environment comes from sbatch (--export=ALL)",
        ]
        if spec.cwd is not None:
            lines.append(f"cd {shlex.quote(spec.cwd)} || exit 1")
        many = (self.ntasks or 1) > 1 or str(self.nodes or 1) != "1"
        prefix = "srun --mpi=pmix " if self.mpi and many else ""
        lines.append(f"exec {prefix}{shlex.join(argv)}")
        return "\n".join(lines) + "\n"

    def _requeue_lines(self) -> tuple[str, ...]:
        if self.requeue is None:
            return ()
        return ("#SBATCH --requeue" if self.requeue else "#SBATCH --no-requeue",)

    async def launch(self, spec: LaunchSpec, notify: Notify) -> SlurmJob:
        if not spec.argv:
            raise LaunchError(f"run {spec.name!r} has an empty command")
        output = spec.run_dir / "slurm-%j.out"
        text = self.batch_script(spec, output).encode()
        # A copy for the record and reconcile, in the run's private directory (0700, under a
        # working directory of the user's own): a new 0600 file, never through a link.
        script = await anyio.to_thread.run_sync(_keep_copy, spec, text)
        # Where the job's reporters spool while no executor listens (lute-async attach).
        spool_dir = await anyio.to_thread.run_sync(_spool_dir, spec)
        spec.env[ENV_SPOOL] = os.fspath(spool_dir)
        reader = self._spools.pop(spec.run_id, None)
        if reader is not None:
            reader.directory = spool_dir
        # On stdin: sbatch submits exactly this text, whatever becomes of the kept copy.
        # --export=ALL: the job gets sbatch's environment, which carries the run's secret.
        argv = ["sbatch", "--parsable", "--export=ALL"]
        done = await run_client(argv, spec.env, stdin=text)
        job_id = submitted_job_id(done, f"run {spec.name!r}")
        job_output = spec.run_dir / f"slurm-{job_id}.out"
        job = SlurmJob(
            job_id,
            batch_script=script,
            output=job_output,
            ntasks=self.ntasks,
            env=spec.env,
            notify=notify,
            run_id=spec.run_id,
            append_output="--open-mode=append" in self.extra_sbatch,
        )
        await notify(
            "queued",
            {
                "slurm_job_id": job_id,
                "batch_script": os.fspath(script),
                "slurm_output": os.fspath(job_output),
            },
        )
        return job


def _line(key: str, value: str, error: type[LuteAsyncError], where: str = "") -> None:
    """Raise ``error`` naming ``key`` when ``value`` holds a control character."""
    char = control_character(value)
    if char is not None:
        raise error(
            f"{where}key {key!r}: an sbatch directive may not hold a control character "
            f"({char!r}), got {value!r}"
        )


def _spool_dir(spec: LaunchSpec) -> Path:
    """The spool directory (0700) of this attempt of the run, made new in its private
    directory."""
    path = spec.private_run_dir() / attempt_name(SPOOL_DIR, spec.attempt)
    try:
        os.mkdir(path, 0o700)
    except OSError as exc:
        raise LaunchError(
            f"cannot create the spool directory of run {spec.name!r}: {exc}"
        ) from None
    return path


def _keep_copy(spec: LaunchSpec, text: bytes) -> Path:
    """Write the submitted script as ``job.sbatch`` (``job-N.sbatch`` for attempt N > 1 of
    a retried run) in the run's private directory."""
    name = attempt_name("job", spec.attempt, ".sbatch")
    try:
        return spec.write_private_file(name, text)
    except OSError as exc:
        raise LaunchError(f"cannot create the batch script of run {spec.name!r}: {exc}") from None
