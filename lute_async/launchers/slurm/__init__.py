"""SLURM: runs as batch jobs (:class:`Slurm`), followed through one shared squeue per cluster.

One concept per module: ``states`` (what the scheduler says, the run's ExitStatus), ``output``
(following a job's files), ``job`` (following and signalling one job), ``queue`` (the shared
squeue board), ``launcher`` (the batch script and sbatch), ``submit`` (the executor as a job),
``client`` (running SLURM's commands).
"""

from lute_async.launchers.slurm.client import run_client, submitted_job_id
from lute_async.launchers.slurm.job import MAX_MISSES, POLL_FACTOR, POLL_FIRST, POLL_MAX, SlurmJob
from lute_async.launchers.slurm.launcher import Slurm
from lute_async.launchers.slurm.output import (
    ERROR_STREAM,
    OUTPUT_CHUNKS_PER_LOOK,
    OUTPUT_READ,
    OUTPUT_STREAM,
    OutputFollower,
)
from lute_async.launchers.slurm.queue import MIN_GAP, Answer, JobBoard, Row, board_for, parse_rows
from lute_async.launchers.slurm.states import (
    ACTIVE_STATES,
    FAILED_STATES,
    QUEUED_STATES,
    TERMINAL_STATES,
    JobInfo,
    exit_status,
    job_info_from_row,
    parse_exit_code,
    parse_job_fields,
    parse_slurm_time,
)
from lute_async.launchers.slurm.submit import submit_executor

__all__ = [
    "ACTIVE_STATES",
    "ERROR_STREAM",
    "FAILED_STATES",
    "MAX_MISSES",
    "MIN_GAP",
    "OUTPUT_CHUNKS_PER_LOOK",
    "OUTPUT_READ",
    "OUTPUT_STREAM",
    "POLL_FACTOR",
    "POLL_FIRST",
    "POLL_MAX",
    "QUEUED_STATES",
    "TERMINAL_STATES",
    "Answer",
    "JobBoard",
    "JobInfo",
    "OutputFollower",
    "Row",
    "Slurm",
    "SlurmJob",
    "board_for",
    "exit_status",
    "job_info_from_row",
    "parse_exit_code",
    "parse_job_fields",
    "parse_rows",
    "parse_slurm_time",
    "run_client",
    "submit_executor",
    "submitted_job_id",
]
