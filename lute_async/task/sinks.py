"""Sinks: where a reporter's frames go (the frame pipe, the executor's Unix socket or its TCP
address), opened from the ``LUTE_ASYNC_*`` variables the executor set."""

from __future__ import annotations

import os
import sys

from lute_async.wire import ENV_FD, ENV_SOCKET, ENV_SPOOL, ENV_TCP

TYPE_CHECKING = False  # typing and collections.abc cost every task start milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    Write = Callable[[bytes | bytearray], None]

__all__ = ["Sink", "fd_sink", "open_sink", "socket_sink"]


class Sink:
    """Where frames go: a file descriptor (pipe) or a socket (TCP: with the executor's nonce).
    ``timed``: the executor drops the connection if no hello comes within its hello timeout
    (sockets), so the hello is sent at once rather than with the first message."""

    __slots__ = ("close", "nonce", "timed", "write")

    def __init__(
        self,
        write: Write,
        close: Callable[[], None],
        nonce: bytes | None = None,
        *,
        timed: bool = True,
    ):
        self.write = write
        self.close = close
        self.nonce = nonce
        self.timed = timed


def fd_sink(spec: str) -> Sink | None:
    """Open the frame pipe named ``FD:INODE`` if this process really holds that pipe."""
    import stat

    fd_text, _, inode_text = spec.partition(":")
    try:
        fd = int(fd_text)
        info = os.fstat(fd)
    except (ValueError, OSError):
        return None
    if not stat.S_ISFIFO(info.st_mode) or (inode_text and str(info.st_ino) != inode_text):
        return None  # an unrelated fd that happens to have the same number: never write to it

    def write(data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def close() -> None:
        os.close(fd)

    return Sink(write, close, timed=False)  # a pipe has no hello timeout


def socket_sink(address: str, tcp: bool, watch: bool = False) -> Sink:
    """Connect to the executor's Unix socket ``address``, or its TCP ``host:port``."""
    if tcp:
        import socket

        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        from lute_async.task.handshake import read_nonce

        nonce = read_nonce(sock)  # closes sock on failure
        if watch:
            from lute_async.task.spool import watched_write

            return Sink(watched_write(sock), sock.close, nonce)
        return Sink(sock.sendall, sock.close, nonce)
    import _socket  # its C core: `socket` loads enum and selectors, ~7 ms of a task start

    unix = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        unix.connect(address)
    except OSError:
        unix.close()
        raise
    return Sink(unix.sendall, unix.close)


def open_sink(env: dict[str, str] | os._Environ[str], prefer: tuple[str, ...]) -> Sink | None:
    """The first channel of ``prefer`` (``pipe``, ``socket``, ``tcp``) that ``env`` names and
    that opens; None when none does."""
    for kind in prefer:
        try:
            if kind == "pipe" and (spec := env.get(ENV_FD)):
                sink = fd_sink(spec)
            elif kind == "socket" and (path := env.get(ENV_SOCKET)):
                sink = socket_sink(path, tcp=False)
            elif kind == "tcp" and (address := env.get(ENV_TCP)):
                sink = socket_sink(address, tcp=True, watch=bool(env.get(ENV_SPOOL)))
            else:
                continue
        except OSError as exc:  # gone or refused: try the next channel
            sys.stderr.write(f"lute-async: cannot use the {kind} channel: {exc}\n")
            continue
        if sink is not None:
            return sink
    return None
