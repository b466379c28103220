"""The records database's schema: the tables, their migrations and the schema version.

``PRAGMA user_version`` holds the schema version. Opening migrates an older database in one
transaction and refuses a newer one (written by a newer lute-async) or a file that is not ours.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

from lute_async.errors import RecordStoreError

__all__ = ["SCHEMA_VERSION", "migrate", "open_error", "refuse_newer", "user_version"]


def _migrate_to_v1(conn: sqlite3.Connection) -> None:
    """Create the runs table (indexed columns + JSON document) and the tag index."""
    conn.execute(
        """
        CREATE TABLE runs (
            id            TEXT PRIMARY KEY NOT NULL,
            name          TEXT NOT NULL,
            status        TEXT NOT NULL,
            submitted_at  REAL NOT NULL,
            ended_at      REAL,
            executor_pid  INTEGER,
            executor_host TEXT,
            doc           TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX runs_name_submitted ON runs (name, submitted_at)")
    conn.execute("CREATE INDEX runs_status_submitted ON runs (status, submitted_at)")
    conn.execute("CREATE INDEX runs_submitted ON runs (submitted_at)")
    conn.execute("CREATE INDEX runs_ended ON runs (ended_at)")
    conn.execute("CREATE INDEX runs_executor ON runs (executor_host, executor_pid)")
    conn.execute(
        """
        CREATE TABLE run_tags (
            run_id TEXT NOT NULL,
            tag    TEXT NOT NULL,
            PRIMARY KEY (run_id, tag)
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX run_tags_tag ON run_tags (tag, run_id)")


def _migrate_to_v2(conn: sqlite3.Connection) -> None:
    """Add the result column (msgpack BLOB); v1 rows keep their result in the JSON document."""
    conn.execute("ALTER TABLE runs ADD COLUMN result BLOB")


def _migrate_to_v3(conn: sqlite3.Connection) -> None:
    """Add the replayed journals (their sha256), so one that cannot be removed is not replayed
    again (see :func:`lute_async.records.recovery.replay_journal`)."""
    conn.execute(
        """
        CREATE TABLE replayed_journals (
            sha256      TEXT PRIMARY KEY NOT NULL,
            path        TEXT NOT NULL,
            replayed_at REAL NOT NULL
        )
        """
    )


_MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _migrate_to_v1,
    _migrate_to_v2,
    _migrate_to_v3,
)
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1``. Only ever append."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""The ``PRAGMA user_version`` this code writes and understands."""


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version of the database behind *conn* (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(path: Path, version: int) -> None:
    """Raise :class:`RecordStoreError` when schema *version* is newer than this code's."""
    if version > SCHEMA_VERSION:
        raise RecordStoreError(
            f"records database {path} has schema v{version} but this lute-async "
            f"understands up to v{SCHEMA_VERSION}; upgrade lute-async or use another "
            "database file"
        )


def open_error(path: Path, exc: sqlite3.Error) -> RecordStoreError:
    """The error to raise when sqlite fails while opening the database at *path*."""
    if isinstance(exc, sqlite3.OperationalError):
        return RecordStoreError(f"cannot open records database {path}: {exc}")
    return RecordStoreError(
        f"{path} is not a lute-async records database (sqlite: {exc}); "
        "move it away or point LUTE_ASYNC_DB / Executor(db=...) at another file"
    )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database at *path* to :data:`SCHEMA_VERSION`, refusing a newer one."""
    try:
        version = user_version(conn)
        if version == SCHEMA_VERSION:
            return
        refuse_newer(path, version)
        # Another process may be migrating the same fresh file right now: take the write
        # lock first, then look again at the version it may have left behind.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = user_version(conn)
            refuse_newer(path, version)
            for target, migration in enumerate(_MIGRATIONS[version:], start=version + 1):
                try:
                    migration(conn)
                except sqlite3.Error as exc:
                    raise RecordStoreError(
                        f"cannot migrate records database {path} from schema "
                        f"v{target - 1} to v{target}: {exc}; is it another program's "
                        "database?"
                    ) from exc
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise open_error(path, exc) from exc
