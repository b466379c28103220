"""What both records backends share: a run's row written and read back, in SQL written once.

:class:`RecordRows` is the base of the sqlite :class:`~lute_async.records.database.RecordDatabase`
and the :class:`~lute_async.records.postgres.PostgresDatabase`; each supplies its connection,
:meth:`write` (one transaction under the thread lock) and :meth:`read`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, Final

from lute_async.errors import RecordStoreError
from lute_async.records.codec import StoredRecord, document_json, record_from_stored, stored_record
from lute_async.records.dialect import Dialect
from lute_async.records.model import AnalysisRecord
from lute_async.records.schema import SqlConnection

__all__ = ["RecordRows"]

_UPSERT: Final = """
    INSERT INTO runs (id, name, status, submitted_at, ended_at,
                      executor_pid, executor_host, doc, result)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        name = excluded.name,
        status = excluded.status,
        submitted_at = excluded.submitted_at,
        ended_at = excluded.ended_at,
        executor_pid = excluded.executor_pid,
        executor_host = excluded.executor_host,
        doc = excluded.doc,
        result = excluded.result
"""


class RecordRows:
    """Rows of runs in one records database, whichever backend holds them."""

    dialect: Dialect
    """How this backend spells the SQL the two spell differently."""
    where: str
    """The database as messages name it (a path, or a URL without its password)."""
    max_result_bytes: int
    """The largest result (its msgpack encoding) written whole; larger ones are summarised."""

    @property
    def in_memory(self) -> bool:
        """Whether the database lives only as long as this connection (no journal then)."""
        return False

    @property
    def is_open(self) -> bool:
        """Whether the connection is still open."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection; further calls raise :class:`RecordStoreError`."""
        raise NotImplementedError

    def write(self, what: str) -> AbstractContextManager[SqlConnection]:
        """One write transaction under the thread lock: committed, or rolled back on error;
        a backend error becomes :class:`RecordStoreError` saying *what* failed."""
        raise NotImplementedError

    def read(self, sql: str, args: Iterable[Any], what: str) -> list[Any]:
        """All rows of one query (``?`` placeholders; its caller fills in dialect terms)."""
        raise NotImplementedError

    def decode(self, run_id: str, doc: str, result: bytes | None) -> AnalysisRecord:
        """The record in a row's ``doc`` and ``result`` columns; RecordStoreError if damaged."""
        try:
            return record_from_stored(json.loads(doc), None if result is None else bytes(result))
        except (ValueError, TypeError, RecursionError) as exc:
            raise RecordStoreError(
                f"run {run_id} in records database {self.where} is unreadable: {exc}"
            ) from exc

    def upsert(self, conn: SqlConnection, record: AnalysisRecord) -> None:
        """Insert or replace *record* and its tags, inside the transaction of *conn*."""
        self.upsert_stored(conn, stored_record(record, self.max_result_bytes))

    @staticmethod
    def upsert_stored(conn: SqlConnection, stored: StoredRecord) -> None:
        """Insert or replace a record already in its stored form, and its tags."""
        document = stored.document
        conn.execute(
            _UPSERT,
            (
                document["id"],
                document["name"],
                document["status"],
                document["submitted_at"],
                document["ended_at"],
                document["executor_pid"],
                document["executor_host"],
                document_json(document),
                stored.result,
            ),
        )
        conn.execute("DELETE FROM run_tags WHERE run_id = ?", (document["id"],))
        tags = sorted({str(tag) for tag in document["tags"]})
        if tags:
            conn.executemany(
                "INSERT INTO run_tags (run_id, tag) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(document["id"], tag) for tag in tags],
            )
