"""The record store: what ran, how and how it ended, in a database that outlives the
executor: a sqlite file, or a PostgreSQL database for a whole cluster.

:class:`RecordStore` writes a run's :class:`~lute_async.records.model.AnalysisRecord` at submit
and at every status change and finds it again. Connection and row plumbing live in
:mod:`~lute_async.records.database` (sqlite) and :mod:`~lute_async.records.postgres`, the SQL
they share in :mod:`~lute_async.records.rows`, recovery on open (journal replay, LOST runs) in
:mod:`~lute_async.records.recovery`, executor leases in :mod:`~lute_async.records.leases`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from lute_async.errors import AmbiguousRunId, RecordNotFound, RecordStoreError
from lute_async.records import paging, recovery
from lute_async.records.codec import DEFAULT_MAX_RESULT_BYTES, StoredRecord, stored_record
from lute_async.records.database import DEFAULT_BUSY_TIMEOUT, RecordDatabase, open_database
from lute_async.records.filters import RunFilter
from lute_async.records.journal import RecordJournal, journal_for
from lute_async.records.leases import DEFAULT_LEASE_PERIOD, Lease
from lute_async.records.location import default_db
from lute_async.records.model import AnalysisRecord
from lute_async.records.paging import Cursor
from lute_async.records.rows import RecordRows
from lute_async.status import RUN_STATUSES, status_value

__all__ = ["Cursor", "RecordStore", "checkpoint", "save_at_once"]


class RecordStore:
    """The database of run records, shared safely by threads and processes: a sqlite file on
    one host, or a PostgreSQL database (``path`` a ``postgresql://`` URL, libpq's conventions;
    needs the ``[postgres]`` extra) for many.

    Open it with ``RecordStore(path)`` (or as a context manager). Opening creates the parent
    directory (0700) and the schema, migrates an older schema, and refuses a newer one or a file
    that is not sqlite. The files are private: a database, or a directory, that another user
    owns or may write to is refused, and one of ours that others may read is made 0600 (see
    :func:`~lute_async.records.files.secure_database_files`). With ``mark_lost=True`` (the
    default) runs left active by an executor that has since died are marked LOST on open; their
    ids are in :attr:`lost_on_open`.

    A result whose msgpack encoding exceeds *max_result_bytes* is recorded as
    ``{"payload": None, "summary": ..., "omitted": {"type", "size", "sha256", ...}}`` with a
    ``result_not_recorded`` warning; the record object passed to :meth:`save` keeps its payload.
    Records are a history, not a data store: keep large outputs in files and record their paths.
    """

    path: Path | str
    """The database file, or the server database's URL with its password masked."""
    lost_on_open: list[str]
    """Ids of the runs :meth:`mark_lost` marked LOST when the store was opened."""
    replayed_on_open: list[str]
    """Ids of the runs :meth:`replay_journal` wrote from the journal when the store was opened."""
    journal: RecordJournal | None
    """Where records the database cannot take are spilled (None for an in-memory database)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mark_lost: bool = True,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        journal_dir: str | os.PathLike[str] | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        if max_result_bytes < 1:
            raise ValueError(f"max_result_bytes must be at least 1, got {max_result_bytes}")
        self.lost_on_open = []
        self.replayed_on_open = []
        self._spilled = False
        self._database: RecordRows = open_database(
            path, busy_timeout=busy_timeout, max_result_bytes=max_result_bytes
        )
        database = self._database
        self.path = database.path if isinstance(database, RecordDatabase) else database.where
        try:
            self.journal = (
                None
                if self._database.in_memory
                else journal_for(path, journal_dir, max_result_bytes=max_result_bytes)
            )
            self.replayed_on_open = self.replay_journal()
            if mark_lost:
                self.lost_on_open = self.mark_lost()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, mark_lost: bool = True) -> Self:
        """Open the store at *path* (a file or a URL), or the default one (``$LUTE_ASYNC_DB``,
        else the user data dir) when *path* is None."""
        return cls(default_db() if path is None else path, mark_lost=mark_lost)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._database.dialect.name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return not self._database.is_open

    @property
    def max_result_bytes(self) -> int:
        """The largest result (its msgpack encoding) recorded whole; larger ones are summarised."""
        return self._database.max_result_bytes

    @max_result_bytes.setter
    def max_result_bytes(self, value: int) -> None:
        self._database.max_result_bytes = value

    def __repr__(self) -> str:
        state = "open" if self._database.is_open else "closed"
        return f"<RecordStore {str(self.path)!r} ({state})>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection; further calls raise :class:`RecordStoreError`."""
        self._database.close()

    # --- public operations -----------------------------------------------------------------

    def save(self, record: AnalysisRecord) -> None:
        """Insert or replace *record* (tags included) in one transaction, env redacted again.

        When the database cannot take it (full disk, read-only file), the record is spilled to
        the :attr:`journal` and :class:`RecordStoreError` still raises, saying where it went.
        A result larger than :attr:`max_result_bytes` is stored as a summary (see the class).
        """
        stored = self._stored(record)
        try:
            with self._database.write(f"save run {record.id}") as conn:
                self._database.upsert_stored(conn, stored)
        except RecordStoreError as exc:
            if self.journal is None:
                raise
            self._spilled = True
            try:
                where = self.journal.append_stored(record.id, stored)
            except RecordStoreError as spill:
                raise RecordStoreError(f"{exc}; {spill}") from exc
            raise RecordStoreError(
                f"{exc}; run {record.id} was spilled to the journal {where}, "
                "replayed when the database takes records again"
            ) from exc
        self._replay_if_back()

    def _replay_if_back(self) -> None:
        """After a save that got through: replay what earlier saves spilled meanwhile."""
        if self._spilled:
            self._spilled = False
            self.replay_journal()

    def save_many(self, records: Sequence[AnalysisRecord]) -> list[Exception | None]:
        """Save ``records`` in order in one transaction; what each save raised (or None).

        When that transaction fails, each record is saved on its own, so only the records the
        database cannot take fail (and are spilled to the journal, as :meth:`save` does).
        """
        if len(records) > 1 and _raised(self._save_together, records) is None:
            self._replay_if_back()
            return [None] * len(records)
        return [_raised(self.save, record) for record in records]

    def _save_together(self, records: Sequence[AnalysisRecord]) -> None:
        stored = [self._stored(record) for record in records]
        with self._database.write(f"save {len(records)} runs") as conn:
            for one in stored:
                self._database.upsert_stored(conn, one)

    def _stored(self, record: AnalysisRecord) -> StoredRecord:
        _check_status(record)
        return stored_record(record, self.max_result_bytes)

    def replay_journal(self) -> list[str]:
        """Write the records spilled to the journal into the database; return their ids.

        Runs on open. A journal entry never moves a run backwards (a finished run is not made
        RUNNING again). A journal that cannot be replayed now is kept for the next open.
        """
        if self.journal is None:
            return []
        return recovery.replay_journal(self._database, self.journal)

    def get(self, run_id: str) -> AnalysisRecord:
        """Return the run with id *run_id*, or raise :class:`RecordNotFound` (a KeyError)."""
        rows = self._database.read(
            "SELECT doc, result FROM runs WHERE id = ?", (run_id,), f"read run {run_id}"
        )
        if not rows:
            raise RecordNotFound(run_id, str(self.path))
        return self._database.decode(run_id, *rows[0])

    def query(
        self,
        *,
        name: str | None = None,
        status: str | Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        tags: str | Iterable[str] | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[AnalysisRecord]:
        """Return runs matching every given filter, ordered by submission time.

        *status* is one status or several (any matches); *since* <= submitted_at < *until*
        (epoch seconds); a run matches *tags* when it has all of them.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        runs = RunFilter(name, status, since, until, tags)
        found = self.iterate(runs, newest_first=newest_first, page=max(limit or 256, 1))
        return list(itertools.islice(found, limit))

    def iterate(
        self,
        runs: RunFilter | None = None,
        *,
        newest_first: bool = True,
        page: int = 256,
    ) -> Iterator[AnalysisRecord]:
        """The runs ``runs`` matches (all by default), like :meth:`query` without a limit,
        read ``page`` at a time: memory stays bounded by a page however many runs match
        (``records export`` uses it)."""
        if page < 1:
            raise ValueError(f"page must be >= 1, got {page}")
        after: Cursor | None = None
        while True:
            found, after = self.page(runs, after=after, limit=page, newest_first=newest_first)
            yield from found
            if after is None:
                return

    def page(
        self,
        runs: RunFilter | None = None,
        *,
        after: Cursor | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> tuple[list[AnalysisRecord], Cursor | None]:
        """One page of the runs ``runs`` matches, from just after the cursor ``after`` (the
        start when None), and the cursor of its last run (None when no run follows).

        Keyset paging on the indexed ``(submitted_at, rowid)`` (``seq`` on PostgreSQL): a page
        deep in 100,000 runs costs what the first one does (no OFFSET scan).
        """
        return paging.page(self._database, runs or RunFilter(), after, limit, newest_first)

    def cursor_of(self, run_id: str) -> Cursor:
        """The :meth:`page` cursor of run ``run_id`` (pages start just after it)."""
        cursor = paging.cursor_of(self._database, run_id)
        if cursor is None:
            raise RecordNotFound(run_id, str(self.path))
        return cursor

    def latest(self, name: str, status: str | None = "COMPLETED") -> AnalysisRecord | None:
        """Return the last-submitted run called *name* with *status* (any if None), or None."""
        found = self.query(name=name, status=status, limit=1)
        return found[0] if found else None

    def find_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Return up to *limit* run ids starting with *prefix* (for short ids typed by users)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._database.read(
            "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
            (escaped + "%", limit),
            "look up run ids",
        )
        return [row[0] for row in rows]

    def find(self, id_or_prefix: str) -> AnalysisRecord:
        """The run with id ``id_or_prefix``, or the one run whose id starts with it (at least
        4 characters, as users type short ids); :class:`RecordNotFound` when there is none,
        :class:`AmbiguousRunId` when several match."""
        try:
            return self.get(id_or_prefix)
        except RecordNotFound:
            pass
        matches = self.find_ids(id_or_prefix) if len(id_or_prefix) >= 4 else []
        if len(matches) == 1:
            return self.get(matches[0])
        if matches:
            raise AmbiguousRunId(
                f"{id_or_prefix!r} matches {len(matches)} runs; give more of the id"
            )
        raise RecordNotFound(id_or_prefix, str(self.path))

    def mark_lost(self, is_alive: Callable[[str, int], bool] | None = None) -> list[str]:
        """Mark LOST the active runs whose executor has died; return their ids.

        A run is active while PENDING, QUEUED, RUNNING or STOPPED. Runs whose
        ``executor_host`` is this host are checked with ``is_alive(host, executor_pid)``
        (default: the pid exists and is not a zombie); runs of any host whose executor's lease
        has lapsed are LOST too (see :mod:`~lute_async.records.leases`). QUEUED SLURM runs are
        marked LOST too: nobody is watching the job any more, though SLURM may still run it
        (``scancel`` it by its ``slurm_job_id``). A recycled pid makes a dead executor look
        alive, so the check errs towards leaving a run alone.
        """
        return recovery.mark_lost(self._database, is_alive)

    def renew_lease(self, period: float = DEFAULT_LEASE_PERIOD) -> None:
        """Write this process's executor lease, lapsing ``3 * period`` seconds from now; an
        executor renews it every *period* seconds while open (RecordStoreError when the
        database cannot take it)."""
        Lease(self._database, period).renew()

    def lease_expires_at(self) -> float | None:
        """When this process's lease lapses (epoch seconds, the database's clock), or None."""
        return Lease(self._database).expires_at()


def save_at_once(store: RecordStore, records: Sequence[AnalysisRecord]) -> bool:
    """Save ``records`` in one transaction of ``store``'s sqlite database if that needs no
    waiting at all: True once committed; False with nothing written when the database is
    busy, a record cannot be stored, a journal waits to be replayed, or the store is not
    sqlite (then :meth:`RecordStore.save_many` does it, waiting as it must). The record
    writer's fast path, kept outside the class (which is at its size limit)."""
    database = store._database  # this module's own class: its private parts
    if not isinstance(database, RecordDatabase) or store._spilled:
        return False
    if any(_large_result(record.result) for record in records):  # packed and hashed: the thread
        return False
    try:
        stored = [store._stored(record) for record in records]
        with database.write_at_once(f"save {len(records)} runs") as conn:
            for one in stored:
                database.upsert_stored(conn, one)
    except Exception:  # busy, or anything save_many reports record by record
        return False
    return True


#: A result over this many bytes or items is stored by the writer's thread, not in the loop.
_LOOP_RESULT_LIMIT = 64 * 1024


def _large_result(result: Any) -> bool:
    """Whether storing ``result`` may take long (a large payload to pack and hash)."""
    if result is None:
        return False
    if isinstance(result, Mapping) and "payload" in result:
        result = result["payload"]
    try:
        return len(result) > _LOOP_RESULT_LIMIT
    except Exception:  # a scalar, anything unsized, a __len__ that fails
        return False


def checkpoint(store: RecordStore) -> tuple[int, int] | None:
    """Checkpoint ``store``'s sqlite WAL (None for PostgreSQL): what the record writer's
    thread does after the loop's own commits, which never do it; the WAL's frames, and those
    copied into the database."""
    database = store._database  # this module's own class: its private parts
    return database.checkpoint() if isinstance(database, RecordDatabase) else None


def _raised(call: Callable[[Any], None], argument: Any) -> Exception | None:
    """What ``call(argument)`` raised, or None."""
    try:
        call(argument)
    except Exception as exc:
        return exc
    return None


def _check_status(record: AnalysisRecord) -> None:
    status = status_value(record.status)
    if status not in RUN_STATUSES:
        raise ValueError(
            f"run {record.id} has unknown status {status!r}; "
            f"expected one of {', '.join(sorted(RUN_STATUSES))}"
        )
