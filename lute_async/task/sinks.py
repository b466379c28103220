"""Where a reporter's frames go: the pipe, Unix socket or TCP address the executor named."""

from __future__ import annotations

import os
import sys

from lute_async.wire import ENV_FD, ENV_SOCKET, ENV_TCP

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable


class Sink:
    """Where frames go: a file descriptor (pipe) or a connected socket."""

    __slots__ = ("close", "write")

    def __init__(self, write: Callable[[bytes | bytearray], None], close: Callable[[], None]):
        self.write = write
        self.close = close


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

    return Sink(write, close)


def socket_sink(address: str, tcp: bool) -> Sink:
    """Connect to the executor's Unix socket ``address``, or its TCP ``host:port``."""
    import socket

    if tcp:
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
    return Sink(sock.sendall, sock.close)


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
                sink = socket_sink(address, tcp=True)
            else:
                continue
        except OSError as exc:  # gone or refused: try the next channel
            sys.stderr.write(f"lute-async: cannot use the {kind} channel: {exc}\n")
            continue
        if sink is not None:
            return sink
    return None
