"""Non-blocking reads from raw file descriptors (pipes and sockets), waiting on readiness.

Written by hand on purpose: anyio's streams wrap sockets and subprocess pipes, but not an
arbitrary inherited pipe fd, and they cannot drain a listener's backlog without blocking; a
readiness wait plus ``os.read`` covers both, on asyncio and uvloop alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

import anyio

from lute_async.communicators.base import READ_SIZE

if TYPE_CHECKING:
    pass


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


async def wait_readable(fd: int) -> None:
    """Wait until ``fd`` is readable (a pidfd: until its process has exited).

    ``anyio.wait_readable`` does the same with a backend lookup, a cancel-scope check and a
    waiter table per call (~15 us, several times a run); this is the loop's reader callback
    and one future. The reader is removed whatever ends the wait, so the caller may close
    ``fd`` with a plain ``os.close`` afterwards.
    """
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def read_chunk(fd: int, size: int = READ_SIZE) -> bytes:
    """The next bytes available on ``fd``, waiting until there are some; b"" at end of file."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await wait_readable(fd)
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
