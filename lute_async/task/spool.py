"""The task's spool: where a reporter keeps its messages while no executor listens (the one
that started a batch job died), for an executor that attaches later (``lute-async attach``).

A spool is one file per reporting process in the directory ``LUTE_ASYNC_SPOOL`` names (the
run's private directory, on the filesystem the executor shares), made new (0600, never through
a link). It starts with a header frame ``{"spool": 1, "run", "pid", "rank"}``; then come the
reporter's message frames as they would have gone on the wire, each batch written whole and
fsync'd. Past ``LUTE_ASYNC_SPOOL_MAX`` bytes (default :data:`DEFAULT_MAX_BYTES`) a last frame
``{"spool": "full", "limit": N}`` says so and later messages are dropped. No hello, so no
secret, is ever written. Loaded only by a reporter that lost its executor.
"""

from __future__ import annotations

import os
import sys

from lute_async.wire import ENV_SPOOL, ENV_SPOOL_MAX

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Mapping

#: Bytes one process's spool may hold by default.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: The version in a spool's header frame.
SPOOL_VERSION = 1
SUFFIX = ".spool"


class SpoolFile:
    """One process's spool file: ``write`` appends a batch of frames and fsyncs it."""

    __slots__ = ("_fd", "_full", "limit", "path", "size")

    def __init__(self, path: str, fd: int, limit: int, header: bytes) -> None:
        self.path = path
        self.limit = limit
        self._fd = fd
        self._full = False
        self.size = 0
        self._append(header)
        os.fsync(fd)

    def write(self, data: bytes | bytearray) -> None:
        if self._full or self._fd < 0:
            return
        try:
            self._write(data)
        except OSError as exc:  # a full disk: never the task's failure
            self._full = True
            sys.stderr.write(f"lute-async: cannot write the spool {self.path}: {exc}\n")

    def _write(self, data: bytes | bytearray) -> None:
        if self.size + len(data) > self.limit:
            from lute_async.task.packing import MessagePacker

            self._full = True
            self._append(MessagePacker().pack({"spool": "full", "limit": self.limit}))
            sys.stderr.write(
                f"lute-async: the spool {self.path} reached its {self.limit}-byte limit; "
                "later messages are dropped\n"
            )
        else:
            self._append(data)
        os.fsync(self._fd)

    def _append(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def open_spool(env: Mapping[str, str], run_id: str, pid: int, rank: int | None) -> SpoolFile | None:
    """A new spool file for this process in the directory ``env`` names; None when it names
    none or the file cannot be made (said once on stderr)."""
    directory = env.get(ENV_SPOOL)
    if not directory:
        return None
    try:
        limit = int(env.get(ENV_SPOOL_MAX) or DEFAULT_MAX_BYTES)
    except ValueError:
        limit = DEFAULT_MAX_BYTES
    from lute_async.task.packing import MessagePacker

    header = MessagePacker().pack({"spool": SPOOL_VERSION, "run": run_id, "pid": pid, "rank": rank})
    host = os.uname().nodename.split(".")[0]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_APPEND
    for attempt in range(100):
        name = f"{host}-{pid}-{'' if rank is None else rank}-{attempt}{SUFFIX}"
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue  # a pid reused by a later attempt of the job on this node
        except OSError as exc:
            sys.stderr.write(f"lute-async: cannot make a spool in {directory}: {exc}\n")
            return None
        try:
            return SpoolFile(path, fd, limit, header)
        except OSError as exc:
            os.close(fd)
            sys.stderr.write(f"lute-async: cannot write the spool {path}: {exc}\n")
            return None
    return None


def watched_write(sock: socket.socket) -> Callable[[bytes | bytearray], None]:
    """``sock.sendall`` that first checks the executor has not closed the connection (it
    never writes after its nonce, so a readable end of stream means it is gone): a batch job
    must not write a batch into a dead executor's socket and lose it, but spool it."""
    import socket

    peek = socket.MSG_PEEK | socket.MSG_DONTWAIT

    def write(data: bytes | bytearray) -> None:
        try:
            closed = sock.recv(1, peek) == b""
        except BlockingIOError:
            closed = False
        if closed:
            raise ConnectionResetError("the executor closed the connection")
        sock.sendall(data)

    return write
