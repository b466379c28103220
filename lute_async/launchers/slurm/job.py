"""SLURM launcher: the run becomes a batch job; its ranks report back over TCP.

The launcher writes a batch script into the run's directory (only the ``#SBATCH`` options the
user gave), submits it with ``sbatch --parsable`` and follows the job at a backing-off
interval with one ``squeue`` shared by every job followed on the cluster (``slurm_queue``);
how it ended comes from ``scontrol show job``, then ``sacct -c`` or the job-completion file
once the job has left the controller's memory. The scheduler's final state decides the
terminal event, also when the task never connected. The job's output file is read at each
look and handed on as ``log`` events. The run's secret reaches the job through sbatch's
environment (``--export=ALL``), never through the script.

``submit_executor`` submits the executor itself (``lute-async run``) as a batch job, LUTE's
model: the task and its MPI ranks run on the allocation and record into a shared database.
"""

from __future__ import annotations

import os
import re
import shlex
import signal as signal_module
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from lute_async.communicators.base import LineBuffer, line_text
from lute_async.communicators.tcp import TcpCommunicator
from lute_async.errors import LaunchError
from lute_async.launchers.base import ExitStatus, LaunchSpec, Notify
from lute_async.launchers.mpi import own_python
from lute_async.launchers.slurm.queue import Row, board_for
from lute_async.logs import get_logger

#: Back-off between scheduler queries: first delay, factor and ceiling (seconds).
POLL_FIRST = 0.2
POLL_FACTOR = 2.0
POLL_MAX = 5.0
#: Queries in a row that find no trace of the job before it is declared lost.
MAX_MISSES = 6
#: A look at a running job's output file reads at most this many chunks of OUTPUT_READ bytes
#: (a job writing faster is caught up with at the next look, and wholly once it has ended).
OUTPUT_READ = 1024 * 1024
OUTPUT_CHUNKS_PER_LOOK = 8
#: The ``stream`` of log events carrying a job's output (stdout, and stderr unless the job
#: writes it to a file of its own, whose lines come as ERROR_STREAM).
OUTPUT_STREAM = "job_output"
ERROR_STREAM = "job_error"

QUEUED_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)
ACTIVE_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
)
FAILED_STATES = frozenset(
    {
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
TERMINAL_STATES = FAILED_STATES | {"COMPLETED", "CANCELLED", "TIMEOUT"}

_FIELD = re.compile(
    r"(?:^|\s)(JobState|Reason|ExitCode|NodeList|BatchHost|NumTasks|StartTime|EndTime|StdOut|StdErr)"
    r"=(\S*)"
)
_ERROR_TYPES = {
    "OUT_OF_MEMORY": "OutOfMemory",
    "NODE_FAIL": "NodeFail",
    "PREEMPTED": "Preempted",
    "BOOT_FAIL": "BootFail",
    "DEADLINE": "Deadline",
}


@dataclass(slots=True)
class JobInfo:
    """One observation of a job: its state and what the scheduler knows about it."""

    state: str
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    node_list: str | None = None
    batch_host: str | None = None
    ntasks: int | None = None
    raw_exit: str | None = None
    source: str = "scontrol"
    #: When the scheduler started and ended the job (epoch seconds, 1 s resolution).
    start_time: float | None = None
    end_time: float | None = None
    #: The job's output and error files, patterns (%j, %x, ...) expanded (scontrol only).
    stdout: str | None = None
    stderr: str | None = None


def parse_exit_code(text: str | None) -> tuple[int | None, int | None]:
    """SLURM's ``ExitCode=code:signal`` as ``(code, signal or None)``."""
    if not text:
        return None, None
    code, _, sig = text.partition(":")
    exit_code = int(code) if code.isdigit() else None
    signum = int(sig) if sig.isdigit() and int(sig) else None
    return exit_code, signum


def _null(value: str | None) -> str | None:
    return None if value in (None, "", "(null)", "None", "N/A") else value


def parse_slurm_time(text: str | None) -> float | None:
    """SLURM's ``2026-11-23T14:11:29`` (the controller's local time) as epoch seconds; None
    for ``Unknown``, ``None`` and the like."""
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def parse_job_fields(text: str, source: str = "scontrol") -> JobInfo | None:
    """A JobInfo from ``Key=Value`` text (``scontrol show job`` or a job-completion line)."""
    fields = dict(_FIELD.findall(text))
    state = fields.get("JobState")
    if not state:
        return None
    code, signum = parse_exit_code(fields.get("ExitCode"))
    ntasks = fields.get("NumTasks", "")
    return JobInfo(
        state=state.split()[0].upper(),
        exit_code=code,
        signal=signum,
        reason=_null(fields.get("Reason")),
        node_list=_null(fields.get("NodeList")),
        batch_host=_null(fields.get("BatchHost")),
        ntasks=int(ntasks) if ntasks.isdigit() else None,
        raw_exit=fields.get("ExitCode"),
        source=source,
        start_time=parse_slurm_time(fields.get("StartTime")),
        end_time=parse_slurm_time(fields.get("EndTime")),
        stdout=_null(fields.get("StdOut")),
        stderr=_null(fields.get("StdErr")),
    )


def job_info_from_row(row: Row) -> JobInfo:
    """A JobInfo from a squeue row (state and placement; how a job ended comes from
    :meth:`SlurmJob.query`)."""
    ntasks = row.get("NumTasks", "")
    batch_host = _null(row.get("BatchHost"))
    return JobInfo(
        state=row["State"].split()[0].upper() if row.get("State") else "UNKNOWN",
        reason=_null(row.get("Reason")),
        node_list=_null(row.get("NodeList")),
        batch_host=None if batch_host in (None, "n/a") else batch_host,
        # NO_VAL (4294967294) until the job is placed
        ntasks=int(ntasks) if ntasks.isdigit() and int(ntasks) < 2**31 else None,
        source="squeue",
    )


def _ran(info: JobInfo) -> bool:
    """True when a finished job had started on its nodes (not a launch or boot failure)."""
    return (
        bool(info.node_list)
        and info.state not in ("BOOT_FAIL", "NODE_FAIL")
        and info.reason != "JobLaunchFailure"
    )


def exit_status(job_id: str, info: JobInfo) -> ExitStatus:
    """The run's ExitStatus for a job that reached terminal state ``info.state``."""
    state = info.state
    extra: dict[str, Any] = {
        "slurm_state": state,
        "slurm_exit_code": info.raw_exit,
        "slurm_reason": info.reason,
    }
    if info.node_list:
        extra["node_list"] = info.node_list
    if info.start_time is not None and info.end_time is not None:
        extra["slurm_start"], extra["slurm_end"] = info.start_time, info.end_time
        extra["slurm_elapsed"] = max(0.0, info.end_time - info.start_time)
    if state == "COMPLETED":
        return ExitStatus(exit_code=info.exit_code or 0, extra=extra)
    if state == "TIMEOUT":
        return ExitStatus(
            exit_code=info.exit_code,
            signal=info.signal,
            terminal="timed_out",
            error={"type": "Timeout", "message": f"SLURM job {job_id} exceeded its time limit"},
            extra=extra,
        )
    if state == "CANCELLED":
        return ExitStatus(
            exit_code=info.exit_code,
            signal=info.signal,
            terminal="cancelled",
            error={"type": "Cancelled", "message": f"SLURM job {job_id} was cancelled"},
            extra=extra,
        )
    why = f"SLURM job {job_id} ended {state}"
    if info.reason:
        why += f" ({info.reason})"
    signum = info.signal
    if info.reason == "JobLaunchFailure":
        # ExitCode's second half is then slurmd's error number, not a signal.
        kind, signum = "JobLaunchFailure", None
        why += "; the batch script could not be started (check --output, --chdir, the script)"
    elif state == "FAILED" and info.signal is not None:
        kind = "KilledBySignal"
        why += f", killed by signal {info.signal}"
    elif state == "FAILED" and info.exit_code:
        kind = "NonZeroExit"
        why += f", exit code {info.exit_code}"
    else:
        kind = _ERROR_TYPES.get(state, "SlurmJobFailed")
    error = {"type": kind, "message": why, "slurm_state": state, "reason": info.reason}
    return ExitStatus(
        exit_code=info.exit_code, signal=signum, terminal="failed", error=error, extra=extra
    )


async def _run(
    argv: list[str], env: Mapping[str, str] | None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return await anyio.run_process(argv, check=False, env=env)
    except FileNotFoundError as exc:
        raise LaunchError(
            f"{argv[0]} not found on PATH; install the SLURM client tools (slurm-client)"
        ) from exc


class OutputFollower:
    """Hands on what a job has written to its output file since the last look, as ``log``
    events, one per line. The job follower looks each time it queries the scheduler and once
    more when the job has ended, so lines arrive in order and before the terminal event.

    SLURM writes the file on the batch host: the executor sees it through a shared filesystem
    (or on a single-node cluster); where it cannot, nothing is sent and the record still names
    the file.
    """

    def __init__(self, path: Path, notify: Notify, stream: str = OUTPUT_STREAM) -> None:
        self.path = path
        self.stream = stream
        self._notify = notify
        self._file: BinaryIO | None = None
        self._lines = LineBuffer()
        self._closed = False

    async def look(self, *, final: bool = False) -> None:
        """Send the complete lines written since the last look; ``final`` also sends an
        unfinished last line, reads to the end of the file and closes it."""
        chunks = 0
        while not self._closed and (final or chunks < OUTPUT_CHUNKS_PER_LOOK):
            chunk = await anyio.to_thread.run_sync(self._read)  # NFS reads may block
            if not chunk:
                break
            chunks += 1
            await self._send(self._lines.feed(chunk))
        if final:
            await self._send(self._lines.finish())
            self.close()

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read(self) -> bytes:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 - held open across looks
            except OSError:
                return b""  # not written yet, or not visible from here
        return self._file.read(OUTPUT_READ)

    async def _send(self, lines: list[bytes]) -> None:
        for raw in lines:
            await self._notify(
                "log", {"message": line_text(raw), "level": "info", "stream": self.stream}
            )


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
        self._signallers: list[subprocess.Popen[bytes]] = []
        self._wake = anyio.Event()
        #: The job's output files, followed once it runs (the scheduler names them then).
        self._outputs = [OutputFollower(output, notify)]
        #: The board this job's state is read from, with every job on the same cluster.
        self.board = board_for(self._env)
        self.board.add(job_id)
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
                    self._status = self._lost()
                    break
            else:
                misses = 0
                if info.state != self._last_state:
                    self._last_state = info.state
                    delay = POLL_FIRST  # things are moving: look again soon
                if info.state in TERMINAL_STATES:
                    if not self._started and _ran(info):  # it ran between two queries
                        await self._announce(info)
                    await self._look(final=True)
                    self._status = exit_status(self.job_id, info)
                    self._status.extra["slurm_output"] = os.fspath(self.output)
                    break
                if info.state in ACTIVE_STATES and not self._started:
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

    async def _look(self, *, final: bool = False) -> None:
        for output in self._outputs:
            await output.look(final=final)

    async def _find_outputs(self, info: JobInfo) -> None:
        """Follow the files the scheduler says the job writes (``--output``/``--error`` given
        in ``extra_sbatch`` included), asking ``scontrol`` if squeue's row did not say."""
        if info.stdout is None:
            done = await _run(["scontrol", "show", "job", self.job_id], self._env)
            full = parse_job_fields(done.stdout.decode("utf-8", "replace"))
            if done.returncode != 0 or full is None or full.stdout is None:
                return  # keep the path the batch script asked for
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

    def _lost(self) -> ExitStatus:
        message = (
            f"SLURM job {self.job_id} is unknown to scontrol, sacct and the job-completion "
            "record; its outcome is lost"
        )
        return ExitStatus(
            exit_code=None,
            terminal="failed",
            error={"type": "SlurmJobLost", "message": message},
            extra={"slurm_state": None},
        )

    async def observe(self) -> JobInfo | None:
        """The job's state from the squeue shared by every job followed on this cluster while
        it is queued or running; once it has ended (or squeue does not know it), the whole
        story from :meth:`query`. None when squeue failed (``controller_error`` says why) or
        no source knows the job."""
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
        done = await _run(["scontrol", "show", "job", self.job_id], self._env)
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
        fields = "JobID,State,ExitCode,NodeList,Reason,Start,End"
        done = await _run(["sacct", "-c", "-j", self.job_id, "-n", "-P", "-o", fields], self._env)
        if done.returncode == 0:
            for line in done.stdout.decode("utf-8", "replace").splitlines():
                parts = line.split("|")
                if len(parts) >= 3 and parts[0] == self.job_id:
                    code, signum = parse_exit_code(parts[2])
                    return JobInfo(
                        state=parts[1].split()[0].upper(),
                        exit_code=code,
                        signal=signum,
                        node_list=_null(parts[3]) if len(parts) > 3 else None,
                        reason=_null(parts[4]) if len(parts) > 4 else None,
                        raw_exit=parts[2],
                        source="sacct",
                        start_time=parse_slurm_time(parts[5]) if len(parts) > 5 else None,
                        end_time=parse_slurm_time(parts[6]) if len(parts) > 6 else None,
                    )
        return await self.query_jobcomp_file()

    async def query_jobcomp_file(self) -> JobInfo | None:
        """A finished job's line in the ``jobcomp/filetxt`` file named by ``JobCompLoc``."""
        done = await _run(["scontrol", "show", "config"], self._env)
        match = re.search(r"^JobCompLoc\s*=\s*(\S+)", done.stdout.decode(), re.MULTILINE)
        if done.returncode != 0 or match is None or not match.group(1).startswith("/"):
            return None
        path = anyio.Path(match.group(1))
        try:
            text = await path.read_text(errors="replace")
        except OSError:
            return None
        for line in reversed(text.splitlines()):
            if line.startswith(f"JobId={self.job_id} "):
                return parse_job_fields(line, source="jobcomp")
        return None

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
        done = await _run(["scancel", *options, self.job_id], self._env)
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


class Slurm:
    """Run the command as a SLURM batch job.

    Only the options given become ``#SBATCH`` lines (``extra_sbatch`` verbatim, last). With
    ``mpi=True`` and more than one task or node the command runs under ``srun --mpi=pmix``
    (every task runs it), otherwise the batch shell runs it once. Ranks report over TCP to
    ``tcp_host`` (default: this host's reachable address). A command starting with a bare
    ``python`` runs with ``python`` (default: this interpreter).
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
        self.ntasks = ntasks
        self.nodes = nodes
        self.extra_sbatch = list(extra_sbatch)
        self.mpi = mpi
        self.tcp_host = tcp_host
        self.tcp_advertise = tcp_advertise
        self.python = python

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sbatch": dict(self.options),
            "extra_sbatch": list(self.extra_sbatch),
            "mpi": self.mpi,
            "host": socket.gethostname(),
        }

    def communicators(self, requested: tuple[Any, ...]) -> tuple[Any, ...]:
        """A job's processes run elsewhere: they can reach the executor over TCP only."""
        if self.tcp_host is None and self.tcp_advertise is None:
            return ("tcp",)
        return (TcpCommunicator(self.tcp_host, advertise=self.tcp_advertise),)

    def batch_script(self, spec: LaunchSpec, output: Path) -> str:
        """The batch script's text: options, working directory and the command, no secrets."""
        argv = own_python(spec.argv, self.python)
        argv = spec.limits.wrap(argv) if spec.limits is not None else argv
        options = {"job-name": spec.name, "output": os.fspath(output), **self.options}
        lines = [
            "#!/bin/bash",
            *(f"#SBATCH --{key}={value}" for key, value in options.items()),
            *(f"#SBATCH {shlex.quote(arg)}" for arg in self.extra_sbatch),
            f"# lute-async run {spec.run_id}; the environment comes from sbatch (--export=ALL)",
        ]
        if spec.cwd is not None:
            lines.append(f"cd {shlex.quote(spec.cwd)} || exit 1")
        many = (self.ntasks or 1) > 1 or str(self.nodes or 1) != "1"
        prefix = "srun --mpi=pmix " if self.mpi and many else ""
        lines.append(f"exec {prefix}{shlex.join(argv)}")
        return "\n".join(lines) + "\n"

    async def launch(self, spec: LaunchSpec, notify: Notify) -> SlurmJob:
        if not spec.argv:
            raise LaunchError(f"run {spec.name!r} has an empty command")
        run_dir = anyio.Path(spec.run_dir)
        await run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        script = spec.run_dir / "job.sbatch"
        output = spec.run_dir / "slurm-%j.out"
        await anyio.Path(script).write_text(self.batch_script(spec, output))
        # --export=ALL: the job gets sbatch's environment, which carries the run's secret.
        argv = ["sbatch", "--parsable", "--export=ALL", os.fspath(script)]
        done = await _run(argv, spec.env)
        job_id = _submitted_job_id(done, f"run {spec.name!r}")
        job_output = spec.run_dir / f"slurm-{job_id}.out"
        job = SlurmJob(
            job_id,
            batch_script=script,
            output=job_output,
            ntasks=self.ntasks,
            env=spec.env,
            notify=notify,
            run_id=spec.run_id,
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


def submit_executor(
    name: str,
    config: Path,
    sbatch_args: list[str],
    params: dict[str, str],
    db: Path | None,
) -> str:
    """Submit ``lute-async run NAME --config CONFIG`` as a batch job and return its job id.

    The executor runs inside the allocation (so an MPI task's ``srun`` uses it) with this
    interpreter, and records into ``db`` (default ``$LUTE_ASYNC_DB``), which must be on a
    filesystem the compute nodes share. ``sbatch_args`` go to sbatch as given.
    """
    command = [sys.executable, "-m", "lute_async.cli", "run", name, "--config"]
    command.append(os.fspath(Path(config).resolve()))
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    env = dict(os.environ)
    if db is not None:
        env["LUTE_ASYNC_DB"] = os.fspath(Path(db).resolve())
    script = "#!/bin/bash\n" + f"exec {shlex.join(command)}\n"
    argv = ["sbatch", "--parsable", "--export=ALL", f"--job-name={name}", *sbatch_args]
    try:
        done = subprocess.run(
            argv, input=script.encode(), env=env, capture_output=True, check=False
        )
    except FileNotFoundError as exc:
        raise LaunchError("sbatch not found on PATH; install the SLURM client tools") from exc
    return _submitted_job_id(done, f"the executor job for task {name!r}")


def _submitted_job_id(done: subprocess.CompletedProcess[bytes], what: str) -> str:
    """The job id ``sbatch --parsable`` printed, or a LaunchError saying why there is none."""
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip() or done.returncode
        raise LaunchError(f"sbatch refused {what}: {reason}")
    job_id = done.stdout.decode().strip().split(";")[0]
    if not job_id.isdigit():
        raise LaunchError(f"sbatch printed no job id for {what}: {job_id!r}")
    return job_id
