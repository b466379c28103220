"""Run records: what ran, how and how it ended, in a sqlite database that outlives the executor.

:class:`AnalysisRecord` is one run; :class:`RecordStore` writes it at submit and at every status
change and finds it again. The store is plain synchronous :mod:`sqlite3` in WAL mode, safe to
share between threads (async callers use a worker thread) and between processes on one host.
Each row keeps the record as a JSON document plus a few indexed columns to query on; the result
is kept apart as msgpack, so a ``bytes`` payload stays bytes (JSON would escape and inflate it).
A result larger than ``max_result_bytes`` is recorded as a summary (type, size, sha256) instead.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import errno
import fcntl
import hashlib
import itertools
import json
import os
import socket
import sqlite3
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple, Self

import msgpack

from lute_async.errors import RecordNotFound, RecordStoreError
from lute_async.logs import get_logger
from lute_async.messages import TaskStatus
from lute_async.redaction import redact_env

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_MAX_RESULT_BYTES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "AnalysisRecord",
    "RecordJournal",
    "RecordStore",
    "default_db_path",
    "pid_is_alive",
    "spill_record",
]


RUN_STATUSES: Final = frozenset(status.value for status in TaskStatus)
"""Every status a run can have (the values of ``TaskStatus``)."""

TERMINAL_STATUSES: Final = frozenset(s.value for s in TaskStatus if s.is_terminal)
"""Statuses a run never leaves."""

ACTIVE_STATUSES: Final = frozenset({"PENDING", "QUEUED", "RUNNING", "STOPPED"})
"""Statuses that need a live executor watching the run; see :meth:`RecordStore.mark_lost`."""

DEFAULT_BUSY_TIMEOUT: Final = 30.0
"""Seconds a write waits for another process's write lock before failing."""

JOURNAL_SUFFIX: Final = ".journal.jsonl"
"""Records that could not be written are spilled to ``<db>`` + this suffix (see RecordJournal)."""

DEFAULT_MAX_RESULT_BYTES: Final = 64 * 1024 * 1024
"""Results whose msgpack encoding is larger are recorded as a summary (see RecordStore)."""

_JOURNAL_RESULT_KEY: Final = "result_msgpack"
"""A journal line's result: base64 of its msgpack encoding, so bytes survive JSON exactly."""

_STATUS_RANK: Final = {"PENDING": 0, "QUEUED": 1, "RUNNING": 2, "STOPPED": 2}
"""How far along a run is; terminal statuses rank 3. A journal never moves a run backwards."""


def default_db_path() -> Path:
    """Return where runs are recorded by default: ``$LUTE_ASYNC_DB`` or the user data dir."""
    configured = os.environ.get("LUTE_ASYNC_DB")
    if configured:
        return Path(configured).expanduser()
    import platformdirs  # imported here: only needed when no database path was given

    return platformdirs.user_data_path("lute-async") / "runs.db"


def _new_run_id() -> str:
    return uuid.uuid4().hex


def _to_jsonable(value: Any, keep_bytes: bool = False) -> Any:
    """Convert *value* to plain JSON types: enums, paths, tuples, sets, bytes, numpy values...

    With *keep_bytes*, bytes-like values become ``bytes`` instead of text (for msgpack).
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return _to_jsonable(value.value, keep_bytes)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Mapping):
        return {
            (key if isinstance(key, str) else str(_to_jsonable(key))): _to_jsonable(
                item, keep_bytes
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_to_jsonable(item, keep_bytes) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((_to_jsonable(item, keep_bytes) for item in value), key=repr)
    if isinstance(value, bytes | bytearray | memoryview):
        if keep_bytes:
            return bytes(value)  # no copy for bytes itself
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_jsonable(dataclasses.asdict(value), keep_bytes)
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return _to_jsonable(tolist(), keep_bytes)
    return repr(value)


def _status_str(status: Any) -> str:
    """Turn a status given as a string or a ``TaskStatus`` enum member into its plain name."""
    if isinstance(status, enum.Enum):
        status = status.value
    return str.__str__(status) if isinstance(status, str) else str(status)


@dataclass(slots=True, kw_only=True)
class AnalysisRecord:
    """One run, as recorded: its definition, where and how it ran, and how it ended.

    ``env`` must already be redacted by whoever builds the record (see
    :func:`lute_async.redaction.redact_env`); :meth:`RecordStore.save` redacts it again anyway.
    """

    name: str
    id: str = field(default_factory=_new_run_id)
    command: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    communicators: list[dict[str, Any]] = field(default_factory=list)
    launcher: dict[str, Any] = field(default_factory=dict)
    status: str = "PENDING"
    result: dict[str, Any] | None = None
    """``{"payload": ..., "summary": ...}`` once the task reported a result."""
    exit_code: int | None = None
    signal: int | None = None
    error: dict[str, Any] | None = None
    """``{"type": ..., "message": ..., "traceback": ...}`` when the run failed."""
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    host: str = field(default_factory=socket.gethostname)
    """Host the task ran on (the first node for multi-node runs)."""
    pid: int | None = None
    """The task's pid (rank 0, or the launcher process for MPI and SLURM)."""
    executor_pid: int = field(default_factory=os.getpid)
    executor_host: str = field(default_factory=socket.gethostname)
    slurm_job_id: str | None = None
    ranks: int | None = None
    hook_errors: list[dict[str, Any]] = field(default_factory=list)
    """One ``{"event", "hook", "type", "message", "traceback"}`` per hook that raised."""
    tags: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    """Resource usage at exit (cpu times, max rss...)."""
    verdict: dict[str, Any] | None = None
    """``{"kind": ..., "detail": ...}``: why the run ended the way it did."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Launcher-specific facts: slurm_state, node_list, batch_script, launch_command..."""
    cwd: str | None = None

    def __post_init__(self) -> None:
        self.status = _status_str(self.status)

    @property
    def is_terminal(self) -> bool:
        """Whether the run has ended for good (COMPLETED, FAILED, CANCELLED, TIMEDOUT, LOST)."""
        return self.status in TERMINAL_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None until the run has both started and ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a new dict of plain JSON types (a deep copy)."""
        document: dict[str, Any] = {
            f.name: _to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
        }
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build a record from :meth:`to_dict` output, ignoring keys this version doesn't know.

        Unknown keys (written by a newer version) are dropped and missing ones take their
        defaults, so rows written by older and newer versions both load.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values.setdefault("name", "")
        return cls(**values)


# --- schema -------------------------------------------------------------------------------------


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


_MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _migrate_to_v1,
    _migrate_to_v2,
)
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1``. Only ever append."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""The ``PRAGMA user_version`` this code writes and understands."""


# --- liveness -----------------------------------------------------------------------------------


def pid_is_alive(pid: int) -> bool:
    """Tell whether process *pid* exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False  # os.kill(0 or -n) would address process groups, not one process
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell: never declare a run lost on a guess
    if sys.platform == "linux":
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        # The state letter follows the command name, which is in parentheses and may hold any
        # character, so look after the last ")".
        return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"
    return True


def _local_pid_is_alive(host: str, pid: int) -> bool:
    return pid_is_alive(pid)


def spill_record(db_path: str | os.PathLike[str], record: AnalysisRecord) -> str:
    """Spill *record* to the journal of a database that cannot even be opened; say where."""
    try:
        where = RecordJournal(db_path).append(record)
    except RecordStoreError as exc:
        return str(exc)
    return f"run {record.id} was spilled to the journal {where}, replayed when the database opens"


# --- stored form --------------------------------------------------------------------------------


class _StoredRecord(NamedTuple):
    """A record as the database and the journal keep it."""

    document: dict[str, Any]
    """Every field as JSON types, env redacted; ``result`` is None when it is in *result*."""
    result: bytes | None
    """The result as msgpack (bytes stay bytes), or None when there is none or it is in
    *document* (it holds an int beyond msgpack's 64 bits)."""


_DOCUMENT_FIELDS: Final = tuple(
    f.name for f in dataclasses.fields(AnalysisRecord) if f.name != "result"
)


def _stored_record(record: AnalysisRecord, max_result_bytes: int) -> _StoredRecord:
    document = {name: _to_jsonable(getattr(record, name)) for name in _DOCUMENT_FIELDS}
    document["env"] = redact_env({str(k): str(v) for k, v in document["env"].items()})
    packed = _pack_result(record.id, record.result, max_result_bytes)
    document["result"] = _to_jsonable(record.result) if packed is None else None
    return _StoredRecord(document, packed)


def _pack_result(run_id: str, result: Any, max_result_bytes: int) -> bytes | None:
    """*result* as msgpack, or a summary of it when the encoding exceeds *max_result_bytes*.

    None when there is no result or it cannot be msgpack (an int beyond 64 bits): the JSON
    document keeps it then, as before results had a column of their own.
    """
    if result is None:
        return None
    plain = _to_jsonable(result, keep_bytes=True)
    payload, plain_payload, summary = result, plain, None
    if isinstance(result, Mapping) and "payload" in result:
        payload, plain_payload, summary = result["payload"], plain["payload"], result.get("summary")
    # A payload that alone is too large (the usual case) is not packed just to be measured.
    if not (isinstance(plain_payload, bytes | str) and len(plain_payload) > max_result_bytes):
        try:
            packed: bytes = msgpack.packb(plain, use_bin_type=True)
        except OverflowError:
            return None
        except ValueError:  # a bytes or str value beyond msgpack's 4 GiB
            pass
        else:
            if len(packed) <= max_result_bytes:
                return packed
    omitted = _describe_payload(payload, plain_payload)
    omitted["reason"] = (
        f"the result's msgpack encoding is larger than max_result_bytes ({max_result_bytes}); "
        "only this description of its payload was recorded"
    )
    get_logger().warning(
        "result_not_recorded",
        run_id=run_id,
        payload_type=omitted["type"],
        size=omitted["size"],
        sha256=omitted["sha256"],
        max_result_bytes=max_result_bytes,
    )
    brief = summary[:1024] if isinstance(summary, str) else None
    described: bytes = msgpack.packb({"payload": None, "summary": brief, "omitted": omitted})
    return described


def _describe_payload(payload: Any, plain: Any) -> dict[str, Any]:
    """Type, size and sha256 of a payload too large to record, so a copy can be checked.

    Size and digest are of the bytes themselves, of a string's UTF-8, or else of the
    payload's msgpack encoding (``digest_of`` says which).
    """
    if isinstance(plain, bytes):
        data, digest_of = plain, "bytes"
    elif isinstance(plain, str):
        data, digest_of = plain.encode("utf-8", errors="surrogatepass"), "utf-8"
    else:
        try:
            data, digest_of = msgpack.packb(plain, use_bin_type=True), "msgpack"
        except (OverflowError, ValueError):
            data, digest_of = None, None
    return {
        "type": type(payload).__name__,
        "size": None if data is None else len(data),
        "sha256": None if data is None else hashlib.sha256(data).hexdigest(),
        "digest_of": digest_of,
    }


def _record_from_stored(document: Any, packed: bytes | None) -> AnalysisRecord:
    """Rebuild a record from its stored form; ValueError or TypeError when it is damaged."""
    if not isinstance(document, dict):
        raise TypeError(f"expected a JSON object, got {type(document).__name__}")
    if packed is not None:
        document["result"] = msgpack.unpackb(packed, raw=False, strict_map_key=False)
    return AnalysisRecord.from_dict(document)


# --- queries ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a query wants: every given field must match. ``status`` is one status or
    several (any matches); ``since`` <= submitted_at < ``until`` (epoch seconds); a run
    matches ``tags`` when it has all of them."""

    name: str | None = None
    status: str | Iterable[str] | None = None
    since: float | None = None
    until: float | None = None
    tags: str | Iterable[str] | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The ``WHERE`` clause (empty when nothing filters) and its arguments."""
        clauses: list[str] = []
        args: list[Any] = []
        if self.name is not None:
            clauses.append("name = ?")
            args.append(self.name)
        if self.status is not None:
            statuses = [self.status] if isinstance(self.status, str) else list(self.status)
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(_status_str(s) for s in statuses)
        if self.since is not None:
            clauses.append("submitted_at >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("submitted_at < ?")
            args.append(self.until)
        if self.tags is not None:
            wanted = sorted({self.tags} if isinstance(self.tags, str) else set(self.tags))
            if wanted:
                clauses.append(
                    "id IN (SELECT run_id FROM run_tags WHERE tag IN "
                    f"({', '.join('?' * len(wanted))}) GROUP BY run_id HAVING COUNT(*) = ?)"
                )
                args.extend([*wanted, len(wanted)])
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


# --- journal ------------------------------------------------------------------------------------


def _status_rank(status: str) -> int:
    return _STATUS_RANK.get(status, 3)


class RecordJournal:
    """Records the database could not take (full disk, read-only file), kept as JSON lines.

    A record is appended to ``<db>.journal.jsonl`` beside the database or, when that cannot be
    written either, to a private (0700) fallback directory: ``fallback_dir``,
    ``$LUTE_ASYNC_JOURNAL_DIR``, or ``<tmp>/lute-async-journal-<uid>``. The next
    :class:`RecordStore` opened on the database replays both journals into it and removes them.
    Appends and replays lock the file, so several processes may share a journal. A result is
    kept as base64 of its msgpack encoding, so bytes come back as bytes; one larger than
    *max_result_bytes* is summarised as :class:`RecordStore` does.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        fallback_dir: str | os.PathLike[str] | None = None,
        *,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.db_path = Path(db_path)
        self.max_result_bytes = max_result_bytes
        self.primary = self.db_path.with_name(self.db_path.name + JOURNAL_SUFFIX)
        configured = fallback_dir or os.environ.get("LUTE_ASYNC_JOURNAL_DIR")
        directory = (
            Path(configured)
            if configured
            else Path(tempfile.gettempdir()) / f"lute-async-journal-{os.getuid()}"
        )
        key = hashlib.sha256(os.fsencode(os.path.abspath(self.db_path))).hexdigest()[:16]
        self.fallback = directory / f"{self.db_path.name}-{key}{JOURNAL_SUFFIX}"

    def append(self, record: AnalysisRecord) -> Path:
        """Spill *record* to the first journal that takes it and return that journal's path."""
        return self._append_stored(record.id, _stored_record(record, self.max_result_bytes))

    def _append_stored(self, run_id: str, stored: _StoredRecord) -> Path:
        document = stored.document
        if stored.result is not None:
            document = {**document, _JOURNAL_RESULT_KEY: base64.b64encode(stored.result).decode()}
        line = (json.dumps(document, separators=(",", ":")) + "\n").encode()
        failures: list[str] = []
        for path in (self.primary, self.fallback):
            try:
                if path is self.fallback:
                    self._private_dir(path.parent, create=True)
                self._append_line(path, line)
            except OSError as exc:
                failures.append(f"{path}: {exc.strerror or exc}")
                continue
            return path
        raise RecordStoreError(
            f"cannot spill run {run_id} to a journal either ({'; '.join(failures)}); "
            "free disk space or set LUTE_ASYNC_JOURNAL_DIR to a writable directory"
        )

    def pending(self) -> list[Path]:
        """Journal files waiting to be replayed (including ones a crashed replay left)."""
        found: list[Path] = []
        for path in (self.primary, self.fallback):
            if path is self.fallback and not self._private_dir(path.parent, create=False):
                continue
            with contextlib.suppress(OSError):
                found.extend(sorted(path.parent.glob(path.name + ".replay-*")))
            if path.exists():
                found.append(path)
        return found

    def take(self, path: Path) -> Path:
        """Move a journal aside for replay, so new spills start a fresh one meanwhile."""
        if ".replay-" in path.name:
            return path
        taken = path.with_name(f"{path.name}.replay-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(path, taken)
        return taken

    @staticmethod
    def read(path: Path) -> list[AnalysisRecord]:
        """The records in a journal file, in order; unreadable lines are logged and skipped."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # wait for an append in progress to finish
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
        finally:
            os.close(fd)
        records: list[AnalysisRecord] = []
        for number, raw in enumerate(data.splitlines(), start=1):
            try:
                document = json.loads(raw)
                packed = None
                if isinstance(document, dict) and _JOURNAL_RESULT_KEY in document:
                    packed = base64.b64decode(document.pop(_JOURNAL_RESULT_KEY), validate=True)
                records.append(_record_from_stored(document, packed))
            except (ValueError, TypeError) as exc:
                get_logger().error(
                    "journal_line_unreadable", path=str(path), line=number, error=str(exc)
                )
        return records

    @staticmethod
    def _append_line(path: Path, line: bytes) -> None:
        while True:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                info = os.fstat(fd)
                if info.st_nlink == 0:  # replayed and removed while we waited: open anew
                    continue
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    # Never leave half a line for the next append to run into.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, info.st_size)
                    raise
                return
            finally:
                os.close(fd)

    @staticmethod
    def _private_dir(path: Path, *, create: bool) -> bool:
        """Whether *path* is a directory only this user can use (a shared /tmp is hostile)."""
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            if create:
                raise OSError(errno.EPERM, f"not a private directory of uid {os.getuid()}")
            get_logger().error("journal_dir_not_private", path=str(path))
            return False
        return True


# --- store --------------------------------------------------------------------------------------


class RecordStore:
    """The sqlite database of run records, shared safely by threads and processes on one host.

    Open it with ``RecordStore(path)`` (or as a context manager). Opening creates the parent
    directory and the schema, migrates an older schema, and refuses a newer one or a file that
    is not sqlite. With ``mark_lost=True`` (the default) runs left active by an executor that
    has since died are marked LOST on open; their ids are in :attr:`lost_on_open`.

    A result whose msgpack encoding exceeds *max_result_bytes* is recorded as
    ``{"payload": None, "summary": ..., "omitted": {"type", "size", "sha256", ...}}`` with a
    ``result_not_recorded`` warning; the record object passed to :meth:`save` keeps its payload.
    Records are a history, not a data store: keep large outputs in files and record their paths.
    """

    path: Path
    """The database file."""
    lost_on_open: list[str]
    """Ids of the runs :meth:`mark_lost` marked LOST when the store was opened."""
    replayed_on_open: list[str]
    """Ids of the runs :meth:`replay_journal` wrote from the journal when the store was opened."""
    journal: RecordJournal | None
    """Where records the database cannot take are spilled (None for an in-memory database)."""
    max_result_bytes: int
    """The largest result (its msgpack encoding) recorded whole; larger ones are summarised."""

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
        self.path = Path(path)
        self.lost_on_open = []
        self.replayed_on_open = []
        self.max_result_bytes = max_result_bytes
        in_memory = str(self.path) == ":memory:"
        self.journal = (
            None
            if in_memory
            else RecordJournal(self.path, journal_dir, max_result_bytes=max_result_bytes)
        )
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._connect(busy_timeout)
        try:
            self._migrate()
            self.replayed_on_open = self.replay_journal()
            if mark_lost:
                self.lost_on_open = self.mark_lost()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, mark_lost: bool = True) -> Self:
        """Open the store at *path*, or at :func:`default_db_path` when *path* is None."""
        return cls(default_db_path() if path is None else path, mark_lost=mark_lost)

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
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
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    # --- opening ---------------------------------------------------------------------------

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        in_memory = str(self.path) == ":memory:"
        try:
            if not in_memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
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
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = OFF")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._open_error(exc) from exc
        if not in_memory and str(mode).lower() != "wal":
            get_logger().warning("records_wal_unavailable", path=str(self.path), journal_mode=mode)
        return conn

    def _open_error(self, exc: sqlite3.Error) -> RecordStoreError:
        if isinstance(exc, sqlite3.OperationalError):
            return RecordStoreError(f"cannot open records database {self.path}: {exc}")
        return RecordStoreError(
            f"{self.path} is not a lute-async records database (sqlite: {exc}); "
            "move it away or point LUTE_ASYNC_DB / Executor(db=...) at another file"
        )

    def _migrate(self) -> None:
        conn = self._connection()
        try:
            version = self._user_version(conn)
            if version == SCHEMA_VERSION:
                return
            self._refuse_newer(version)
            # Another process may be migrating the same fresh file right now: take the write
            # lock first, then look again at the version it may have left behind.
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._user_version(conn)
                self._refuse_newer(version)
                for target, migration in enumerate(_MIGRATIONS[version:], start=version + 1):
                    try:
                        migration(conn)
                    except sqlite3.Error as exc:
                        raise RecordStoreError(
                            f"cannot migrate records database {self.path} from schema "
                            f"v{target - 1} to v{target}: {exc}; is it another program's "
                            "database?"
                        ) from exc
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc

    @staticmethod
    def _user_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise RecordStoreError(
                f"records database {self.path} has schema v{version} but this lute-async "
                f"understands up to v{SCHEMA_VERSION}; upgrade lute-async or use another "
                "database file"
            )

    # --- plumbing --------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RecordStoreError(f"records database {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """Hold the thread lock and one IMMEDIATE transaction; commit, or roll back on error."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
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
                raise RecordStoreError(
                    f"cannot {what} in records database {self.path}: {exc}"
                ) from exc

    def _read(self, sql: str, args: Iterable[Any], what: str) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise RecordStoreError(
                    f"cannot {what} in records database {self.path}: {exc}"
                ) from exc

    def _decode(self, run_id: str, doc: str, result: bytes | None) -> AnalysisRecord:
        try:
            return _record_from_stored(json.loads(doc), result)
        except (ValueError, TypeError) as exc:
            raise RecordStoreError(
                f"run {run_id} in records database {self.path} is unreadable: {exc}"
            ) from exc

    def _upsert(self, conn: sqlite3.Connection, record: AnalysisRecord) -> None:
        self._upsert_stored(conn, _stored_record(record, self.max_result_bytes))

    @staticmethod
    def _upsert_stored(conn: sqlite3.Connection, stored: _StoredRecord) -> None:
        document = stored.document
        conn.execute(
            """
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
            """,
            (
                document["id"],
                document["name"],
                document["status"],
                document["submitted_at"],
                document["ended_at"],
                document["executor_pid"],
                document["executor_host"],
                json.dumps(document, separators=(",", ":")),
                stored.result,
            ),
        )
        conn.execute("DELETE FROM run_tags WHERE run_id = ?", (document["id"],))
        conn.executemany(
            "INSERT OR IGNORE INTO run_tags (run_id, tag) VALUES (?, ?)",
            [(document["id"], str(tag)) for tag in document["tags"]],
        )

    # --- public operations -----------------------------------------------------------------

    def save(self, record: AnalysisRecord) -> None:
        """Insert or replace *record* (tags included) in one transaction, env redacted again.

        When the database cannot take it (full disk, read-only file), the record is spilled to
        the :attr:`journal` and :class:`RecordStoreError` still raises, saying where it went.
        A result larger than :attr:`max_result_bytes` is stored as a summary (see the class).
        """
        status = _status_str(record.status)
        if status not in RUN_STATUSES:
            raise ValueError(
                f"run {record.id} has unknown status {status!r}; "
                f"expected one of {', '.join(sorted(RUN_STATUSES))}"
            )
        stored = _stored_record(record, self.max_result_bytes)
        try:
            with self._write(f"save run {record.id}") as conn:
                self._upsert_stored(conn, stored)
        except RecordStoreError as exc:
            if self.journal is None:
                raise
            try:
                where = self.journal._append_stored(record.id, stored)
            except RecordStoreError as spill:
                raise RecordStoreError(f"{exc}; {spill}") from exc
            raise RecordStoreError(
                f"{exc}; run {record.id} was spilled to the journal {where}, "
                "replayed when the database is next opened"
            ) from exc

    def replay_journal(self) -> list[str]:
        """Write the records spilled to the journal into the database; return their ids.

        Runs on open. A journal entry never moves a run backwards (a finished run is not made
        RUNNING again). A journal that cannot be replayed now is kept for the next open.
        """
        journal = self.journal
        if journal is None:
            return []
        replayed: list[str] = []
        for path in journal.pending():
            try:
                taken = journal.take(path)
            except FileNotFoundError:
                continue  # another process opening the same database took it first
            except OSError as exc:
                get_logger().error(
                    "journal_replay_failed", path=str(path), db=str(self.path), error=str(exc)
                )
                continue
            try:
                records = journal.read(taken)
                with self._write(f"replay journal {taken}") as conn:
                    for record in records:
                        row = conn.execute(
                            "SELECT status FROM runs WHERE id = ?", (record.id,)
                        ).fetchone()
                        if row is not None and _status_rank(row[0]) > _status_rank(record.status):
                            continue
                        self._upsert(conn, record)
                        replayed.append(record.id)
                taken.unlink(missing_ok=True)
            except FileNotFoundError:
                continue  # a leftover another process is replaying right now
            except (OSError, RecordStoreError) as exc:
                get_logger().error(
                    "journal_replay_failed", path=str(path), db=str(self.path), error=str(exc)
                )
                continue
            get_logger().warning(
                "journal_replayed", path=str(path), db=str(self.path), runs=len(records)
            )
        return replayed

    def get(self, run_id: str) -> AnalysisRecord:
        """Return the run with id *run_id*, or raise :class:`RecordNotFound` (a KeyError)."""
        rows = self._read(
            "SELECT doc, result FROM runs WHERE id = ?", (run_id,), f"read run {run_id}"
        )
        if not rows:
            raise RecordNotFound(run_id, str(self.path))
        return self._decode(run_id, *rows[0])

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
        where, args = (runs or RunFilter()).where()
        direction, after = ("DESC", "<") if newest_first else ("ASC", ">")
        order = f" ORDER BY submitted_at {direction}, rowid {direction} LIMIT ?"
        last: tuple[float, int] | None = None
        while True:
            # Keyset paging: each page starts after the last row of the one before.
            clause, page_args = where, list(args)
            if last is not None:
                keyset = f"(submitted_at, rowid) {after} (?, ?)"
                clause = f"{where} AND {keyset}" if where else f" WHERE {keyset}"
                page_args.extend(last)
            rows = self._read(
                f"SELECT id, doc, result, submitted_at, rowid FROM runs{clause}{order}",
                [*page_args, page],
                "query runs",
            )
            for run_id, doc, result, _, _ in rows:
                yield self._decode(run_id, doc, result)
            if len(rows) < page:
                return
            last = (rows[-1][3], rows[-1][4])

    def latest(self, name: str, status: str | None = "COMPLETED") -> AnalysisRecord | None:
        """Return the last-submitted run called *name* with *status* (any if None), or None."""
        found = self.query(name=name, status=status, limit=1)
        return found[0] if found else None

    def find_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Return up to *limit* run ids starting with *prefix* (for short ids typed by users)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._read(
            "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
            (escaped + "%", limit),
            "look up run ids",
        )
        return [row[0] for row in rows]

    def mark_lost(self, is_alive: Callable[[str, int], bool] | None = None) -> list[str]:
        """Mark LOST the active runs whose executor on this host has died; return their ids.

        A run is active while PENDING, QUEUED, RUNNING or STOPPED. Only runs whose
        ``executor_host`` is this host are checked, with ``is_alive(host, executor_pid)``
        (default: the pid exists and is not a zombie). QUEUED SLURM runs are marked LOST too:
        nobody is watching the job any more, though SLURM may still run it (``scancel`` it
        by its ``slurm_job_id``). A recycled pid makes a dead executor look alive, so the
        check errs towards leaving a run alone.
        """
        check = is_alive or _local_pid_is_alive
        host = socket.gethostname()
        active = sorted(ACTIVE_STATUSES)
        placeholders = ", ".join("?" * len(active))
        candidates = self._read(
            f"SELECT id, executor_pid FROM runs WHERE executor_host = ? "
            f"AND status IN ({placeholders})",
            [host, *active],
            "look for lost runs",
        )
        dead = [(run_id, pid) for run_id, pid in candidates if pid is None or not check(host, pid)]
        if not dead:
            return []
        lost: list[str] = []
        now = time.time()
        with self._write("mark runs lost") as conn:
            for run_id, pid in dead:
                # Re-read under the write lock: the run may have ended meanwhile.
                row = conn.execute(
                    f"SELECT doc, result FROM runs WHERE id = ? AND executor_pid IS ? "
                    f"AND status IN ({placeholders})",
                    (run_id, pid, *active),
                ).fetchone()
                if row is None:
                    continue
                try:
                    record = self._decode(run_id, *row)
                except RecordStoreError as exc:
                    # One damaged row must not make the whole database unopenable.
                    get_logger().error(
                        "run_unreadable", run_id=run_id, path=str(self.path), error=str(exc)
                    )
                    continue
                record.error = {
                    "type": "ExecutorLost",
                    "message": f"executor process {pid} on {host} exited while the run was "
                    f"{record.status}",
                    "traceback": None,
                }
                record.status = "LOST"
                record.ended_at = now
                self._upsert(conn, record)
                lost.append(run_id)
        for run_id in lost:
            get_logger().warning("run_lost", run_id=run_id, path=str(self.path))
        return lost
