"""Telling a requeued job from one that goes on: the scheduler put a job that had started (or
a later attempt of it) back in the queue, through ``scontrol requeue``, preemption or a node
failure with ``--requeue``.

SLURM shows a requeue as a higher restart count (``Restarts=`` in scontrol, ``RestartCnt`` in
squeue) while the old attempt is still COMPLETING, then PENDING (or REQUEUED, REQUEUE_HOLD)
with a begin time a little later. The ``requeued`` event is due once the job is back in the
queue, or once a later attempt is seen running or ended (it got through the queue between two
looks); a COMPLETING job with a higher count is the old attempt ending, or a new one ending:
the next look tells.
"""

from __future__ import annotations

from typing import Any

from lute_async.launchers.slurm.states import ACTIVE_STATES, QUEUED_STATES, JobInfo

__all__ = ["Attempts"]


class Attempts:
    """Counts the attempts of one job as the job follower sees them."""

    def __init__(self, job_id: str, *, restarts: int = 0, requeues: int = 0) -> None:
        self.job_id = job_id
        #: The scheduler's restart count of the attempt being followed.
        self.restarts = restarts
        #: Requeues seen (each is a ``requeued`` event), counting those an earlier executor
        #: of the run saw when it is taken up again (``lute-async attach``).
        self.requeues = requeues

    def starting(self, state: str) -> bool:
        """True when a job not yet announced and seen in ``state`` has an attempt running
        (after a requeue, COMPLETING is the old attempt ending: the next one runs at RUNNING)."""
        return state in ACTIVE_STATES and (not self.requeues or state == "RUNNING")

    def requeued(
        self, info: JobInfo, *, started: bool, node_list: str | None
    ) -> dict[str, Any] | None:
        """The ``requeued`` event's data when ``info`` shows the job requeued since the last
        look (``started``: the attempt followed so far was seen running), else None."""
        newer = info.restarts is not None and info.restarts > self.restarts
        queued = info.state in QUEUED_STATES
        if not (queued and (started or newer)) and not (newer and info.state != "COMPLETING"):
            return None
        self.requeues += 1
        self.restarts = max(self.restarts + 1, info.restarts or 0)
        return {
            "slurm_job_id": self.job_id,
            "requeues": self.requeues,
            "slurm_restarts": info.restarts,
            "slurm_state": info.state,
            "reason": info.reason,
            "node_list": node_list,
        }
