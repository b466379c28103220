"""Paths only the current user controls: private directories created or checked, files checked.

Another local user who owns a directory, or may write to it, can plant, swap or delete what is
in it; one who may read it reads what is written there. These checks decide whether a path is
the current user's own before lute-async writes records into it or trusts what it holds (the
records database, its journals, run directories). Each failed check raises
:class:`NotPrivateError` naming the path, its owner and its mode.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "NotPrivateError",
    "check_private_dir",
    "check_private_file",
    "describe_owner",
    "ensure_private_dir",
    "open_private_file",
]

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def describe_owner(uid: int) -> str:
    """``uid 65534 (nobody)``: a uid and, when the system knows it, its user name."""
    with contextlib.suppress(KeyError):
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    return f"uid {uid}"


class NotPrivateError(PermissionError):
    """A path is not a private directory or file of the current user (see the module)."""

    path: Path
    owner: int
    """The path's owner (its uid)."""
    mode: int
    """The path's permission bits (``st_mode & 0o7777``)."""

    def __init__(self, path: Path, info: os.stat_result, problem: str) -> None:
        self.path, self.owner, self.mode = path, info.st_uid, stat.S_IMODE(info.st_mode)
        super().__init__(
            f"{path} {problem} (owner {describe_owner(self.owner)}, mode {self.mode:04o}); "
            f"only {describe_owner(os.geteuid())} may control it"
        )

    def __str__(self) -> str:
        return str(self.args[0])


def _problem(info: os.stat_result, kind: str, forbidden_bits: int) -> str | None:
    if kind == "directory" and not stat.S_ISDIR(info.st_mode):
        return "is not a directory (a symlink is not followed)"
    if kind == "file" and not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a symlink is not followed)"
    if info.st_uid != os.geteuid():
        return "is owned by another user"
    if info.st_mode & forbidden_bits:
        return "is writable by others" if info.st_mode & 0o022 else "is readable by others"
    return None


def check_private_dir(path: str | os.PathLike[str], *, shared_read: bool = False) -> os.stat_result:
    """Check that *path* is a directory (not a symlink) of the current user that no one else
    may write to; return its stat.

    By default others may not even read or search it (mode 0700 or stricter); with
    *shared_read* group and other read/search are allowed (0755), never write.
    FileNotFoundError when it does not exist, :class:`NotPrivateError` when it is not private.
    """
    directory = Path(path)
    info = os.lstat(directory)
    problem = _problem(info, "directory", 0o022 if shared_read else 0o077)
    if problem is not None:
        raise NotPrivateError(directory, info, problem)
    return info


def ensure_private_dir(path: str | os.PathLike[str], *, shared_read: bool = False) -> Path:
    """Return *path* as a private directory of the current user, creating it if needed.

    Missing directories (parents included) are created with mode 0700 whatever the umask; an
    existing one must pass :func:`check_private_dir` (with *shared_read*), else
    :class:`NotPrivateError`. OSError when it cannot be created.
    """
    directory = Path(path)
    missing = [directory, *directory.parents]
    missing = missing[: next((i for i, p in enumerate(missing) if p.exists()), len(missing))]
    for component in reversed(missing):
        try:
            os.mkdir(component, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile (by us or anyone): checked below if it is the target
        os.chmod(component, PRIVATE_DIR_MODE)  # the umask may have taken bits off
    check_private_dir(directory, shared_read=shared_read)
    return directory


def _check_private_file_info(path: Path, info: os.stat_result) -> None:
    problem = _problem(info, "file", 0o022)
    if problem is not None:
        raise NotPrivateError(path, info, problem)


def check_file_parent(path: str | os.PathLike[str]) -> os.stat_result:
    """Check that directory *path* may hold a private file: one of the user's that no one
    else may write to (0755 is fine), or a sticky shared directory owned by the user or root
    (``/tmp``: there no one else can remove or rename the user's files, and a name squatted by
    another user fails the file's own check). Return its stat."""
    directory = Path(path)
    info = os.lstat(directory)
    sticky = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
    if sticky and info.st_uid in (0, os.geteuid()):
        return info
    return check_private_dir(directory, shared_read=True)


def check_private_file(
    path: str | os.PathLike[str], *, follow_symlinks: bool = False
) -> os.stat_result:
    """Check that *path* is a regular file of the current user that no one else may write to,
    in a directory that may hold one (:func:`check_file_parent`); return the file's stat.

    A symlink fails unless *follow_symlinks*, then the file it points to is checked.
    FileNotFoundError when it does not exist, :class:`NotPrivateError` when it is not private.
    """
    file = Path(path)
    check_file_parent(file.parent)
    info = os.stat(file) if follow_symlinks else os.lstat(file)
    _check_private_file_info(file, info)
    return info


def open_private_file(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> int:
    """Open *path* with *flags* only if it passes :func:`check_private_file`; return the fd.

    The check is made on the opened file itself (``O_NOFOLLOW``, then ``fstat``), so the file
    cannot be swapped between check and open. A FIFO or device never blocks the open. With
    ``O_CREAT`` a new file is made mode 0600 whatever the umask (and one of ours, 0644, too).
    """
    file = Path(path)
    check_file_parent(file.parent)
    try:
        fd = os.open(file, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, PRIVATE_FILE_MODE)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise NotPrivateError(file, os.lstat(file), "is a symlink") from exc
    try:
        info = os.fstat(fd)
        _check_private_file_info(file, info)
        if flags & os.O_CREAT and stat.S_IMODE(info.st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
