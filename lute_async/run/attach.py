"""Attaching to a run whose executor died while its batch job went on (``Executor.attach``,
``lute-async attach``): the run is taken up again under its own id and record, its job is
followed to its end, what the job spooled meanwhile is replayed in order through the hooks,
and the record is settled as the dead executor would have settled it."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import anyio

from lute_async.errors import AmbiguousRunId, AttachError, RecordNotFound
from lute_async.launchers.base import ExitStatus
from lute_async.launchers.slurm.attach import AttachedSlurm
from lute_async.messages import Message
from lute_async.records.keeper import RecordKeeper
from lute_async.records.liveness import pid_is_alive
from lute_async.records.model import AnalysisRecord
from lute_async.records.store import RecordStore
from lute_async.run.context import RunContext
from lute_async.run.handle import HooksArg, Run
from lute_async.status import TaskStatus

__all__ = [
    "ATTACHABLE",
    "AttachError",
    "AttachedRun",
    "attach_run",
    "check_attachable",
    "find_record",
]

#: Statuses a run may be attached in: its executor died (LOST) or is said to be watching.
ATTACHABLE = frozenset(
    status.value
    for status in (TaskStatus.LOST, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.STOPPED)
)


def find_record(store: RecordStore, run_id: str) -> AnalysisRecord:
    """The record of ``run_id`` (or of the one run whose id starts with it)."""
    try:
        return store.find(run_id)
    except (RecordNotFound, AmbiguousRunId) as exc:
        raise AttachError(str(exc)) from None


def check_attachable(record: AnalysisRecord) -> None:
    """Raise :class:`AttachError` unless ``record`` is a live run nobody else follows."""
    if record.slurm_job_id is None:
        raise AttachError(
            f"run {record.id} ({record.name!r}) is not a SLURM batch job: only a batch job "
            "goes on without its executor"
        )
    if record.status not in ATTACHABLE:
        raise AttachError(
            f"run {record.id} ({record.name!r}) has ended {record.status}: nothing to attach to"
        )
    alive = record.executor_host == socket.gethostname() and pid_is_alive(record.executor_pid)
    if record.status != TaskStatus.LOST.value and alive:
        raise AttachError(
            f"run {record.id} ({record.name!r}) is followed by executor process "
            f"{record.executor_pid} on {record.executor_host}"
        )


class AttachedRun(Run):
    """A run taken up again from its record: same id, record and job, a new executor."""

    def __init__(self, context: RunContext, record: AnalysisRecord, hooks: HooksArg = None):
        self._attached = launcher = AttachedSlurm(record)
        super().__init__(
            context,
            list(record.command),
            name=record.name,
            hooks=hooks,
            launcher=launcher,
            communicators=(),
            tags=record.tags,
        )
        self.id = record.id
        self._first_start = record.started_at
        record.extra.setdefault("attached", []).append(
            {
                "at": time.time(),
                "was": record.status,
                "error": record.error,
                "executor_pid": record.executor_pid,
                "executor_host": record.executor_host,
                "communicators": record.communicators,
            }
        )
        if record.status == TaskStatus.LOST.value:
            record.status = TaskStatus.RUNNING.value
            record.error, record.ended_at, record.verdict = None, None, None
        record.executor_pid, record.executor_host = os.getpid(), socket.gethostname()
        self.record = record
        self._keeper = RecordKeeper(
            record, limits=record.extra.get("limits"), redactor=self.redactor
        )

    def _recorded_env(self, env: Any) -> dict[str, str]:
        """The run's environment as its first executor recorded it, not this one's."""
        return dict(self.record.env)

    async def _end(self, status: ExitStatus) -> None:
        """End as any run does, the record saying what was replayed from the spool."""
        if self._attached.reader is not None:
            status.extra["spooled"] = self._attached.reader.summary()
        await super()._end(status)

    async def _handle(self, message: Message) -> bool:
        fired = await super()._handle(message)
        if message.sig == "started" and self._first_start is not None:
            self.record.started_at = self._first_start  # when the job first started
        return fired


async def attach_run(
    context: RunContext, store: RecordStore, run_id: str, hooks: HooksArg = None
) -> AttachedRun:
    """The run ``run_id`` taken up again, checked to be attachable (:class:`AttachError`)."""
    record = await anyio.to_thread.run_sync(find_record, store, run_id)
    check_attachable(record)
    return AttachedRun(context, record, hooks)
