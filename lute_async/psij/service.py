"""The PSI/J plugin's engine: one :class:`~lute_async.background.BackgroundRuns` loop per
record database for the whole process (every ``JobExecutor`` instance shares it), and one
thread that hands status changes to PSI/J, in order, so a user's status callback (which may
submit more jobs) never runs on, or blocks, the event loop.

A run's events drive its jobs' statuses: QUEUED once submitted, ACTIVE on ``started``, and
the terminal status from the final record (COMPLETED; FAILED with the exit code and the
error's message, also for a timeout or a lost run; CANCELED).
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from pathlib import Path

import anyio
from psij import Job, JobExecutor, JobSpec, JobState, JobStatus, SubmitException

from lute_async.background import BackgroundRun, BackgroundRuns
from lute_async.errors import LuteAsyncError, RecordNotFound
from lute_async.private_paths import ensure_private_dir
from lute_async.psij.spec import plan
from lute_async.records import AnalysisRecord
from lute_async.records.liveness import pid_is_alive
from lute_async.records.location import as_target, default_db

#: How often a run owned by another process is read again from the records (attach).
FOLLOW_INTERVAL = 1.0

Watcher = tuple[JobExecutor, Job]


def job_status(record: AnalysisRecord) -> JobStatus:
    """The PSI/J status of a run's record."""
    meta: dict[str, object] = {"run_id": record.id}
    if record.slurm_job_id:
        meta["slurm_job_id"] = record.slurm_job_id
    status = record.status
    if status in ("PENDING", "QUEUED"):
        return JobStatus(JobState.QUEUED, metadata=meta)
    if status in ("RUNNING", "STOPPED"):
        return JobStatus(JobState.ACTIVE, metadata=meta)
    ended = record.ended_at or time.time()
    if status == "COMPLETED":
        return JobStatus(JobState.COMPLETED, time=ended, exit_code=0, metadata=meta)
    if status == "CANCELLED":
        return JobStatus(JobState.CANCELED, time=ended, exit_code=record.exit_code, metadata=meta)
    error = record.error or {}
    verdict = record.verdict or {}
    message = error.get("message") or verdict.get("detail") or f"run {status}"
    if error.get("type"):
        message = f"{error['type']}: {message}"
    exit_code = record.exit_code
    if exit_code is None and record.signal is not None:
        exit_code = 128 + record.signal
    return JobStatus(
        JobState.FAILED,
        time=ended,
        message=f"{status}: {message}",
        exit_code=exit_code,
        metadata=meta,
    )


class PsijService:
    """The loop behind every lute-async PSI/J executor of one record database."""

    def __init__(self, db: str | os.PathLike[str] | None) -> None:
        self.runs = BackgroundRuns("lute-async-psij", db=db)
        self.private_dir = self.runs.executor.workdir / "psij"
        ensure_private_dir(self.private_dir)
        self._lock = threading.Lock()
        self._watchers: dict[str, list[Watcher]] = {}
        self._cleanup: dict[str, list[Path]] = {}
        self._updates: queue.SimpleQueue[tuple[JobExecutor, Job, JobStatus]] = queue.SimpleQueue()
        self._notifier = threading.Thread(
            target=self._notify, name="lute-async-psij-status", daemon=True
        )
        self._notifier.start()

    def _notify(self) -> None:
        while True:  # blocks in get(): wakes only for a status change
            executor, job, status = self._updates.get()
            executor._set_job_status(job, status)

    def _push(self, watchers: list[Watcher], status: JobStatus) -> None:
        for executor, job in watchers:
            self._updates.put((executor, job, status))

    # -- submit / cancel ------------------------------------------------------------------

    def submit(self, executor: JobExecutor, job: Job, spec: JobSpec, *, slurm: bool) -> str:
        """Start ``job`` as a run and return its run id (the job's native id)."""
        made = plan(job, spec, slurm=slurm, private_dir=self.private_dir)
        watchers: list[Watcher] = [(executor, job)]

        def started(handle: BackgroundRun) -> None:
            with self._lock:
                self._push(
                    list(watchers), JobStatus(JobState.ACTIVE, metadata={"run_id": handle.id})
                )

        def ended(handle: BackgroundRun) -> None:
            with self._lock:
                self._watchers.pop(handle.id, None)
                self._push(list(watchers), job_status(handle.record))
                watchers.clear()
            for path in made.cleanup:
                path.unlink(missing_ok=True)

        try:
            handle = self.runs.start(made.argv, on_start=started, on_end=ended, **made.options)
        except LuteAsyncError as exc:
            for path in made.cleanup:
                path.unlink(missing_ok=True)
            raise SubmitException(str(exc)) from exc
        with self._lock:
            if not handle.finished.done():
                self._watchers[handle.id] = watchers
            job._native_id = handle.id
            self._push(
                [(executor, job)], JobStatus(JobState.QUEUED, metadata={"run_id": handle.id})
            )
        return handle.id

    def cancel(self, run_id: str) -> None:
        """Cancel the run (a no-op once it has ended); a SubmitException for a run that lives
        in another process."""
        handle = self.runs.live(run_id)
        if handle is not None:
            handle.cancel()
            return
        record = self._record(run_id)
        if not record.is_terminal:
            raise SubmitException(
                f"run {run_id} is run by another lute-async process ({record.executor_host}, "
                f"pid {record.executor_pid}): cancel it there (or with lute-async)"
            )

    # -- attach / list ----------------------------------------------------------------------

    def attach(self, executor: JobExecutor, job: Job, run_id: str) -> None:
        """Drive ``job``'s status from the run ``run_id``: live here, or from its records."""
        with self._lock:
            watchers = self._watchers.get(run_id)
            if watchers is not None:
                watchers.append((executor, job))
                handle = self.runs.live(run_id)
                started = handle is not None and handle.started.is_set()
                state = JobState.ACTIVE if started else JobState.QUEUED
                self._push([(executor, job)], JobStatus(state, metadata={"run_id": run_id}))
                return
        record = self._record(run_id)
        self._push([(executor, job)], job_status(record))
        if not record.is_terminal:
            self.runs.spawn(self._follow(run_id, [(executor, job)], record.status))

    async def _follow(self, run_id: str, watchers: list[Watcher], last: str) -> None:
        """Follow a run another process owns, reading its record every FOLLOW_INTERVAL."""
        here = socket.gethostname()
        while True:
            await anyio.sleep(FOLLOW_INTERVAL)
            executor = self.runs.executor
            store = await executor.store()
            record = await anyio.to_thread.run_sync(store.get, run_id, limiter=executor._db_limiter)
            gone = record.executor_host == here and not pid_is_alive(record.executor_pid)
            if record.status != last or record.is_terminal:
                last = record.status
                self._push(watchers, job_status(record))
            if record.is_terminal:
                return
            if gone:  # nobody will ever finish this record
                message = f"LOST: the executor {record.executor_pid} of run {run_id} is gone"
                if record.slurm_job_id:
                    message += (
                        f"; SLURM job {record.slurm_job_id} may still run "
                        "(`lute-async records reconcile` settles it)"
                    )
                self._push(watchers, JobStatus(JobState.FAILED, message=message))
                return

    def _record(self, run_id: str) -> AnalysisRecord:
        try:
            return self.runs.load(run_id)
        except RecordNotFound as exc:
            raise SubmitException(f"no lute-async run {run_id!r}: {exc}") from None

    def list(self) -> list[str]:
        """Ids of the runs not ended: this process's, and the records' PENDING/QUEUED/RUNNING."""

        async def active() -> list[str]:
            executor = self.runs.executor
            store = await executor.store()
            records = await anyio.to_thread.run_sync(
                lambda: store.query(status=("PENDING", "QUEUED", "RUNNING", "STOPPED")),
                limiter=executor._db_limiter,
            )
            return [record.id for record in records]

        live = [handle.id for handle in self.runs.live_runs()]
        return live + [run_id for run_id in self.runs.call(active()) if run_id not in live]


_services: dict[str, PsijService] = {}
_services_lock = threading.Lock()


def service(db: str | os.PathLike[str] | None = None) -> PsijService:
    """The process's service for record database ``db`` (default: ``$LUTE_ASYNC_DB`` or the
    user data directory), started on first use."""
    target = as_target(db) if db is not None else default_db()
    path = target if isinstance(target, str) else os.path.realpath(target)  # a URL as given
    with _services_lock:
        found = _services.get(path)
        if found is None:
            found = _services[path] = PsijService(path)
        return found
