"""Why a SLURM job is still pending, in words, and whether it can ever start as submitted.

squeue's ``Reason`` of a pending job (``Resources``, ``Priority``, ``PartitionNodeLimit``...)
is shown to the user while the run is QUEUED; a reason that waiting cannot cure (the job asks
for more than its partition allows, an account or QOS it may not use) is a warning that says
so, since such a job would otherwise sit in the queue silently until someone cancels it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NEVER_STARTS", "SCHEDULER_STREAM", "pending_log"]

#: The ``stream`` of the log lines that tell what the scheduler says of a job.
SCHEDULER_STREAM = "scheduler"

#: Reasons a pending job keeps until the job or the cluster's configuration is changed.
NEVER_STARTS: dict[str, str] = {
    "PartitionNodeLimit": "it asks for more nodes than its partition allows",
    "PartitionTimeLimit": "its time limit is longer than its partition allows",
    "PartitionConfig": "it asks for more than its partition's configuration allows",
    "BadConstraints": "its constraints cannot be met by any node",
    "InvalidAccount": "its account is not valid",
    "InvalidQOS": "its QOS is not valid",
    "QOSMaxWallDurationPerJobLimit": "its time limit is longer than its QOS allows",
    "AssocMaxWallDurationPerJobLimit": "its time limit is longer than its association allows",
    "DependencyNeverSatisfied": "a job it depends on ended the wrong way",
}


def pending_log(job_id: str, reason: str) -> dict[str, Any]:
    """The ``log`` event data that tells why job ``job_id`` is pending."""
    why = NEVER_STARTS.get(reason)
    if why is None:
        return {
            "message": f"SLURM job {job_id} pending: {reason}",
            "level": "info",
            "stream": SCHEDULER_STREAM,
        }
    return {
        "message": (
            f"SLURM job {job_id} pending: {reason}: it cannot start as submitted ({why}); "
            "cancel it and change the request, or ask the cluster's admins"
        ),
        "level": "warning",
        "stream": SCHEDULER_STREAM,
    }
