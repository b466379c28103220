"""Executor leases: LOST detection that works whichever host looks.

Each executor process holds one row of ``executor_leases`` (host, pid, started, renewed,
expires) in the records database, renewed every ``lease_period`` seconds while an executor of
the process is open (see :mod:`~lute_async.records.renewer`); it expires
:data:`LEASE_PERIODS` periods after its last renewal. An active run whose executor's lease has
lapsed, or that was submitted before its (host, pid)'s lease started (the pid was reused by a
later process), is LOST, whoever opens the database. Renewed and expiry times are the
database's clock (PostgreSQL's: one clock for all hosts); the start is the executor's, like a
run's ``submitted_at``. A run whose executor holds no lease (an older lute-async, or an
executor used outside ``async with``) is left to the same-host pid check. Lapsed leases no
active run names are deleted when the records are opened (:func:`prune_leases`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Final

from lute_async.records.rows import RecordRows
from lute_async.status import ACTIVE_STATUSES

__all__ = [
    "DEFAULT_LEASE_PERIOD",
    "LEASE_PERIODS",
    "PROCESS_STARTED",
    "Lease",
    "lapsed_candidates",
    "lapsed_row",
    "prune_leases",
]

DEFAULT_LEASE_PERIOD: Final = 5.0
"""Seconds between renewals of an executor's lease."""

LEASE_PERIODS: Final = 3
"""A lease lapses this many periods after its last renewal (two renewals may be missed)."""

PROCESS_STARTED: Final = time.time()
"""When this process began recording (about when it started): a lease's start, so a later
process reusing the pid is told from this one."""

_ACTIVE: Final = tuple(sorted(status.value for status in ACTIVE_STATUSES))
_IN_ACTIVE: Final = f"r.status IN ({', '.join('?' * len(_ACTIVE))})"
_LAPSED: Final = "(l.expires_at < {now} OR r.submitted_at < l.started_at)"
_JOIN: Final = (
    "runs r JOIN executor_leases l ON l.host = r.executor_host AND l.pid = r.executor_pid"
)

#: Leases that can tell nothing any more: lapsed, and no active run names their executor.
_PRUNABLE: Final = (
    "FROM executor_leases l WHERE l.expires_at < {now} AND NOT EXISTS ("
    "SELECT 1 FROM runs r WHERE r.executor_host = l.host AND r.executor_pid = l.pid "
    f"AND {_IN_ACTIVE})"
)

_RENEW: Final = """
    INSERT INTO executor_leases (host, pid, started_at, renewed_at, expires_at)
    VALUES (?, ?, ?, {now}, {now} + ?)
    ON CONFLICT (host, pid) DO UPDATE SET
        started_at = excluded.started_at,
        renewed_at = excluded.renewed_at,
        expires_at = excluded.expires_at
"""


class Lease:
    """This process's lease in one records database."""

    def __init__(self, database: RecordRows, period: float = DEFAULT_LEASE_PERIOD) -> None:
        if not period > 0:
            raise ValueError(f"lease_period must be a positive number of seconds, got {period}")
        self.database = database
        self.period = period
        self.host = socket.gethostname()
        self.pid = os.getpid()

    def renew(self) -> None:
        """Write the lease, expiring :data:`LEASE_PERIODS` periods from now (RecordStoreError
        when the database cannot take it)."""
        ttl = self.period * LEASE_PERIODS
        sql = self.database.dialect.sql(_RENEW)
        with self.database.write("renew the executor lease") as conn:
            conn.execute(sql, (self.host, self.pid, PROCESS_STARTED, ttl))

    def expires_at(self) -> float | None:
        """When the lease lapses (the database's clock), or None when there is none."""
        rows = self.database.read(
            "SELECT expires_at FROM executor_leases WHERE host = ? AND pid = ?",
            (self.host, self.pid),
            "read the executor lease",
        )
        return float(rows[0][0]) if rows else None


def lapsed_candidates(database: RecordRows) -> list[tuple[str, str, int]]:
    """``(run_id, host, pid)`` of the active runs whose executor's lease has lapsed."""
    sql = database.dialect.sql(
        f"SELECT r.id, r.executor_host, r.executor_pid FROM {_JOIN} "
        f"WHERE {_IN_ACTIVE} AND {_LAPSED}"
    )
    return [tuple(row) for row in database.read(sql, _ACTIVE, "look for runs of lapsed leases")]


def lapsed_row(database: RecordRows) -> str:
    """The query, inside the write transaction, of one run (id, pid) still active and still of a
    lapsed lease: its ``doc`` and ``result``."""
    return database.dialect.sql(
        f"SELECT r.doc, r.result FROM {_JOIN} WHERE r.id = ? AND r.executor_pid = ? "
        f"AND {_IN_ACTIVE} AND {_LAPSED}"
    )


def prune_leases(database: RecordRows) -> int:
    """Delete the leases that lapsed and that no active run names (their runs have ended or
    were just marked LOST): one row per executor process ever run would otherwise stay for
    good. Written only when there is one (a plain open takes no write lock). How many went."""
    dialect = database.dialect
    found = dialect.sql(f"SELECT l.host, l.pid {_PRUNABLE}")
    if not database.read(found, _ACTIVE, "look for lapsed leases"):
        return 0
    # The same condition again inside the transaction: a lease may have been renewed since.
    delete = dialect.sql(f"DELETE FROM executor_leases WHERE (host, pid) IN ({found})")
    with database.write("prune lapsed executor leases") as conn:
        return int(conn.execute(delete, _ACTIVE).rowcount)
