"""The journal: records the database could not take, spilled to JSON-lines files for replay."""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Final

from lute_async.errors import RecordStoreError
from lute_async.logs import get_logger
from lute_async.records.codec import (
    DEFAULT_MAX_RESULT_BYTES,
    StoredRecord,
    check_storable,
    document_json,
    record_from_stored,
    stored_record,
)
from lute_async.records.model import AnalysisRecord

__all__ = ["JOURNAL_SUFFIX", "RecordJournal", "spill_record"]

JOURNAL_SUFFIX: Final = ".journal.jsonl"
"""Records that could not be written are spilled to ``<db>`` + this suffix (see RecordJournal)."""

_JOURNAL_RESULT_KEY: Final = "result_msgpack"
"""A journal line's result: base64 of its msgpack encoding, so bytes survive JSON exactly."""


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
        return self.append_stored(record.id, stored_record(record, self.max_result_bytes))

    def append_stored(self, run_id: str, stored: StoredRecord) -> Path:
        """Append a record already in its stored form; return the journal that took it."""
        document = stored.document
        if stored.result is not None:
            document = {**document, _JOURNAL_RESULT_KEY: base64.b64encode(stored.result).decode()}
        line = (document_json(document) + "\n").encode()
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
                if isinstance(document, dict):
                    check_storable(document)  # a line no row can take must not block replay
                    if _JOURNAL_RESULT_KEY in document:
                        packed = base64.b64decode(document.pop(_JOURNAL_RESULT_KEY), validate=True)
                records.append(record_from_stored(document, packed))
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


def spill_record(db_path: str | os.PathLike[str], record: AnalysisRecord) -> str:
    """Spill *record* to the journal of a database that cannot even be opened; say where."""
    try:
        where = RecordJournal(db_path).append(record)
    except RecordStoreError as exc:
        return str(exc)
    return f"run {record.id} was spilled to the journal {where}, replayed when the database opens"
