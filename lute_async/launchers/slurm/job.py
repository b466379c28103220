"""Following a submitted batch job until it ends, and signalling it.

The job is looked at with a backing-off interval through the squeue shared by every job
followed on the cluster (:mod:`.queue`); how it ended comes from ``scontrol show job``, then
``sacct -c`` or the job-completion file once the job has left the controller's memory. The
scheduler's final state decides the terminal event, also when the task never connected. The
job's output files are read at each look and handed on as ``log`` events.
"""

from __future__ import annotations

import os
import signal as signal_module
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from lute_async.launchers.base import ExitStatus, Notify
from lute_async.launchers.slurm.client import run_client
from lute_async.launchers.slurm.output import ERROR_STREAM, OutputFollower
from lute_async.launchers.slurm.pending import pending_log
from lute_async.launchers.slurm.queue import board_for
from lute_async.launchers.slurm.requeue import Attempts
from lute_async.launchers.slurm.states import (
    SACCT_FIELDS,
    TERMINAL_STATES,
    JobInfo,
    exit_status,
    job_info_from_row,
    jobcomp_file,
    lost_status,
    parse_job_fields,
    parse_jobcomp,
    parse_sacct,
)
from lute_async.logs import get_logger

#: Back-off between scheduler queries: first delay, factor and ceiling (seconds).
POLL_FIRST = 0.2
POLL_FACTOR = 2.0
POLL_MAX = 5.0
#: Queries in a row that find no trace of the job before it is declared lost.
MAX_MISSES = 6


class SlurmJob:
    """A submitted batch job: followed through the scheduler, signalled with ``scancel``."""

    def __init__(
        self,
        job_id: str,
        *,
        batch_script: Path,
        output: Path,
        ntasks: int | None,
        env: Mapping[str, str],
        notify: Notify,
        run_id: str,
        append_output: bool = False,
        attempts: Attempts | None = None,
    ) -> None:
        self.job_id = job_id
        self.pid: int | None = None
        self.batch_script = batch_script
        self.output = output
        self.ntasks = ntasks
        self.node_list: str | None = None
        self._env = dict(env)
        self._notify = notify
        self._run_id = run_id
        self._started = False
        self._status: ExitStatus | None = None
        self._last_state = "PENDING"
        self._pending_reason: str | None = None
        self._signallers: list[subprocess.Popen[bytes]] = []
        self._wake = anyio.Event()
        #: The job's output files, followed once it runs (the scheduler names them then).
        self._outputs = [OutputFollower(output, notify)]
        #: The board this job's state is read from, with every job on the same cluster; the
        #: job is on it from its first :meth:`observe` until :meth:`wait` returns.
        self.board = board_for(self._env)
        #: Requeues seen; an attempt's output file is rewritten unless ``append_output``
        #: (sbatch's ``--open-mode=append``) says the next attempt appends to it.
        self.attempts = attempts if attempts is not None else Attempts(job_id)
        self._append_output = append_output
        #: The last scontrol failure other than "unknown job" (controller down, timeout).
        self.controller_error: str | None = None

    # -- following the job ---------------------------------------------------------------

    async def wait(self) -> ExitStatus:
        try:
            return await self._follow()
        finally:
            self.board.discard(self.job_id)
            for output in self._outputs:
                output.close()

    async def _follow(self) -> ExitStatus:
        delay = POLL_FIRST
        misses = 0
        while self._status is None:
            self._reap_signallers()
            info = await self.observe()
            if info is None:
                if self.controller_error is not None:  # not an answer: ask again later
                    get_logger().warning(
                        "slurm_query_failed",
                        run_id=self._run_id,
                        job=self.job_id,
                        error=self.controller_error,
                    )
                else:
                    misses += 1
                if misses >= MAX_MISSES:
                    await self._look(final=True)
                    self._status = lost_status(self.job_id)
                    break
            else:
                misses = 0
                if info.state != self._last_state:
                    self._last_state = info.state
                    delay = POLL_FIRST  # things are moving: look again soon
                await self._requeued(info)
                if info.state == "PENDING" and info.reason not in (None, self._pending_reason):
                    self._pending_reason = info.reason
                    await self._notify("log", pending_log(self.job_id, info.reason))
                if info.state in TERMINAL_STATES:
                    if not self._started and info.ran:  # it ran between two queries
                        await self._announce(info)
                    await self._look(final=True)
                    self._status = exit_status(self.job_id, info)
                    self._status.extra["slurm_output"] = os.fspath(self.output)
                    break
                if not self._started and self.attempts.starting(info.state):
                    await self._announce(info)
            if self._started:
                await self._look()
            # Between scheduler queries, by design (the scheduler has no push interface);
            # a cancel or signal from the executor cuts the wait short.
            with anyio.move_on_after(delay):
                await self._wake.wait()
            if self._wake.is_set():
                self._wake = anyio.Event()
                delay = POLL_FIRST
            else:
                delay = min(delay * POLL_FACTOR, POLL_MAX)
        self._reap_signallers()
        return self._status

    async def _requeued(self, info: JobInfo) -> None:
        """Fire ``requeued`` when the scheduler has put the job back in the queue: what the
        old attempt wrote is read to the end, and the next attempt is announced when it runs."""
        data = self.attempts.requeued(info, started=self._started, node_list=self.node_list)
        if data is None:
            return
        if not self._append_output:
            if not self._started:  # it ran (or failed to) between two looks
                await self._find_outputs(info)
            await self._look(final=True)  # the next attempt rewrites the file from the start
        self._started = False
        await self._notify("requeued", data)

    async def _look(self, *, final: bool = False) -> None:
        for output in self._outputs:
            await output.look(final=final)

    async def _find_outputs(self, info: JobInfo) -> None:
        """Follow the files the scheduler says the job writes (``--output``/``--error`` given
        in ``extra_sbatch`` included), asking ``scontrol`` if squeue's row did not say."""
        if self._append_output and self.attempts.requeues:
            return  # the followers read on where the last attempt's output ended
        if info.stdout is None:
            done = await run_client(["scontrol", "show", "job", self.job_id], self._env)
            full = parse_job_fields(done.stdout.decode("utf-8", "replace"))
            if done.returncode != 0 or full is None or full.stdout is None:
                # The path the batch script asked for, read from its start.
                self._outputs = [OutputFollower(self.output, self._notify)]
                return
            info = full
        assert info.stdout is not None
        self.output = Path(info.stdout)
        self._outputs = [OutputFollower(self.output, self._notify)]
        if info.stderr is not None and info.stderr != info.stdout:
            self._outputs.append(OutputFollower(Path(info.stderr), self._notify, ERROR_STREAM))

    async def _announce(self, info: JobInfo) -> None:
        await self._find_outputs(info)
        self._started = True
        self.node_list = info.node_list
        host = info.batch_host or (info.node_list or "").split(",")[0] or None
        await self._notify(
            "started",
            {
                "slurm_job_id": self.job_id,
                "host": host,
                "node_list": info.node_list,
                "ranks": self.ntasks or info.ntasks,
            },
        )

    async def observe(self) -> JobInfo | None:
        """The job's state from the squeue shared by every job followed on this cluster while
        it is queued or running; once it has ended (or squeue does not know it), the whole
        story from :meth:`query`. None when squeue failed (``controller_error`` says why) or
        no source knows the job."""
        self.board.add(self.job_id)
        answer = await self.board.observe()
        if answer.error is not None:
            # Not an answer (controller down, bad config): every job asks again later, rather
            # than each asking the struggling controller on its own.
            self.controller_error = answer.error
            return None
        row = answer.rows.get(self.job_id)
        if row is not None:
            info = job_info_from_row(row)
            if info.state not in TERMINAL_STATES:
                self.controller_error = None
                return info
        return await self.query()

    async def query(self) -> JobInfo | None:
        """The job's state from ``scontrol``, or from ``sacct -c`` / the job-completion file
        once the controller has forgotten it; None when no source knows the job."""
        done = await run_client(["scontrol", "show", "job", self.job_id], self._env)
        if done.returncode == 0:
            info = parse_job_fields(done.stdout.decode("utf-8", "replace"))
            if info is not None:
                return info
        error = done.stderr.decode("utf-8", "replace").strip()
        self.controller_error = None if "Invalid job id" in error else error or None
        return await self.query_finished()

    async def query_finished(self) -> JobInfo | None:
        """A finished job's state from ``sacct -c`` (the job-completion record, no accounting
        database needed), else from the job-completion file."""
        argv = ["sacct", "-c", "-j", self.job_id, "-n", "-P", "-o", SACCT_FIELDS]
        done = await run_client(argv, self._env)
        if done.returncode == 0:
            info = parse_sacct(done.stdout.decode("utf-8", "replace"), self.job_id)
            if info is not None:
                return info
        return await self.query_jobcomp_file()

    async def query_jobcomp_file(self) -> JobInfo | None:
        """A finished job's line in the ``jobcomp/filetxt`` file named by ``JobCompLoc``."""
        done = await run_client(["scontrol", "show", "config"], self._env)
        path = jobcomp_file(done.stdout.decode("utf-8", "replace"))
        if done.returncode != 0 or path is None:
            return None
        try:
            text = await anyio.Path(path).read_text(errors="replace")
        except OSError:
            return None
        return parse_jobcomp(text, self.job_id)

    # -- control -------------------------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        """``scancel --signal`` to the batch shell and every step; does not block the loop."""
        try:
            name = signal_module.Signals(signum).name.removeprefix("SIG")
        except ValueError:
            name = str(signum)
        self._spawn_scancel(["scancel", f"--signal={name}", "--full", self.job_id])
        self._wake.set()

    def _spawn_scancel(self, argv: list[str]) -> None:
        try:
            popen = subprocess.Popen(
                argv, env=self._env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            get_logger().error(
                "scancel_failed", run_id=self._run_id, job=self.job_id, error=str(exc)
            )
            return
        self._signallers.append(popen)

    def _reap_signallers(self) -> None:
        self._signallers = [p for p in self._signallers if p.poll() is None]

    async def terminate(self) -> None:
        await self._scancel([])

    async def kill(self) -> None:
        await self._scancel(["--signal=KILL", "--full"])
        await self._scancel([])

    async def _scancel(self, options: list[str]) -> None:
        done = await run_client(["scancel", *options, self.job_id], self._env)
        self._wake.set()
        if done.returncode != 0:
            get_logger().warning(
                "scancel_failed",
                run_id=self._run_id,
                job=self.job_id,
                error=done.stderr.decode("utf-8", "replace").strip(),
            )

    def describe(self) -> dict[str, Any]:
        return {
            "slurm_job_id": self.job_id,
            "batch_script": os.fspath(self.batch_script),
            "slurm_output": os.fspath(self.output),
        }
