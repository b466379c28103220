"""Non-blocking reads from raw file descriptors (pipes and sockets), waiting on readiness.

Written by hand on purpose: anyio's streams wrap sockets and subprocess pipes, but not an
arbitrary inherited pipe fd, and they cannot drain a listener's backlog without blocking; a
readiness wait plus ``os.read`` covers both, on asyncio and uvloop alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

import anyio

from lute_async.communicators.base import READ_SIZE


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


#: Takes one chunk read from a descriptor (b"" at its end); False: stop reading that one.
OnChunk = Callable[[bytes], Awaitable[bool]]


async def read_until_eof(readers: dict[int, OnChunk], size: int = READ_SIZE) -> None:
    """Read every descriptor of ``readers`` to its end in this one task, handing each chunk
    to its callback in order: a chunk of one, then of the next that is ready.

    One task for a run's frame pipe, stdout and stderr instead of one each: a task and its
    task group cost more of a short run than its reads. A descriptor is watched only while
    this waits (a one-shot reader callback), so a callback that blocks on back-pressure leaves
    nothing in the loop firing for it.
    """
    loop = asyncio.get_running_loop()
    ready = list(readers)  # try each once first: data may be waiting already
    waiting: set[int] = set()
    wake: asyncio.Future[None] | None = None

    def readable(fd: int) -> None:
        loop.remove_reader(fd)
        waiting.discard(fd)
        ready.append(fd)
        if wake is not None and not wake.done():
            wake.set_result(None)

    try:
        while ready or waiting:
            if not ready:
                wake = loop.create_future()
                await wake
                wake = None
                continue
            fd = ready.pop(0)
            try:
                chunk = os.read(fd, size)
            except BlockingIOError:
                waiting.add(fd)
                loop.add_reader(fd, readable, fd)
                continue
            except ConnectionResetError:
                chunk = b""
            if await readers[fd](chunk) and chunk:
                ready.append(fd)  # more may be waiting: read again after the others
    finally:
        for fd in waiting:
            loop.remove_reader(fd)


def close_fd(fd: int | None) -> None:
    """Close ``fd`` if open, telling the event loop first so no waiter is left on it."""
    if fd is None:
        return
    with contextlib.suppress(RuntimeError):  # outside an event loop (interpreter exit)
        anyio.notify_closing(fd)
    with contextlib.suppress(OSError):
        os.close(fd)
