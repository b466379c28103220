"""The journal: records the database could not take, spilled to JSON-lines files for replay."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Final, NamedTuple

from lute_async.errors import RecordStoreError
from lute_async.logs import get_logger
from lute_async.private_paths import (
    NotPrivateError,
    check_private_dir,
    check_private_file,
    describe_owner,
    ensure_private_dir,
    open_private_file,
)
from lute_async.records.codec import (
    DEFAULT_MAX_RESULT_BYTES,
    StoredRecord,
    check_storable,
    document_json,
    record_from_stored,
    stored_record,
)
from lute_async.records.location import is_server_url, server_key
from lute_async.records.model import AnalysisRecord

__all__ = [
    "JOURNAL_SUFFIX",
    "JournalFile",
    "RecordJournal",
    "default_fallback_dir",
    "journal_for",
    "spill_record",
]

JOURNAL_SUFFIX: Final = ".journal.jsonl"
"""Records that could not be written are spilled to ``<db>`` + this suffix (see RecordJournal)."""

_JOURNAL_RESULT_KEY: Final = "result_msgpack"
"""A journal line's result: base64 of its msgpack encoding, so bytes survive JSON exactly."""

_REFUGES: dict[Path, Path] = {}
"""A fallback directory whose name another user took -> the fresh private one used instead."""


class JournalFile(NamedTuple):
    """What one journal file holds."""

    records: list[AnalysisRecord]
    """Its readable records, in order."""
    sha256: str
    """The digest of its whole content (a replay is remembered by it)."""


def default_fallback_dir() -> Path:
    """The fallback journal directory when none is configured.

    ``$XDG_RUNTIME_DIR/lute-async-journal`` when ``XDG_RUNTIME_DIR`` is set and is a private
    (0700) directory of the user, else ``<tmp>/lute-async-journal-<uid>``. The latter must be
    the user's own, mode 0700, when used: another user may have taken the name first, and then
    :class:`RecordJournal` spills to a fresh ``tempfile.mkdtemp`` directory beside it instead.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            check_private_dir(runtime)
        except OSError as exc:
            get_logger().warning("journal_runtime_dir_unusable", path=runtime, error=str(exc))
        else:
            return Path(runtime) / "lute-async-journal"
    return Path(tempfile.gettempdir()) / f"lute-async-journal-{os.geteuid()}"


def _warn_not_replayed(exc: NotPrivateError) -> None:
    get_logger().warning(
        "journal_not_replayed",
        path=str(exc.path),
        owner=describe_owner(exc.owner),
        mode=f"{exc.mode:04o}",
        reason=str(exc),
    )


class RecordJournal:
    """Records the database could not take (full disk, read-only file), kept as JSON lines.

    A record is appended to ``<db>.journal.jsonl`` beside the database or, when that cannot be
    written either, to a private (0700) fallback directory: ``fallback_dir``,
    ``$LUTE_ASYNC_JOURNAL_DIR``, or :func:`default_fallback_dir`. The next
    :class:`RecordStore` opened on the database replays both journals into it and removes them.
    Only journals that are the user's own are written to or replayed: regular files (never
    through a symlink) owned by the user, writable by no one else, in a directory with the same
    properties (see :mod:`lute_async.private_paths`); any other is left alone with one
    ``journal_not_replayed`` warning naming its path, owner and mode.
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
        server_key: str | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.max_result_bytes = max_result_bytes
        # The database's directory as its checks see it: a symlinked one is used where it points.
        # A database server (server_key: what names it) has no directory: the fallback only.
        self.primary: Path | None = (
            None
            if server_key is not None
            else self.db_path.parent.resolve() / (self.db_path.name + JOURNAL_SUFFIX)
        )
        configured = fallback_dir or os.environ.get("LUTE_ASYNC_JOURNAL_DIR")
        self._configured = bool(configured)
        directory = Path(configured) if configured else default_fallback_dir()
        named = server_key if server_key is not None else os.path.abspath(self.db_path)
        key = hashlib.sha256(os.fsencode(named)).hexdigest()[:16]
        self._fallback_name = f"{self.db_path.name}-{key}{JOURNAL_SUFFIX}"
        self.fallback = _REFUGES.get(directory, directory) / self._fallback_name
        self._fallback_home = directory

    def append(self, record: AnalysisRecord) -> Path:
        """Spill *record* to the first journal that takes it and return that journal's path."""
        return self.append_stored(record.id, stored_record(record, self.max_result_bytes))

    def append_stored(self, run_id: str, stored: StoredRecord) -> Path:
        """Append a record already in its stored form; return the journal that took it."""
        document = stored.document
        if stored.result is not None:
            document = {**document, _JOURNAL_RESULT_KEY: base64.b64encode(stored.result).decode()}
        line = (document_json(document) + "\n").encode()
        failures: list[str] = []
        for is_fallback in (False, True) if self.primary is not None else (True,):
            path = self.primary or self.fallback
            try:
                if is_fallback:
                    path = self._fallback_for_append()
                self._append_line(path, line)
            except OSError as exc:
                failures.append(f"{path}: {exc.strerror or exc}")
                continue
            return path
        raise RecordStoreError(
            f"cannot spill run {run_id} to a journal either ({'; '.join(failures)}); "
            "free disk space or set LUTE_ASYNC_JOURNAL_DIR to a writable directory"
        )

    def _fallback_for_append(self) -> Path:
        """The fallback journal, its directory made private; a taken default name is replaced
        by a fresh private directory (logged once per process)."""
        try:
            ensure_private_dir(self.fallback.parent)
        except NotPrivateError as exc:
            if self._configured or self.fallback.parent != self._fallback_home:
                raise
            refuge = Path(
                tempfile.mkdtemp(
                    prefix=f"{self._fallback_home.name}-", dir=self._fallback_home.parent
                )
            )
            _REFUGES[self._fallback_home] = refuge
            get_logger().warning(
                "journal_dir_taken",
                path=str(exc.path),
                owner=describe_owner(exc.owner),
                mode=f"{exc.mode:04o}",
                using=str(refuge),
            )
            self.fallback = refuge / self._fallback_name
        return self.fallback

    def pending(self) -> list[Path]:
        """Journal files waiting to be replayed (including ones a crashed replay left).

        Only the user's own journals count (see the class); every other one is logged once
        as ``journal_not_replayed`` and left where it is.
        """
        places = [] if self.primary is None else [(self.primary.parent, self.primary.name, True)]
        fallback_dirs = [self._fallback_home]
        if not self._configured:  # fresh directories used when the default name was taken
            with contextlib.suppress(OSError):
                home = self._fallback_home
                fallback_dirs.extend(sorted(home.parent.glob(f"{home.name}-*")))
        places.extend((directory, self._fallback_name, False) for directory in fallback_dirs)
        found: list[Path] = []
        for directory, name, shared_read in places:
            try:
                check_private_dir(directory, shared_read=shared_read)
            except FileNotFoundError:
                continue
            except NotPrivateError as exc:
                _warn_not_replayed(exc)
                continue
            candidates: list[Path] = []
            with contextlib.suppress(OSError):
                candidates.extend(sorted(directory.glob(name + ".replay-*")))
            candidates.append(directory / name)
            for path in candidates:
                try:
                    check_private_file(path)
                except NotPrivateError as exc:
                    _warn_not_replayed(exc)
                except OSError:
                    continue  # not there (the usual case), or gone meanwhile
                else:
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
    def read(path: Path) -> JournalFile:
        """The records in a journal file, in order, and its digest; unreadable lines are logged
        and skipped. :class:`~lute_async.private_paths.NotPrivateError` when the file is not
        the user's own (checked on the opened file)."""
        fd = open_private_file(path, os.O_RDONLY)
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
                if isinstance(document, dict):
                    check_storable(document)  # a line no row can take must not block replay
                    if _JOURNAL_RESULT_KEY in document:
                        packed = base64.b64decode(document.pop(_JOURNAL_RESULT_KEY), validate=True)
                records.append(record_from_stored(document, packed))
            except (ValueError, TypeError, RecursionError) as exc:
                get_logger().error(
                    "journal_line_unreadable", path=str(path), line=number, error=str(exc)
                )
        return JournalFile(records, hashlib.sha256(data).hexdigest())

    @staticmethod
    def _append_line(path: Path, line: bytes) -> None:
        while True:
            fd = open_private_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
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


def journal_for(
    db: str | os.PathLike[str],
    fallback_dir: str | os.PathLike[str] | None = None,
    *,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
) -> RecordJournal:
    """The journal of database *db*: beside a sqlite file, or (a server's URL) in the fallback
    directory only, named by the server and database, never by the password."""
    if is_server_url(db):
        return RecordJournal(
            "postgresql",
            fallback_dir,
            max_result_bytes=max_result_bytes,
            server_key=server_key(str(db)),
        )
    return RecordJournal(db, fallback_dir, max_result_bytes=max_result_bytes)


def spill_record(db_path: str | os.PathLike[str], record: AnalysisRecord) -> str:
    """Spill *record* to the journal of a database (a file or a URL) that cannot even be
    opened; say where."""
    try:
        where = journal_for(db_path).append(record)
    except RecordStoreError as exc:
        return str(exc)
    return f"run {record.id} was spilled to the journal {where}, replayed when the database opens"
