"""The PSI/J executors: ``lute-async`` runs jobs on this machine, ``lute-async-slurm``
submits them to SLURM through lute-async's SLURM launcher. Every job is a recorded
lute-async run; its native id is the run id.

PSI/J loads this module from its file (not through ``sys.modules``), so it holds no state: the
process's one loop is :func:`lute_async.psij.service.service`.
"""

from __future__ import annotations

from psij import (
    InvalidJobException,
    Job,
    JobExecutor,
    JobExecutorConfig,
    JobState,
    SubmitException,
)

from lute_async.executor import Executor
from lute_async.psij.service import PsijService, service


class LuteAsyncJobExecutor(JobExecutor):
    """PSI/J executor running jobs as lute-async runs on this machine. ``url`` is the path of
    the record database (default: ``$LUTE_ASYNC_DB`` or the user data directory)."""

    slurm = False

    def __init__(self, url: str | None = None, config: JobExecutorConfig | None = None) -> None:
        super().__init__(url=url, config=config if config is not None else JobExecutorConfig())
        self._service: PsijService = service(url or None)

    @property
    def lute_executor(self) -> Executor:
        """The lute-async :class:`~lute_async.Executor` that runs the jobs (shared by every
        PSI/J executor of the same database): register hooks on it, read its records."""
        return self._service.runs.executor

    def submit(self, job: Job) -> None:
        spec = self._check_job(job)
        try:
            self._service.submit(self, job, spec, slurm=self.slurm)
        except (InvalidJobException, SubmitException):
            job.executor = None  # not submitted: the job may be given to an executor again
            raise

    def cancel(self, job: Job) -> None:
        if job.native_id is None:
            raise SubmitException("cannot cancel a job that was not submitted")
        self._service.cancel(job.native_id)

    def list(self) -> list[str]:
        return self._service.list()

    def attach(self, job: Job, native_id: str) -> None:
        if job.status.state != JobState.NEW or job.executor is not None:
            raise InvalidJobException("attach needs a new job, not one already submitted")
        job.executor = self
        job._native_id = native_id
        self._service.attach(self, job, native_id)


class LuteAsyncSlurmJobExecutor(LuteAsyncJobExecutor):
    """PSI/J executor submitting jobs to SLURM as lute-async runs (the SLURM launcher)."""

    slurm = True
