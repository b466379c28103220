"""Task statuses: where a run is in its life, and the sets of them, defined once."""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "ACTIVE_STATUSES",
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "TaskStatus",
    "status_value",
]


class TaskStatus(enum.StrEnum):
    """Where a run is in its life; the terminal ones never change again."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEDOUT = "TIMEDOUT"
    LOST = "LOST"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


RUN_STATUSES: Final[frozenset[TaskStatus]] = frozenset(TaskStatus)
"""Every status a run can have."""

TERMINAL_STATUSES: Final[frozenset[TaskStatus]] = frozenset(
    {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.TIMEDOUT,
        TaskStatus.LOST,
    }
)
"""Statuses a run never leaves."""

ACTIVE_STATUSES: Final[frozenset[TaskStatus]] = RUN_STATUSES - TERMINAL_STATUSES
"""Statuses that need a live executor watching the run (PENDING, QUEUED, RUNNING, STOPPED)."""


def status_value(status: object) -> str:
    """The plain name of a status given as a string or a ``TaskStatus`` (or any enum) member."""
    if isinstance(status, enum.Enum):
        status = status.value
    return str.__str__(status) if isinstance(status, str) else str(status)
