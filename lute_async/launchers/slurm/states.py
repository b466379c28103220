"""What the scheduler says about a job: its state sets, one observation (:class:`JobInfo`)
parsed from scontrol, squeue, sacct or the job-completion file, and the run's
:class:`ExitStatus` for a job that ended."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lute_async.launchers.base import ExitStatus
from lute_async.launchers.slurm.queue import Row

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

#: The fields ``sacct`` is asked for, in the order :func:`parse_sacct_line` reads them.
SACCT_FIELDS = "JobID,State,ExitCode,NodeList,Reason,Start,End"

_FIELD = re.compile(
    r"(?:^|\s)(JobState|Reason|ExitCode|NodeList|BatchHost|NumTasks|StartTime|EndTime|StdOut|StdErr"
    r"|Restarts)"
    r"=(\S*)"
)
_JOBCOMP_LOC = re.compile(r"^JobCompLoc\s*=\s*(\S+)", re.MULTILINE)
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
    #: How many times the scheduler has requeued the job (scontrol, squeue; None: unknown).
    restarts: int | None = None

    @property
    def ran(self) -> bool:
        """True when a finished job had started on its nodes (not a launch or boot failure)."""
        return (
            bool(self.node_list)
            and self.state not in ("BOOT_FAIL", "NODE_FAIL")
            and self.reason != "JobLaunchFailure"
        )


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


def _count(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _state(text: str) -> str:
    """``CANCELLED by 1000`` as ``CANCELLED``."""
    return text.split()[0].upper()


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
        state=_state(state),
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
        restarts=_count(fields.get("Restarts")),
    )


def job_info_from_row(row: Row) -> JobInfo:
    """A JobInfo from a squeue row (state and placement; how a job ended comes from
    :meth:`SlurmJob.query`)."""
    ntasks = row.get("NumTasks", "")
    batch_host = _null(row.get("BatchHost"))
    return JobInfo(
        state=_state(row["State"]) if row.get("State") else "UNKNOWN",
        reason=_null(row.get("Reason")),
        node_list=_null(row.get("NodeList")),
        batch_host=None if batch_host in (None, "n/a") else batch_host,
        # NO_VAL (4294967294) until the job is placed
        ntasks=int(ntasks) if ntasks.isdigit() and int(ntasks) < 2**31 else None,
        source="squeue",
        restarts=_count(row.get("RestartCnt")),
    )


def parse_sacct(text: str, job_id: str) -> JobInfo | None:
    """The job's JobInfo from ``sacct -n -P -o SACCT_FIELDS`` output (its steps skipped)."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 3 and parts[0] == job_id:
            code, signum = parse_exit_code(parts[2])
            return JobInfo(
                state=_state(parts[1]),
                exit_code=code,
                signal=signum,
                node_list=_null(parts[3]) if len(parts) > 3 else None,
                reason=_null(parts[4]) if len(parts) > 4 else None,
                raw_exit=parts[2],
                source="sacct",
                start_time=parse_slurm_time(parts[5]) if len(parts) > 5 else None,
                end_time=parse_slurm_time(parts[6]) if len(parts) > 6 else None,
            )
    return None


def jobcomp_file(config_text: str) -> str | None:
    """The ``jobcomp/filetxt`` file ``scontrol show config`` names, if it names one."""
    match = _JOBCOMP_LOC.search(config_text)
    return match.group(1) if match is not None and match.group(1).startswith("/") else None


def parse_jobcomp(text: str, job_id: str) -> JobInfo | None:
    """The job's JobInfo from the job-completion file's text (its last line for the job)."""
    for line in reversed(text.splitlines()):
        if line.startswith(f"JobId={job_id} "):
            return parse_job_fields(line, source="jobcomp")
    return None


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


def lost_status(job_id: str) -> ExitStatus:
    """The run's ExitStatus for a job no source knows any more."""
    message = (
        f"SLURM job {job_id} is unknown to scontrol, sacct and the job-completion "
        "record; its outcome is lost"
    )
    return ExitStatus(
        exit_code=None,
        terminal="failed",
        error={"type": "SlurmJobLost", "message": message},
        extra={"slurm_state": None},
    )
