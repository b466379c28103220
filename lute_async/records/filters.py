"""Which runs a query wants (:class:`RunFilter`), and how far along a run's status is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from lute_async.status import TaskStatus, status_value

__all__ = ["RunFilter", "status_rank"]

_STATUS_RANK: Final[dict[str, int]] = {
    TaskStatus.PENDING: 0,
    TaskStatus.QUEUED: 1,
    TaskStatus.RUNNING: 2,
    TaskStatus.STOPPED: 2,
}
"""How far along an active run is; terminal statuses rank 3."""


def status_rank(status: str) -> int:
    """How far along a run with *status* is: a journal never moves a run backwards."""
    return _STATUS_RANK.get(status, 3)


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a query wants: every given field must match. ``status`` is one status or
    several (any matches); ``since`` <= submitted_at < ``until`` (epoch seconds); a run
    matches ``tags`` when it has all of them."""

    name: str | None = None
    status: str | Iterable[str] | None = None
    since: float | None = None
    until: float | None = None
    tags: str | Iterable[str] | None = None

    def wanted_tags(self) -> list[str]:
        """The tags a run must all have (sorted, each once)."""
        if self.tags is None:
            return []
        return sorted({self.tags} if isinstance(self.tags, str) else set(self.tags))

    def where(self) -> tuple[str, list[Any]]:
        """The ``WHERE`` clause (empty when nothing filters) and its arguments."""
        clauses: list[str] = []
        args: list[Any] = []
        if self.name is not None:
            clauses.append("name = ?")
            args.append(self.name)
        if self.status is not None:
            statuses = [self.status] if isinstance(self.status, str) else list(self.status)
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(status_value(s) for s in statuses)
        if self.since is not None:
            clauses.append("submitted_at >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("submitted_at < ?")
            args.append(self.until)
        if self.tags is not None:
            wanted = self.wanted_tags()
            # One primary-key probe per tag and row: a scan in submitted order stops at the
            # page's end (an IN list of every tagged run was sorted whole: 1 s at 100,000).
            for tag in wanted:
                clauses.append(
                    "EXISTS (SELECT 1 FROM run_tags WHERE run_id = runs.id AND tag = ?)"
                )
                args.append(tag)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
