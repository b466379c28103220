"""SocketCommunicator: a Unix-socket server in a private 0700 directory, one persistent
connection per task process (MPI ranks, helpers), refused to other users (SO_PEERCRED).

This is the listener of one run, made by hand (``SocketCommunicator(directory=...)``); an
executor's runs asking for ``"socket"`` share one listener instead
(:mod:`lute_async.communicators.shared_socket`)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

from lute_async.communicators.listener import MAX_PENDING_HELLOS, ListeningCommunicator
from lute_async.errors import LaunchError
from lute_async.wire import ENV_SOCKET

#: Longest path an AF_UNIX address holds on Linux (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107
#: Mode of a listening socket's file: only its owner may connect.
SOCKET_MODE = 0o600


def private_temp_dir(base: str | os.PathLike[str] | None) -> Path:
    """A new 0700 directory under ``base`` (default: the temporary directory)."""
    return Path(tempfile.mkdtemp(prefix="lute-async-", dir=base))


def check_length(path: Path) -> None:
    """A LaunchError when ``path`` is too long for an AF_UNIX address."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise LaunchError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; "
            "set TMPDIR or SocketCommunicator(directory=...) to a shorter directory"
        )


def bind_unix(path: Path) -> socket.socket:
    """A Unix socket bound at ``path``, its file mode 0600 (not listening yet)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, SOCKET_MODE)
    except OSError:
        sock.close()
        raise
    return sock


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process that connected ``conn`` (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def uid_refusal(pid: int, uid: int) -> str | None:
    """Why a connection from ``uid`` (process ``pid``) is refused: another user's; None for
    this one's."""
    if uid != os.getuid():
        return f"connection from uid {uid} (pid {pid}) refused: only uid {os.getuid()} may report"
    return None


class SocketCommunicator(ListeningCommunicator):
    """Unix-socket server for one run, in a directory of its own (removed on close, whatever
    happened)."""

    kind = "socket"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_pending_hellos: int = MAX_PENDING_HELLOS,
    ) -> None:
        super().__init__(max_pending_hellos=max_pending_hellos)
        self.directory = directory
        self.path: Path | None = None
        self._dir: Path | None = None

    def _bind(self) -> socket.socket:
        private = private_temp_dir(self.directory)
        path = private / "s"
        try:
            check_length(path)
            sock = bind_unix(path)
        except (LaunchError, OSError):
            shutil.rmtree(private, ignore_errors=True)
            raise
        self._dir, self.path = private, path
        return sock

    def _child_env(self) -> dict[str, str]:
        assert self.path is not None
        return {ENV_SOCKET: os.fspath(self.path)}

    def _admit(self, conn: socket.socket) -> str | None:
        return uid_refusal(*peer_credentials(conn))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": os.fspath(self.path) if self.path else None}

    async def aclose(self) -> None:
        await super().aclose()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
