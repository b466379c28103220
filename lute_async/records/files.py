"""The records database's files on disk: a private directory and 0600 files, before sqlite
opens them.

Records hold commands, parameters and results, so only their user may read them, and only
their user may write them (a planted or swapped database would feed forged results into later
runs' templates).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from lute_async.errors import RecordStoreError
from lute_async.logs import get_logger
from lute_async.private_paths import (
    PRIVATE_FILE_MODE,
    NotPrivateError,
    check_file_parent,
    check_private_file,
    ensure_private_dir,
)

__all__ = ["SQLITE_SIDE_SUFFIXES", "secure_database_files"]

SQLITE_SIDE_SUFFIXES: Final = ("-wal", "-shm", "-journal")
"""The files sqlite keeps beside a database (created with the main file's mode)."""


def secure_database_files(path: Path) -> None:
    """Make the database at *path* private before sqlite opens it, or refuse it.

    * Its directory, when missing, is created mode 0700 (parents too); an existing one must be
      the user's own and writable by no one else (0755 is fine), or a sticky shared directory
      such as ``/tmp`` (:func:`~lute_async.private_paths.check_file_parent`), else
      RecordStoreError.
    * A missing database file is created empty, mode 0600 whatever the umask, so that sqlite
      creates ``-wal`` and ``-shm`` 0600 too (it gives them the main file's mode).
    * An existing database file (or ``-wal``, ``-shm``, ``-journal``) must be a regular file of
      the user that no one else may write to, else RecordStoreError naming path, owner and
      mode. One the others may only read (0644, made by an older version) is tightened to 0600
      with a ``records_file_mode_tightened`` warning: refusing it would hide nothing, and the
      user's own history keeps opening. When it cannot be tightened (a read-only file system)
      a ``records_file_mode_not_tightened`` warning says so and the database still opens.
    """
    directory = path.parent.resolve()  # a symlinked directory is checked where it points
    try:
        if directory.exists():
            check_file_parent(directory)
        else:
            ensure_private_dir(directory, shared_read=True)
    except NotPrivateError as exc:
        raise RecordStoreError(
            f"refusing records database {path}: its directory {exc}; "
            "use a directory of your own (LUTE_ASYNC_DB or Executor(db=...))"
        ) from exc
    except OSError as exc:
        raise RecordStoreError(
            f"cannot create the directory of records database {path}: {exc}; "
            "check the path and its permissions, or set LUTE_ASYNC_DB"
        ) from exc
    real = directory / path.name
    _create_if_missing(real)
    for file in (real, *(real.with_name(real.name + s) for s in SQLITE_SIDE_SUFFIXES)):
        _check_database_file(path, file)


def _create_if_missing(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    except OSError:
        return  # a read-only directory, say: sqlite reports it with its own words
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def _check_database_file(db: Path, file: Path) -> None:
    try:
        info = check_private_file(file, follow_symlinks=True)
    except FileNotFoundError:
        return
    except NotPrivateError as exc:
        raise RecordStoreError(f"refusing records database {db}: {exc}") from exc
    except OSError as exc:
        raise RecordStoreError(f"cannot open records database {db}: {exc}") from exc
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        try:
            os.chmod(file, PRIVATE_FILE_MODE)
        except OSError as exc:
            get_logger().warning(
                "records_file_mode_not_tightened",
                path=str(file),
                mode=f"{mode:04o}",
                error=str(exc),
            )
        else:
            get_logger().warning(
                "records_file_mode_tightened", path=str(file), mode=f"{mode:04o}", now="0600"
            )
