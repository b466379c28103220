"""SocketCommunicator: a Unix-socket server in a private 0700 directory, one persistent
connection per task process (MPI ranks, helpers), refused to other users (SO_PEERCRED)."""

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


class SocketCommunicator(ListeningCommunicator):
    """Unix-socket server for one run; its directory is removed on close, whatever happened."""

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
        base = self.directory if self.directory is not None else tempfile.gettempdir()
        private = Path(tempfile.mkdtemp(prefix="lute-async-", dir=base))  # mode 0700
        path = private / "s"
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            shutil.rmtree(private, ignore_errors=True)
            raise LaunchError(
                f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; "
                "set TMPDIR or SocketCommunicator(directory=...) to a shorter directory"
            )
        self._dir, self.path = private, path
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
