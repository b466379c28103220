"""SocketCommunicator: a Unix-socket server in a private 0700 directory, one persistent
connection per task process (MPI ranks, helpers), refused to other users (SO_PEERCRED).

An executor gives its runs one :class:`SocketHome`, a private directory made once, so a run
binds one socket file there instead of making and removing a directory of its own (a mkdir,
an rmdir and a tree walk, ~1 ms of every run)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import struct
import tempfile
import weakref
from pathlib import Path
from typing import Any

from lute_async.communicators.listener import MAX_PENDING_HELLOS, ListeningCommunicator
from lute_async.errors import LaunchError
from lute_async.wire import ENV_SOCKET

#: Longest path an AF_UNIX address holds on Linux (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


def _private_temp_dir(base: str | os.PathLike[str] | None) -> Path:
    """A new 0700 directory under ``base`` (default: the temporary directory)."""
    return Path(tempfile.mkdtemp(prefix="lute-async-", dir=base))


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise LaunchError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; "
            "set TMPDIR or SocketCommunicator(directory=...) to a shorter directory"
        )


class SocketHome:
    """One private (0700) directory for the sockets of many runs, made on first use and
    removed by :meth:`close` (or when the object is collected, or at exit)."""

    def __init__(self, base: str | os.PathLike[str] | None = None) -> None:
        self.base = base
        self._path: Path | None = None
        self._finalizer: weakref.finalize[..., SocketHome] | None = None

    def socket_path(self) -> Path:
        """A fresh, unguessable socket path in the directory."""
        if self._path is None:
            self._path = _private_temp_dir(self.base)
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._path, True)
        path = self._path / secrets.token_hex(8)
        _check_length(path)
        return path

    def close(self) -> None:
        """Remove the directory and any socket left in it."""
        if self._finalizer is not None:
            self._finalizer()
        self._path = self._finalizer = None


class SocketCommunicator(ListeningCommunicator):
    """Unix-socket server for one run, in a directory of its own (removed on close, whatever
    happened) or, given a ``home``, as one socket file in that shared private directory
    (removed on close)."""

    kind = "socket"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        home: SocketHome | None = None,
        max_pending_hellos: int = MAX_PENDING_HELLOS,
    ) -> None:
        super().__init__(max_pending_hellos=max_pending_hellos)
        self.directory = directory
        self.home = home
        self.path: Path | None = None
        self._dir: Path | None = None

    def _bind(self) -> socket.socket:
        if self.home is not None and self.directory is None:
            path = self.home.socket_path()
        else:
            private = _private_temp_dir(self.directory)
            path = private / "s"
            try:
                _check_length(path)
            except LaunchError:
                shutil.rmtree(private, ignore_errors=True)
                raise
            self._dir = private
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
            os.chmod(path, 0o600)
        except OSError:
            sock.close()
            raise
        return sock

    def _child_env(self) -> dict[str, str]:
        assert self.path is not None
        return {ENV_SOCKET: os.fspath(self.path)}

    def _admit(self, conn: socket.socket) -> str | None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            return (
                f"connection from uid {uid} (pid {pid}) refused: only uid {os.getuid()} may report"
            )
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": os.fspath(self.path) if self.path else None}

    async def aclose(self) -> None:
        await super().aclose()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        elif self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
