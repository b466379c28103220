"""Settling LOST SLURM runs with the scheduler.

An executor that dies (a login node rebooted, the process killed) leaves its runs LOST, but a
batch job goes on without it. :func:`reconcile_lost_jobs` asks the scheduler how each LOST
run's job ended and records that, as the executor would have: status, exit code, error and the
scheduler's times, with ``extra["reconciled"]`` saying it was settled afterwards. Messages the
job sent after its executor died are not recovered (nobody was listening).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lute_async.hooks.builtin import RecordKeeper
from lute_async.launchers.base import ExitStatus
from lute_async.launchers.slurm import ACTIVE_STATES, QUEUED_STATES, SlurmJob, exit_status
from lute_async.messages import Message, TaskStatus
from lute_async.records import AnalysisRecord, RecordStore, RunFilter
from lute_async.run.lifecycle import terminal_payload


@dataclass(slots=True)
class Reconciled:
    """What became of one LOST SLURM run: its record, and the scheduler's state for its job
    (None when no source knows the job any more)."""

    record: AnalysisRecord
    slurm_state: str | None
    settled: bool


async def _ignore(sig: str, data: dict[str, Any]) -> None:
    """Reconciling follows no job: there is nobody to tell about lifecycle changes."""


async def reconcile_lost_jobs(
    store: RecordStore, env: Mapping[str, str] | None = None
) -> list[Reconciled]:
    """Settle every LOST run that has a SLURM job id from the scheduler's final state.

    Runs whose job is still queued or running, or that the scheduler no longer knows, stay
    LOST and are returned unsettled (run this again once the job has ended).
    """
    environ = dict(os.environ if env is None else env)
    outcomes: list[Reconciled] = []
    for record in store.iterate(RunFilter(status=TaskStatus.LOST.value), newest_first=False):
        if record.slurm_job_id is None:
            continue
        job = SlurmJob(
            record.slurm_job_id,
            batch_script=Path(record.extra.get("batch_script") or os.devnull),
            output=Path(record.extra.get("slurm_output") or os.devnull),
            ntasks=record.ranks,
            env=environ,
            notify=_ignore,
            run_id=record.id,
        )
        info = await job.query()
        if info is None or info.state in QUEUED_STATES | ACTIVE_STATES:
            outcomes.append(Reconciled(record, info.state if info else None, settled=False))
            continue
        _settle(record, exit_status(record.slurm_job_id, info), info.end_time)
        store.save(record)
        outcomes.append(Reconciled(record, info.state, settled=True))
    return outcomes


def _settle(record: AnalysisRecord, status: ExitStatus, ended_at: float | None) -> None:
    """Apply the job's ending to ``record`` through the record keeper, the same code that
    records a run's terminal event when its executor is alive."""
    lost_error = record.error
    record.error = None
    event = status.terminal_event()
    data = terminal_payload(event, status)
    ts = ended_at if ended_at is not None else time.time()
    terminal = Message(event, data, 0, ts, None, None)
    RecordKeeper(record, limits=record.extra.get("limits")).apply(terminal)
    record.extra["reconciled"] = {
        "was": TaskStatus.LOST.value,
        "at": time.time(),
        "lost_error": lost_error,
    }
