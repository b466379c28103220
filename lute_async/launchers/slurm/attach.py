"""Attaching to a live batch job whose executor died: a launcher that submits nothing and
hands the run engine the job its record names, with the run's spool as its communicator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lute_async.communicators.spool import SpoolCommunicator
from lute_async.errors import LaunchError
from lute_async.launchers.base import LaunchSpec, Notify
from lute_async.launchers.slurm.job import SlurmJob
from lute_async.launchers.slurm.launcher import spool_dir_of
from lute_async.launchers.slurm.requeue import Attempts
from lute_async.records.model import AnalysisRecord


class AttachedSlurm:
    """The launcher of a run attached to its job: ``launch`` follows the job the record
    names (``slurm_job_id``), ``communicators`` reads the spool beside its batch script."""

    kind = "slurm"

    def __init__(self, record: AnalysisRecord) -> None:
        script = record.extra.get("batch_script")
        if record.slurm_job_id is None or not isinstance(script, str):
            raise LaunchError(
                f"run {record.id} ({record.name!r}) is not a SLURM batch job: only a batch job "
                "goes on without its executor and can be attached to"
            )
        self.job_id = record.slurm_job_id
        self.batch_script = Path(script)
        self.run_dir = self.batch_script.parent
        self.output = Path(record.extra.get("slurm_output") or self.run_dir / "slurm.out")
        self.ntasks = record.ranks
        self.spool = spool_dir_of(self.batch_script)
        self._described = dict(record.launcher)
        self._append = "--open-mode=append" in (record.launcher.get("extra_sbatch") or [])
        # Requeues the run's earlier executor saw, so later ones are counted after them.
        restarts, requeues = record.extra.get("slurm_restarts"), record.extra.get("requeues")
        self._attempts = Attempts(
            self.job_id,
            restarts=restarts if isinstance(restarts, int) else 0,
            requeues=requeues if isinstance(requeues, int) else 0,
        )
        #: The run's spool reader, once the run engine has asked for its communicators.
        self.reader: SpoolCommunicator | None = None

    def describe(self) -> dict[str, Any]:
        return dict(self._described)

    def communicators(self, requested: tuple[Any, ...]) -> tuple[Any, ...]:
        self.reader = SpoolCommunicator(self.spool)
        return (self.reader,)

    async def launch(self, spec: LaunchSpec, notify: Notify) -> SlurmJob:
        return SlurmJob(
            self.job_id,
            batch_script=self.batch_script,
            output=self.output,
            ntasks=self.ntasks,
            env=spec.env,
            notify=notify,
            run_id=spec.run_id,
            append_output=self._append,
            attempts=self._attempts,
        )
