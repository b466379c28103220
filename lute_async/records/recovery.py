"""Recovery on open: replay the journal into the database, and mark LOST the runs whose
executor has died: on this host by its pid, on any host by its lapsed lease (see leases)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

from lute_async.errors import RecordStoreError
from lute_async.logs import get_logger
from lute_async.records.filters import status_rank
from lute_async.records.journal import JournalFile, RecordJournal
from lute_async.records.leases import lapsed_candidates, lapsed_row, prune_leases
from lute_async.records.liveness import dead_executors, local_pid_is_alive, mark_executor_lost
from lute_async.records.rows import RecordRows
from lute_async.status import ACTIVE_STATUSES

__all__ = ["mark_lost", "replay_journal"]


def replay_journal(database: RecordRows, journal: RecordJournal) -> list[str]:
    """Write the records spilled to *journal* into *database*; return their ids.

    A journal entry never moves a run backwards (a finished run is not made RUNNING again).
    A journal that cannot be replayed now is kept for the next open; one that is not the
    user's own is never replayed (see :meth:`RecordJournal.pending`).

    A replayed journal is never replayed again, even when it cannot be removed: its sha256 is
    written in the same transaction as its records (table ``replayed_journals``), and a file
    whose digest is there is only removed, not replayed. The digest is forgotten once the file
    is gone.
    """
    replayed: list[str] = []
    for path in journal.pending():
        try:
            taken = journal.take(path)
        except FileNotFoundError:
            continue  # another process opening the same database took it first
        except OSError as exc:
            get_logger().error(
                "journal_replay_failed", path=str(path), db=database.where, error=str(exc)
            )
            continue
        try:
            contents = journal.read(taken)
            ids = _write_replayed(database, taken, contents)
        except FileNotFoundError:
            continue  # a leftover another process is replaying right now
        except (OSError, RecordStoreError) as exc:
            get_logger().error(
                "journal_replay_failed", path=str(path), db=database.where, error=str(exc)
            )
            continue
        if ids is None:
            get_logger().warning(
                "journal_already_replayed", path=str(taken), sha256=contents.sha256
            )
        else:
            replayed.extend(ids)
            get_logger().warning(
                "journal_replayed", path=str(path), db=database.where, runs=len(ids)
            )
        _remove_replayed(database, taken, contents.sha256)
    return replayed


def _write_replayed(
    database: RecordRows, path: Path, contents: JournalFile
) -> list[str] | None:
    """Write a journal's records and remember its digest, in one transaction; the ids written,
    or None when this content was replayed before."""
    written: list[str] = []
    with database.write(f"replay journal {path}") as conn:
        seen = conn.execute(
            "SELECT 1 FROM replayed_journals WHERE sha256 = ?", (contents.sha256,)
        ).fetchone()
        if seen is not None:
            return None
        for record in contents.records:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (record.id,)).fetchone()
            if row is not None and status_rank(row[0]) > status_rank(record.status):
                continue
            database.upsert(conn, record)
            written.append(record.id)
        conn.execute(
            "INSERT INTO replayed_journals (sha256, path, replayed_at) VALUES (?, ?, ?)",
            (contents.sha256, str(path), time.time()),
        )
    return written


def _remove_replayed(database: RecordRows, path: Path, sha256: str) -> None:
    """Remove a replayed journal file, then forget its digest (kept while the file stays)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        get_logger().error(
            "journal_not_removed",
            path=str(path),
            error=str(exc),
            detail="its records are in the database; it will not be replayed again",
        )
        return
    with contextlib.suppress(RecordStoreError), database.write("forget replayed journal") as conn:
        conn.execute("DELETE FROM replayed_journals WHERE sha256 = ?", (sha256,))


def mark_lost(
    database: RecordRows, is_alive: Callable[[str, int], bool] | None = None
) -> list[str]:
    """Mark LOST the active runs in *database* whose executor has died: on this host, by
    ``is_alive(host, pid)`` (the fast path); on any host, by a lapsed lease. Return their ids
    (see :meth:`RecordStore.mark_lost`). Then the lapsed leases no active run names go."""
    lost = _mark_lost_runs(database, is_alive)
    try:
        prune_leases(database)
    except RecordStoreError as exc:  # housekeeping: a read-only role still opens the records
        get_logger().debug("leases_not_pruned", path=database.where, error=str(exc))
    return lost


def _mark_lost_runs(
    database: RecordRows, is_alive: Callable[[str, int], bool] | None
) -> list[str]:
    host = socket.gethostname()
    active = sorted(status.value for status in ACTIVE_STATUSES)
    placeholders = ", ".join("?" * len(active))
    candidates = database.read(
        f"SELECT id, executor_pid FROM runs WHERE executor_host = ? AND status IN ({placeholders})",
        [host, *active],
        "look for lost runs",
    )
    dead = dead_executors(candidates, host, is_alive or local_pid_is_alive)
    same = database.dialect.same
    by_pid = (
        f"SELECT doc, result FROM runs WHERE id = ? AND executor_pid {same} ? "
        f"AND status IN ({placeholders})"
    )
    found: list[tuple[str, str, int | None, str, str | None]] = [
        (run_id, host, pid, by_pid, None) for run_id, pid in dead
    ]
    seen = {run_id for run_id, _ in dead}
    by_lease = lapsed_row(database)
    for lapsed_id, lease_host, lease_pid in lapsed_candidates(database):
        if lapsed_id not in seen:
            found.append((lapsed_id, lease_host, lease_pid, by_lease, "stopped renewing its lease"))
    if not found:
        return []
    lost: list[str] = []
    now = time.time()
    with database.write("mark runs lost") as conn:
        for run_id, run_host, run_pid, query, why in found:
            # Re-read in the write transaction: the run may have ended, or the lease been
            # renewed, meanwhile.
            row = conn.execute(query, (run_id, run_pid, *active)).fetchone()
            if row is None:
                continue
            try:
                record = database.decode(run_id, *row)
            except RecordStoreError as exc:
                # One damaged row must not make the whole database unopenable.
                get_logger().error(
                    "run_unreadable", run_id=run_id, path=database.where, error=str(exc)
                )
                continue
            mark_executor_lost(record, run_pid, run_host, now, why)
            database.upsert(conn, record)
            lost.append(run_id)
    for run_id in lost:
        get_logger().warning("run_lost", run_id=run_id, path=database.where)
    return lost
