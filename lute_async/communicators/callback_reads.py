"""CallbackReads: a run's pipes read in readiness callbacks, with a task only for a fast writer.

A run's frame pipe, stdout and stderr are read this way: a reader task (and its group) cost a
short run more than its reads. A read of at most :data:`~.base.BATCH_BYTES` (the usual one: a
few frames, some lines, the end of a pipe) is decoded at once in the callback and its batch
handed to the run's stream without waiting. A larger read, or a full stream, hands the reading
to a task of the run's :class:`~.readers.Readers` until the pipes are drained: it decodes one
batch at a time, each handed on before the next is decoded (so the dispatcher frees a batch
before the next exists: a few hundred messages alive, too few for the garbage collector, where
a whole 256 KiB read decoded at once cost it ~0.3-1 us a message), and waits for room while the
stream is full (back-pressure: the task's writes then block on its full pipes). Then the
callbacks read on. Counted in ``readers`` until every descriptor is at its end.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from lute_async.communicators.base import BATCH_BYTES, READ_SIZE, Batch
from lute_async.communicators.pump import send_batch
from lute_async.communicators.readiness import readiness

if TYPE_CHECKING:
    from lute_async.communicators.readers import Readers
    from lute_async.communicators.stream import BatchSender

__all__ = ["CallbackReads", "Decode"]

#: Decodes one read of a descriptor, at most BATCH_BYTES (b"" at its end): the batches it
#: makes, and whether to read that descriptor on (False: at its end, or its stream is broken).
Decode = Callable[[bytes | memoryview], tuple[list[Batch], bool]]


class CallbackReads:
    """Reads ``decoders``' descriptors to their end, handing their batches to ``send``."""

    __slots__ = (
        "_busy",
        "_decoders",
        "_held",
        "_raw",
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
        self._send = send
        self._readers = readers
        self._held: deque[Batch] = deque()  # decoded, waiting for room in ``send``
        self._raw: deque[tuple[int, memoryview]] = deque()  # read, not decoded yet
        self._busy = False  # a task reads (a fast writer, or a full stream)
        self._release = readers.hold(self.cancel)
        self._watch()

    def _watch(self) -> None:
        for fd in self._decoders:
            self._readiness.watch(fd, self._readable)

    def _unwatch(self) -> None:
        for fd in self._decoders:
            self._readiness.unwatch(fd)

    def _read(self, fd: int) -> bytes | None:
        """What ``fd`` has to read now (b"" at its end); None when nothing."""
        try:
            return os.read(fd, READ_SIZE)
        except BlockingIOError:
            return None
        except ConnectionResetError:
            return b""

    def _decode(self, fd: int, data: bytes | memoryview) -> None:
        """Decode ``data`` of ``fd`` (at most BATCH_BYTES; b"" at its end) into the held."""
        decoder = self._decoders.get(fd)
        if decoder is None:  # ended already (a broken stream): the rest is dropped
            return
        try:
            batches, more = decoder(data)
        except BaseException:  # a bug: read no more (a watched pipe would call again at once)
            self.cancel()
            raise
        self._held.extend(batches)
        if not (more and data):  # at its end: read no more of it
            if not self._busy:
                self._readiness.unwatch(fd)
            del self._decoders[fd]

    def _readable(self, fd: int) -> None:
        chunk = self._read(fd)
        if chunk is None:
            return
        if len(chunk) > BATCH_BYTES:  # a fast writer: a task decodes it batch by batch
            self._raw.append((fd, memoryview(chunk)))
            self._take_over()
            return
        self._decode(fd, chunk)
        held = self._held
        try:
            while held:
                self._send.send_nowait(held[0])
                held.popleft()
        except anyio.WouldBlock:  # the stream is full: a task hands the rest on
            self._take_over()
            return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.cancel()  # nobody dispatches any more: the run is ending
            return
        if not self._decoders:
            self._release()

    def _take_over(self) -> None:
        self._unwatch()
        self._busy = True
        self._readers.spawn(self._read_on())

    async def _read_on(self) -> None:
        """Hand on what is held, decode the rest of what was read batch by batch, read on
        while the descriptors have something; then back to the callbacks."""
        held, raw, send = self._held, self._raw, self._send
        try:
            while True:
                while held:  # taken first: a cancel meanwhile may clear what is held
                    await send_batch(send, held.popleft())
                if raw:
                    fd, view = raw[0]
                    if len(view) > BATCH_BYTES:
                        raw[0] = (fd, view[BATCH_BYTES:])
                    else:
                        raw.popleft()
                    self._decode(fd, view[:BATCH_BYTES])
                    continue
                read = [(fd, self._read(fd)) for fd in list(self._decoders)]
                raw.extend((fd, memoryview(chunk)) for fd, chunk in read if chunk is not None)
                if not raw:
                    break
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._busy = False
            self.cancel()
            return
        except BaseException:
            self._busy = False
            raise
        self._busy = False
        if self._decoders:
            self._watch()
        else:
            self._release()

    def cancel(self) -> None:
        """Read no more: the descriptors are left open for their owner to close."""
        if not self._busy:
            self._unwatch()
        self._decoders.clear()
        self._held.clear()
        self._raw.clear()
        self._release()
