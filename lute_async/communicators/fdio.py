"""Non-blocking reads from raw file descriptors (pipes and sockets), waiting on readiness.

Written by hand on purpose: anyio's streams wrap sockets and subprocess pipes, but not an
arbitrary inherited pipe fd, and they cannot drain a listener's backlog without blocking; a
readiness wait plus ``os.read`` covers both, on asyncio and uvloop alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import anyio

from lute_async.communicators.base import READ_SIZE, Batch
from lute_async.communicators.readiness import readiness

if TYPE_CHECKING:
    from lute_async.communicators.readers import Readers
    from lute_async.communicators.stream import BatchSender


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


#: Decodes one chunk read from a descriptor (b"" at its end): the batches it makes, and
#: whether to read that descriptor on (False: at its end, or its stream is broken).
Decode = Callable[[bytes], tuple[list[Batch], bool]]


class CallbackReads:
    """Reads descriptors to their end in readiness callbacks (:mod:`.readiness`), with no
    task: each chunk is decoded at once and its batches handed to ``send`` without waiting.

    A run's frame pipe, stdout and stderr are read this way: a reader task (and its group)
    cost a short run more than its reads. When ``send`` is full, the reads pause and a task of
    ``readers`` hands the held batches on as room comes (back-pressure: the task's writes then
    block on its full pipes), then the callbacks read on. Counted in ``readers`` until every
    descriptor is at its end and nothing is held.
    """

    __slots__ = (
        "_catching_up",
        "_decoders",
        "_held",
        "_on_ready",
        "_readers",
        "_readiness",
        "_release",
        "_send",
    )

    def __init__(
        self, decoders: dict[int, Decode], send: BatchSender[Batch], readers: Readers
    ) -> None:
        self._readiness = readiness()
        self._decoders = dict(decoders)
        self._on_ready = {fd: partial(self._readable, fd) for fd in decoders}
        self._send = send
        self._readers = readers
        self._held: deque[Batch] = deque()  # waiting for room in ``send``, in order
        self._catching_up = False
        self._release = readers.hold(self.cancel)
        self._watch()

    def _watch(self) -> None:
        for fd in self._decoders:
            self._readiness.watch(fd, self._on_ready[fd])

    def _unwatch(self) -> None:
        for fd in self._decoders:
            self._readiness.unwatch(fd)

    def _readable(self, fd: int) -> None:
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except ConnectionResetError:
            chunk = b""
        try:
            batches, more = self._decoders[fd](chunk)
        except BaseException:  # a bug: read no more (a watched pipe would call again at once)
            self.cancel()
            raise
        if not (more and chunk):  # at its end: read no more of it
            self._readiness.unwatch(fd)
            del self._decoders[fd]
        held, send = self._held, self._send
        try:
            for batch in batches:
                if held:
                    held.append(batch)
                    continue
                try:
                    send.send_nowait(batch)
                except anyio.WouldBlock:
                    held.append(batch)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.cancel()  # nobody dispatches any more: the run is ending
            return
        if held:
            self._unwatch()
            self._catching_up = True
            self._readers.spawn(self._catch_up())
        elif not self._decoders:
            self._release()

    async def _catch_up(self) -> None:
        """Hand the held batches on as the stream makes room, then read in callbacks again."""
        held = self._held
        try:
            while held:
                await self._send.send(held[0])
                held.popleft()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.cancel()
            return
        finally:
            self._catching_up = False
        if self._decoders:
            self._watch()
        else:
            self._release()

    def cancel(self) -> None:
        """Read no more: the descriptors are left open for their owner to close."""
        if not self._catching_up:
            self._unwatch()
        self._decoders.clear()
        self._held.clear()
        self._release()


def close_fd(fd: int | None) -> None:
    """Close ``fd`` if open, telling the event loop first so no waiter is left on it."""
    if fd is None:
        return
    with contextlib.suppress(RuntimeError):  # outside an event loop (interpreter exit)
        anyio.notify_closing(fd)
    with contextlib.suppress(OSError):
        os.close(fd)
