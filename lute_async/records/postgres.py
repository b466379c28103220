"""The PostgreSQL records database: connecting, transactions and reading (rows: see rows).

A synchronous psycopg 3 connection, like sqlite's: :class:`~lute_async.records.store.RecordStore`
is a synchronous API that the CLI, templates and the executor's worker threads all call (the
executor from one thread at a time, through its database limiter), so the event loop never
waits on the server; an ``AsyncConnection`` would need a second, async store API beside it.
The connection is in autocommit mode and every write opens its own transaction, as on sqlite.
A connection the server dropped is opened again on the next call; until then every call fails
with :class:`RecordStoreError` (and a save spills to the journal).

The URL is given to libpq as is, so its conventions hold: ``?host=/dir`` for a Unix socket,
``?service=name`` for the service file, ``PGPASSFILE`` or ``~/.pgpass`` for the password.
No message or log shows the password (see :func:`~lute_async.records.location.describe_db`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from lute_async.errors import RecordStoreError
from lute_async.records.dialect import POSTGRES
from lute_async.records.location import describe_db
from lute_async.records.rows import RecordRows
from lute_async.records.schema import migrate
from lute_async.redaction import redact_url_credentials

if TYPE_CHECKING:
    import psycopg

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "PostgresDatabase", "import_psycopg"]

DEFAULT_CONNECT_TIMEOUT: Final = 10
"""Seconds a connection attempt waits for the server (unless the URL sets connect_timeout)."""

_IDLE: Final = 0
"""libpq's PQTRANS_IDLE: no transaction open on the connection."""

_BAD_OPTION: Final = ("connection is bad: invalid", "connection is bad: definition of service")
"""How libpq begins the message of a URL option it refuses, or a service it does not know."""

_LOGIN_FAILED: Final = ("password authentication failed", "no password supplied", "pg_hba.conf")


def import_psycopg(where: str) -> ModuleType:
    """The psycopg module, or a RecordStoreError saying how to install it."""
    try:
        import psycopg
    except ImportError as exc:
        raise RecordStoreError(
            f"records database {where} is a PostgreSQL URL, which needs psycopg 3: "
            "pip install 'lute-async[postgres]'"
        ) from exc
    return psycopg


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """sqlite's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection that takes the records code's ``?`` placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Any = None, /) -> psycopg.Cursor[Any]:
        if parameters is None:
            return self._conn.execute(sql)
        return self._conn.execute(_placeholders(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Any, /) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), list(parameters))


class PostgresDatabase(RecordRows):
    """One psycopg connection to the records database at ``url``, migrated to the schema.

    Writes go through :meth:`write` (the thread lock and one transaction), reads through
    :meth:`read`; psycopg errors become :class:`RecordStoreError` naming the database (its
    password masked).
    """

    def __init__(self, url: str, *, max_result_bytes: int) -> None:
        self.where = describe_db(url)
        self.dialect = POSTGRES
        self.max_result_bytes = max_result_bytes
        self._url = url
        self._psycopg = import_psycopg(self.where)
        self._lock = threading.Lock()
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = self._connect()
        try:
            conn = _Connection(self._conn)
            try:
                migrate(conn, POSTGRES, self.where, self._psycopg.Error)
            except self._psycopg.Error as exc:
                raise self._error("open", exc) from exc
        except BaseException:
            self.close()
            raise

    @property
    def is_open(self) -> bool:
        """Whether the store is still open (the connection may be re-made on the next call)."""
        return not self._closed

    def close(self) -> None:
        """Close the connection; further calls raise :class:`RecordStoreError`."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def _connect(self) -> psycopg.Connection[Any]:
        pg = self._psycopg
        try:
            given = pg.conninfo.conninfo_to_dict(self._url)
            extra: dict[str, Any] = {"application_name": "lute-async"}
            if "connect_timeout" not in given:
                extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
            conn: psycopg.Connection[Any] = pg.connect(self._url, autocommit=True, **extra)
        except pg.Error as exc:
            raise self._connect_error(exc) from exc
        return conn

    def _connect_error(self, exc: Exception) -> RecordStoreError:
        text = self._clean(exc)
        if isinstance(exc, self._psycopg.ProgrammingError) or text.startswith(_BAD_OPTION):
            return RecordStoreError(
                f"records database {self.where} is not a usable URL: {text}; see libpq's "
                "connection URIs and parameters"
            )
        if any(words in text for words in _LOGIN_FAILED):
            return RecordStoreError(
                f"PostgreSQL refused the login to records database {self.where}: {text}; "
                "check the user and password (in the URL, PGPASSFILE or the service file)"
            )
        if "does not exist" in text:
            return RecordStoreError(f"records database {self.where} does not exist: {text}")
        return RecordStoreError(
            f"cannot reach the PostgreSQL server of records database {self.where}: {text}; "
            "is it running, and are the host and port right?"
        )

    def _clean(self, exc: Exception) -> str:
        """psycopg's message, one line (not a query's LINE and caret), without credentials."""
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        if lines and lines[0].startswith("connection failed"):  # libpq's lines belong together
            text = " ".join(" ".join(lines).split())
        else:
            text = " ".join((lines or [""])[0].split())
        try:
            password = self._psycopg.conninfo.conninfo_to_dict(self._url).get("password")
        except self._psycopg.Error:  # a URL libpq cannot parse: its credentials are masked below
            password = None
        if password:
            text = text.replace(str(password), "***")
        return redact_url_credentials(text)

    def _error(self, what: str, exc: Exception) -> RecordStoreError:
        if isinstance(exc, self._psycopg.OperationalError) and self._broken():
            return RecordStoreError(
                f"cannot {what} in records database {self.where}: the server connection was "
                f"lost ({self._clean(exc)})"
            )
        text = self._clean(exc)
        return RecordStoreError(f"cannot {what} in records database {self.where}: {text}")

    def _broken(self) -> bool:
        return self._conn is None or self._conn.closed or self._conn.broken

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, made again when the server dropped it; RecordStoreError once
        the store is closed or the server cannot be reached."""
        if self._closed:
            raise RecordStoreError(f"records database {self.where} is closed")
        if self._broken():
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._conn = self._connect()
        assert self._conn is not None
        return self._conn

    @contextlib.contextmanager
    def write(self, what: str) -> Iterator[_Connection]:
        """Hold the thread lock and one transaction; commit, or roll back on error."""
        pg = self._psycopg
        with self._lock:
            conn = self._connection()
            # One pipeline: the transaction's statements go out together, not one round trip
            # each (a read inside it still waits for its own answer). What fails inside is kept
            # until the pipeline has synced, then the transaction is rolled back.
            failure: BaseException | None = None
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    try:
                        yield _Connection(conn)
                        conn.execute("COMMIT")
                    except BaseException as exc:
                        failure = exc
            except pg.Error as exc:  # a statement failed: its error surfaces at the sync
                failure = failure or exc
            if failure is None:
                return
            if not conn.broken and conn.info.transaction_status != _IDLE:
                with contextlib.suppress(pg.Error):
                    conn.execute("ROLLBACK")
            if isinstance(failure, pg.Error):
                raise self._error(what, failure) from failure
            raise failure

    def read(self, sql: str, args: Iterable[Any], what: str) -> list[Any]:
        """All rows of one query, under the thread lock."""
        with self._lock:
            conn = self._connection()
            try:
                rows: list[Any] = _Connection(conn).execute(sql, tuple(args)).fetchall()
            except self._psycopg.Error as exc:
                raise self._error(what, exc) from exc
            return rows
