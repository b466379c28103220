"""The sqlite records database: opening, transactions and reading (rows: see rows).

Plain synchronous :mod:`sqlite3` in WAL mode, safe to share between threads (one connection
under a lock) and between processes on one host. Each row keeps the record as a JSON document
plus a few indexed columns to query on; the result is kept apart as msgpack (see codec).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from lute_async.errors import RecordStoreError
from lute_async.logs import get_logger
from lute_async.records.dialect import SQLITE
from lute_async.records.files import secure_database_files
from lute_async.records.location import is_server_url
from lute_async.records.rows import RecordRows
from lute_async.records.schema import migrate, open_error

__all__ = ["DEFAULT_BUSY_TIMEOUT", "RecordDatabase", "WriteWouldWait", "open_database"]


class WriteWouldWait(Exception):
    """A write asked not to wait found the database busy (another thread or process)."""

DEFAULT_BUSY_TIMEOUT: Final = 30.0
"""Seconds a write waits for another process's write lock before failing."""
WAL_AUTOCHECKPOINT: Final = 1000
"""WAL pages after which a commit checkpoints (sqlite's default), except a commit made in the
event loop (:meth:`RecordDatabase.write_at_once`)."""


class RecordDatabase(RecordRows):
    """One sqlite connection to the records database at ``path``, migrated to the schema.

    Writes go through :meth:`write` (the thread lock and one IMMEDIATE transaction), reads
    through :meth:`read`; sqlite errors become :class:`RecordStoreError` naming the file.
    """

    path: Path
    """The database file (or ``:memory:``)."""

    def __init__(self, path: Path, *, busy_timeout: float, max_result_bytes: int) -> None:
        self.path = path
        self.where = str(path)
        self.dialect = SQLITE
        self.max_result_bytes = max_result_bytes
        self._lock = threading.Lock()
        self._busy_ms = int(busy_timeout * 1000)
        # True while the connection has write_at_once's settings (no busy wait, no automatic
        # checkpoint): they stay from one loop commit to the next (four PRAGMAs a commit
        # less) and every other use of the connection restores the usual ones first.
        self._at_once = False
        self._conn: sqlite3.Connection | None = self._connect(busy_timeout)
        try:
            try:
                migrate(self.connection(), SQLITE, self.path)
            except sqlite3.Error as exc:
                raise open_error(self.path, exc) from exc
        except BaseException:
            self.close()
            raise

    @property
    def in_memory(self) -> bool:
        """Whether this is an in-memory database (no file, no journal)."""
        return str(self.path) == ":memory:"

    @property
    def is_open(self) -> bool:
        """Whether the connection is still open."""
        return self._conn is not None

    def close(self) -> None:
        """Close the connection; further calls raise :class:`RecordStoreError`."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        try:
            if not self.in_memory:
                secure_database_files(self.path)
            # isolation_level=None: no implicit transactions; every write opens its own
            # BEGIN IMMEDIATE so the write lock is taken up front, not upgraded mid-way.
            conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise RecordStoreError(
                f"cannot open records database {self.path}: {exc}; "
                "check the path and its permissions, or set LUTE_ASYNC_DB"
            ) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            with _switching_to_wal(self.path):
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = OFF")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise open_error(self.path, exc) from exc
        if not self.in_memory and str(mode).lower() != "wal":
            get_logger().warning("records_wal_unavailable", path=str(self.path), journal_mode=mode)
        return conn

    def connection(self) -> sqlite3.Connection:
        """The open connection with its usual settings (busy timeout, automatic checkpoints);
        :class:`RecordStoreError` once closed. The caller holds the thread lock."""
        if self._conn is None:
            raise RecordStoreError(f"records database {self.path} is closed")
        if self._at_once:
            self._settings(self._conn, at_once=False)
        return self._conn

    def _settings(self, conn: sqlite3.Connection, *, at_once: bool) -> None:
        """Switch ``conn`` to write_at_once's settings or back (the thread lock held)."""
        busy, pages = (0, 0) if at_once else (self._busy_ms, WAL_AUTOCHECKPOINT)
        try:
            conn.execute(f"PRAGMA busy_timeout = {busy}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        except sqlite3.Error as exc:
            raise RecordStoreError(f"cannot configure records database {self.path}: {exc}") from exc
        self._at_once = at_once

    @contextlib.contextmanager
    def write(self, what: str) -> Iterator[sqlite3.Connection]:
        """Hold the thread lock and one IMMEDIATE transaction; commit, or roll back on error."""
        with self._lock, self._transaction(what) as conn:
            yield conn

    @contextlib.contextmanager
    def write_at_once(self, what: str) -> Iterator[sqlite3.Connection]:
        """:meth:`write`, or :class:`WriteWouldWait` (nothing written) when it would have to
        wait: for the thread lock, or for another process's write lock (no busy timeout)."""
        if not self._lock.acquire(blocking=False):
            raise WriteWouldWait(what)
        try:
            if self._conn is None:
                raise RecordStoreError(f"records database {self.path} is closed")
            # No busy wait, and no checkpoint of the WAL at this commit (one copies the log
            # into the database and syncs it: 10-50 ms every ~1,000 pages): :meth:`checkpoint`
            # does that, from the record writer's thread.
            if not self._at_once:
                self._settings(self._conn, at_once=True)
            with self._transaction(what, busy=WriteWouldWait(what), conn=self._conn) as conn:
                yield conn
        finally:
            self._lock.release()

    def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL's committed pages into the database as far as no reader needs them
        (a PASSIVE checkpoint: it waits for no one); the WAL's frames, and those copied."""
        with self._lock:
            try:
                _, frames, copied = self.connection().execute(
                    "PRAGMA wal_checkpoint(PASSIVE)"
                ).fetchone()
                return int(frames), int(copied)
            except sqlite3.Error as exc:
                raise RecordStoreError(
                    f"cannot checkpoint records database {self.path}: {exc}"
                ) from exc

    @contextlib.contextmanager
    def _transaction(
        self,
        what: str,
        busy: WriteWouldWait | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (the lock held by the caller) on ``conn`` (default: the
        connection with its usual settings): committed, or rolled back on error; ``busy``,
        when given, is raised if another writer holds the database."""
        if conn is None:
            conn = self.connection()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if busy is None:
                    raise
                raise busy from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # sqlite has already rolled back after SQLITE_FULL and some I/O errors; a
                # second ROLLBACK would hide the real error behind "no transaction".
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise RecordStoreError(f"cannot {what} in records database {self.path}: {exc}") from exc

    def read(self, sql: str, args: Iterable[Any], what: str) -> list[Any]:
        """All rows of one query, under the thread lock."""
        with self._lock:
            conn = self.connection()
            try:
                return conn.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise RecordStoreError(
                    f"cannot {what} in records database {self.path}: {exc}"
                ) from exc


@contextlib.contextmanager
def _switching_to_wal(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the database's directory while switching a fresh file to
    WAL. Two connections that both read the file and then ask for the exclusive lock the
    switch needs make sqlite answer one of them "database is locked" at once, without its busy
    handler (it would deadlock otherwise): processes opening a new database together took
    turns only by luck. The flock makes them wait their turn (blocking, no retry loop); it is
    on the directory, not the file, whose descriptors must not be closed beside sqlite's (that
    would drop its POSIX locks)."""
    if str(path) == ":memory:":
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # a directory this user may enter but not read: switch without it
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def open_database(
    path: str | os.PathLike[str], *, busy_timeout: float, max_result_bytes: int
) -> RecordRows:
    """The records database at *path*: a sqlite file, or (a ``postgresql:`` URL) a PostgreSQL
    database through psycopg, imported only then."""
    if is_server_url(path):
        from lute_async.records.postgres import PostgresDatabase

        return PostgresDatabase(str(path), max_result_bytes=max_result_bytes)
    return RecordDatabase(Path(path), busy_timeout=busy_timeout, max_result_bytes=max_result_bytes)
