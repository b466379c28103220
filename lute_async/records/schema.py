"""The records database's schema: the tables, their migrations and the schema version, one
definition for sqlite and PostgreSQL.

Each migration is a few SQL statements written once; :class:`~lute_async.records.dialect.Dialect`
fills in the few terms the backends spell differently. sqlite keeps the schema version in
``PRAGMA user_version``, PostgreSQL in the one-row table ``lute_async_schema``. Opening migrates
an older database in one transaction and refuses a newer one (written by a newer lute-async) or
a database that is not ours.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final, Protocol

from lute_async.errors import RecordStoreError
from lute_async.records.dialect import SQLITE, Dialect

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SqlConnection",
    "migrate",
    "open_error",
    "refuse_newer",
    "schema_version",
]


class SqlConnection(Protocol):
    """What the records code needs of a connection: sqlite3's, or the PostgreSQL wrapper's."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # v1: the runs table (indexed columns + JSON document) and the tag index.
    (
        """
        CREATE TABLE runs (
            id            TEXT PRIMARY KEY NOT NULL,
            name          TEXT NOT NULL,
            status        TEXT NOT NULL,
            submitted_at  {real} NOT NULL,
            ended_at      {real},
            executor_pid  INTEGER,
            executor_host TEXT,
            doc           TEXT NOT NULL{seq_column}
        )
        """,
        "CREATE INDEX runs_name_submitted ON runs (name, submitted_at)",
        "CREATE INDEX runs_status_submitted ON runs (status, submitted_at)",
        "CREATE INDEX runs_submitted ON runs (submitted_at)",
        "CREATE INDEX runs_ended ON runs (ended_at)",
        "CREATE INDEX runs_executor ON runs (executor_host, executor_pid)",
        """
        CREATE TABLE run_tags (
            run_id TEXT NOT NULL,
            tag    TEXT NOT NULL,
            PRIMARY KEY (run_id, tag)
        ) {without_rowid}
        """,
        "CREATE INDEX run_tags_tag ON run_tags (tag, run_id)",
    ),
    # v2: the result column (msgpack); v1 rows keep their result in the JSON document.
    ("ALTER TABLE runs ADD COLUMN result {blob}",),
    # v3: the replayed journals (their sha256), so one that cannot be removed is not replayed
    # again (see lute_async.records.recovery.replay_journal).
    (
        """
        CREATE TABLE replayed_journals (
            sha256      TEXT PRIMARY KEY NOT NULL,
            path        TEXT NOT NULL,
            replayed_at {real} NOT NULL
        )
        """,
    ),
    # v4: executor leases: each executor process renews its row while it lives; an active run
    # whose executor's lease has lapsed is LOST (see lute_async.records.leases).
    (
        """
        CREATE TABLE executor_leases (
            host       TEXT NOT NULL,
            pid        INTEGER NOT NULL,
            started_at {real} NOT NULL,
            renewed_at {real} NOT NULL,
            expires_at {real} NOT NULL,
            PRIMARY KEY (host, pid)
        ) {without_rowid}
        """,
    ),
)
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1``. Only ever append."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The schema version this code writes and understands."""


def _migrate_to_v1(conn: sqlite3.Connection) -> None:
    """Create the v1 tables in a sqlite database (the tests build a v1 database with it)."""
    for statement in MIGRATIONS[0]:
        conn.execute(SQLITE.sql(statement))


def schema_version(conn: SqlConnection, dialect: Dialect) -> int:
    """The schema version of the database behind *conn* (0 for a new one)."""
    if dialect is SQLITE:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    # pg_class itself, read with this statement's snapshot: a name lookup (to_regclass) may
    # answer from a cache that predates a migration committed while we waited for its lock.
    found = conn.execute(
        "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'lute_async_schema' "
        "AND relnamespace = current_schema()::regnamespace"
    ).fetchone()[0]
    if not found:
        return 0
    row = conn.execute("SELECT max(version) FROM lute_async_schema").fetchone()
    return int(row[0] or 0)


def _write_version(conn: SqlConnection, dialect: Dialect, version: int) -> None:
    if dialect is SQLITE:
        conn.execute(f"PRAGMA user_version = {int(version)}")
        return
    conn.execute("CREATE TABLE IF NOT EXISTS lute_async_schema (version INTEGER NOT NULL)")
    conn.execute("DELETE FROM lute_async_schema")
    conn.execute("INSERT INTO lute_async_schema (version) VALUES (?)", (version,))


def refuse_newer(where: str | Path, version: int) -> None:
    """Raise :class:`RecordStoreError` when schema *version* is newer than this code's."""
    if version > SCHEMA_VERSION:
        raise RecordStoreError(
            f"records database {where} has schema v{version} but this lute-async "
            f"understands up to v{SCHEMA_VERSION}; upgrade lute-async or use another "
            "database"
        )


def open_error(path: Path, exc: sqlite3.Error) -> RecordStoreError:
    """The error to raise when sqlite fails while opening the database at *path*."""
    if isinstance(exc, sqlite3.OperationalError):
        return RecordStoreError(f"cannot open records database {path}: {exc}")
    return RecordStoreError(
        f"{path} is not a lute-async records database (sqlite: {exc}); "
        "move it away or point LUTE_ASYNC_DB / Executor(db=...) at another file"
    )


def migrate(
    conn: SqlConnection,
    dialect: Dialect,
    where: str | Path,
    db_error: type[Exception] = sqlite3.Error,
) -> None:
    """Bring the database behind *conn* (*where* names it) to :data:`SCHEMA_VERSION`,
    refusing a newer one; *db_error* is the backend's error class, left to the caller except
    for a failed migration step (a RecordStoreError naming the step)."""
    version = schema_version(conn, dialect)
    if version == SCHEMA_VERSION:
        return
    refuse_newer(where, version)
    # Another process may be migrating the same fresh database right now: take the write
    # lock first, then look again at the version it may have left behind.
    conn.execute(dialect.begin_write)
    try:
        if dialect.lock_schema:
            conn.execute(dialect.lock_schema)
        version = schema_version(conn, dialect)
        refuse_newer(where, version)
        for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            try:
                for statement in statements:
                    conn.execute(dialect.sql(statement))
            except db_error as exc:
                first_line = (str(exc).strip().splitlines() or [""])[0]  # not PG's LINE/caret
                raise RecordStoreError(
                    f"cannot migrate records database {where} from schema "
                    f"v{target - 1} to v{target}: {first_line}; is it another program's "
                    "database, or may this user not create tables in it?"
                ) from exc
        _write_version(conn, dialect, SCHEMA_VERSION)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
