"""Liveness: whether a run's executor still lives, and what marking its run LOST records."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from lute_async.records.model import AnalysisRecord
from lute_async.status import TaskStatus

__all__ = [
    "dead_executors",
    "local_pid_is_alive",
    "mark_executor_lost",
    "pid_is_alive",
]


def pid_is_alive(pid: int) -> bool:
    """Tell whether process *pid* exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False  # os.kill(0 or -n) would address process groups, not one process
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell: never declare a run lost on a guess
    if sys.platform == "linux":
        try:
            proc_stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        # The state letter follows the command name, which is in parentheses and may hold any
        # character, so look after the last ")".
        state_at = proc_stat.rfind(")") + 2
        return proc_stat[state_at : state_at + 1] != "Z"
    return True


def local_pid_is_alive(host: str, pid: int) -> bool:
    """The default liveness check of :meth:`RecordStore.mark_lost`: *pid* lives on this host."""
    return pid_is_alive(pid)


def dead_executors(
    candidates: Iterable[tuple[str, int | None]],
    host: str,
    is_alive: Callable[[str, int], bool],
) -> list[tuple[str, int | None]]:
    """The ``(run_id, executor_pid)`` pairs whose executor on *host* is gone (or unknown)."""
    return [(run_id, pid) for run_id, pid in candidates if pid is None or not is_alive(host, pid)]


def mark_executor_lost(
    record: AnalysisRecord, pid: int | None, host: str, now: float, why: str | None = None
) -> None:
    """Record that *record*'s executor (process *pid* on *host*) died while the run was active
    (*why*: how that was seen, when not by its pid being gone)."""
    record.error = {
        "type": "ExecutorLost",
        "message": f"executor process {pid} on {host} {why or 'exited'} "
        f"while the run was {record.status}",
        "traceback": None,
    }
    record.status = TaskStatus.LOST.value
    record.ended_at = now
