"""The few places where sqlite's SQL and PostgreSQL's differ, as one small table.

The schema, its migrations and every query are written once, with ``?`` placeholders and
``{term}`` fields; :meth:`Dialect.sql` fills the terms in for a backend. A PostgreSQL
connection turns ``?`` into psycopg's ``%s`` itself (see :mod:`~lute_async.records.postgres`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["POSTGRES", "SQLITE", "Dialect"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one backend spells what the other spells differently."""

    name: str
    """``sqlite`` or ``postgresql``."""
    blob: str
    """The binary column type."""
    real: str
    """The double-precision float column type."""
    without_rowid: str
    """A table option that drops sqlite's hidden rowid (nothing on PostgreSQL)."""
    seq_column: str
    """The column definition that numbers rows in insertion order (sqlite has ``rowid``)."""
    seq: str
    """The name of that insertion-order number in queries."""
    same: str
    """The NULL-safe equality operator (``a IS b`` in sqlite)."""
    now: str
    """The database's clock as epoch seconds (the lease clock: one clock for every host)."""
    begin_write: str
    """Opens a transaction that writes (sqlite takes its write lock up front)."""
    lock_schema: str
    """Serialises migrations of one database inside that transaction (empty: the write lock
    of ``begin_write`` does)."""

    def sql(self, text: str) -> str:
        """*text* with its ``{term}`` fields filled in for this backend."""
        return text.format(
            blob=self.blob,
            real=self.real,
            without_rowid=self.without_rowid,
            seq_column=self.seq_column,
            seq=self.seq,
            same=self.same,
            now=self.now,
        )


SQLITE: Final = Dialect(
    name="sqlite",
    blob="BLOB",
    real="REAL",
    without_rowid="WITHOUT ROWID",
    seq_column="",
    seq="rowid",
    same="IS",
    now="((julianday('now') - 2440587.5) * 86400.0)",
    begin_write="BEGIN IMMEDIATE",
    lock_schema="",
)

POSTGRES: Final = Dialect(
    name="postgresql",
    blob="BYTEA",
    real="DOUBLE PRECISION",
    without_rowid="",
    seq_column=",\n            seq BIGSERIAL NOT NULL",
    seq="seq",
    same="IS NOT DISTINCT FROM",
    now="extract(epoch FROM clock_timestamp())::double precision",
    begin_write="BEGIN",
    # Any fixed key: two executors opening a fresh database at once migrate it one by one.
    lock_schema="SELECT pg_advisory_xact_lock(7317152317)",
)
