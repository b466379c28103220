"""Non-blocking reads from raw file descriptors (pipes and sockets), waiting on readiness.

Written by hand on purpose: anyio's streams wrap sockets and subprocess pipes, but not an
arbitrary inherited pipe fd, and they cannot drain a listener's backlog without blocking; a
readiness wait plus ``os.read`` covers both, on asyncio and uvloop alike.
"""

from __future__ import annotations

import contextlib
import os

import anyio

from lute_async.communicators.base import READ_SIZE


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


async def read_chunk(fd: int, size: int = READ_SIZE) -> bytes:
    """The next bytes available on ``fd``, waiting until there are some; b"" at end of file."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await anyio.wait_readable(fd)
        except ConnectionResetError:
            return b""


def close_fd(fd: int | None) -> None:
    """Close ``fd`` if open, telling the event loop first so no waiter is left on it."""
    if fd is None:
        return
    with contextlib.suppress(RuntimeError):  # outside an event loop (interpreter exit)
        anyio.notify_closing(fd)
    with contextlib.suppress(OSError):
        os.close(fd)
