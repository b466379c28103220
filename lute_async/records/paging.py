"""Keyset paging through runs: one page from just after a cursor, on either backend.

A cursor is the last run's ``(submitted_at, rowid)`` (``seq`` on PostgreSQL), both indexed: a
page deep in 100,000 runs costs what the first one does (no OFFSET scan).
"""

from __future__ import annotations

from typing import Final

from lute_async.records.filters import RunFilter
from lute_async.records.model import AnalysisRecord
from lute_async.records.rows import RecordRows

__all__ = ["RARE_TAG_RUNS", "Cursor", "cursor_of", "page"]

RARE_TAG_RUNS: Final = 5_000
"""A tag at most this many runs have is where a page starts looking (sorting them is cheap)."""

Cursor = tuple[float, int]
"""Where a page of runs ended: the last run's ``(submitted_at, rowid)`` (``seq`` on PostgreSQL)."""


def page(
    database: RecordRows, runs: RunFilter, after: Cursor | None, limit: int, newest_first: bool
) -> tuple[list[AnalysisRecord], Cursor | None]:
    """One page of the runs ``runs`` matches after ``after``, and the cursor of its last run
    (None when no run follows); see :meth:`RecordStore.page`."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    where, args = runs.where()
    rare = _rare_tag(database, runs.wanted_tags())
    if rare is not None:  # few runs have it: start from them, not from a scan of all
        where += " AND id IN (SELECT run_id FROM run_tags WHERE tag = ?)"
        args.append(rare)
    direction, beyond = ("DESC", "<") if newest_first else ("ASC", ">")
    seq = database.dialect.seq
    order = f" ORDER BY submitted_at {direction}, {seq} {direction} LIMIT ?"
    if after is not None:
        keyset = f"(submitted_at, {seq}) {beyond} (?, ?)"
        where = f"{where} AND {keyset}" if where else f" WHERE {keyset}"
        args = [*args, float(after[0]), int(after[1])]
    rows = database.read(
        f"SELECT id, doc, result, submitted_at, {seq} FROM runs{where}{order}",
        [*args, limit + 1],
        "query runs",
    )
    found = [database.decode(run_id, doc, result) for run_id, doc, result, _, _ in rows[:limit]]
    if len(rows) <= limit:  # the one row more was asked only to know whether one follows
        return found, None
    last = rows[limit - 1]
    return found, (last[3], last[4])


def _rare_tag(database: RecordRows, tags: list[str]) -> str | None:
    """The rarest of ``tags`` when at most :data:`RARE_TAG_RUNS` runs have it, else None."""
    counts = []
    for tag in tags:
        rows = database.read(
            "SELECT COUNT(*) FROM (SELECT 1 FROM run_tags WHERE tag = ? LIMIT ?) AS tagged",
            (tag, RARE_TAG_RUNS + 1),
            "count tagged runs",
        )
        counts.append((int(rows[0][0]), tag))
    rarest = min(counts, default=None)
    return rarest[1] if rarest is not None and rarest[0] <= RARE_TAG_RUNS else None


def cursor_of(database: RecordRows, run_id: str) -> Cursor | None:
    """The page cursor of run ``run_id``, or None when there is no such run."""
    rows = database.read(
        f"SELECT submitted_at, {database.dialect.seq} FROM runs WHERE id = ?",
        (run_id,),
        f"read run {run_id}",
    )
    return (float(rows[0][0]), int(rows[0][1])) if rows else None
