"""SLURM: runs as batch jobs (:class:`Slurm`), followed through one shared squeue per cluster."""

from lute_async.launchers.slurm.job import (
    ACTIVE_STATES,
    ERROR_STREAM,
    OUTPUT_STREAM,
    QUEUED_STATES,
    OutputFollower,
    Slurm,
    SlurmJob,
    exit_status,
    job_info_from_row,
    parse_job_fields,
    parse_slurm_time,
    submit_executor,
)
from lute_async.launchers.slurm.queue import JobBoard, parse_rows
