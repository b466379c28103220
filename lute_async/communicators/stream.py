"""BatchStream: the bounded stream of message batches from a run's readers to its dispatcher.

The semantics of anyio's memory object stream as a run uses it (FIFO, at most ``size``
batches buffered, a full stream blocks ``send``, ``send_nowait`` raises ``anyio.WouldBlock``,
a closed sender ends the receiver's iteration once drained, a closed receiver makes every send
raise ``anyio.BrokenResourceError``), on plain event-loop futures. Written by hand because the
anyio stream checkpoints on every receive (an extra turn of the loop three times a run) and
looks its backend up for every wait: ~8% of a short run's loop time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Protocol, TypeVar

import anyio

__all__ = ["BatchSender", "BatchStream"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class BatchSender(Protocol[T_contra]):
    """What readers send batches through: a :class:`BatchStream`, or an anyio memory object
    send stream (tests feed a connection into one)."""

    def send_nowait(self, item: T_contra, /) -> None: ...

    async def send(self, item: T_contra, /) -> None: ...


class BatchStream(Generic[T]):
    """A bounded FIFO with one receiver; both ends in one object, used by one event loop.
    Items are never None (:meth:`next` returns None when woken)."""

    __slots__ = ("_closed", "_getter", "_items", "_putters", "_receiver_closed", "_woken", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: deque[T] = deque()
        #: Senders waiting for room, in order, each with its item (moved in on a receive).
        self._putters: deque[tuple[asyncio.Future[None], T]] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._closed = False  # no more sends: the receiver ends once the buffer is empty
        self._receiver_closed = False  # nobody receives: every send is broken
        self._woken = False  # wake() was called while nothing was buffered

    # -- the sending side ------------------------------------------------------------------

    def send_nowait(self, item: T) -> None:
        """Buffer ``item`` now, or raise ``anyio.WouldBlock`` when the stream is full."""
        if self._receiver_closed:
            raise anyio.BrokenResourceError
        if self._closed:
            raise anyio.ClosedResourceError
        if len(self._items) >= self.size or self._putters:
            raise anyio.WouldBlock
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def send(self, item: T) -> None:
        """Buffer ``item``, waiting for room while the stream is full."""
        try:
            self.send_nowait(item)
        except anyio.WouldBlock:
            pass
        else:
            return
        waiting = asyncio.get_running_loop().create_future()
        entry = (waiting, item)
        self._putters.append(entry)
        try:
            await waiting  # a receive moves the item in (or a closed receiver breaks it)
        except BaseException:
            if entry in self._putters:  # not moved in yet: it is not sent
                self._putters.remove(entry)
            raise

    def close(self) -> None:
        """No more sends; the receiver ends once it has taken what is buffered."""
        self._closed = True
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def wake(self) -> None:
        """Wake the receiver without an item: its :meth:`next` returns None (once) if
        nothing is buffered by then (the run's exit, its readers' end, a deadline)."""
        self._woken = True
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    # -- the receiving side ----------------------------------------------------------------

    async def next(self) -> T | None:
        """The next item, waiting while the stream is empty; None once it was woken (or is
        closed) while empty."""
        while not self._items:
            if self._woken or self._closed or self._receiver_closed:
                self._woken = False
                return None
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                self._getter = None
        return self._take()

    def next_nowait(self) -> T | None:
        """The next item if one is buffered, else None."""
        return self._take() if self._items else None

    async def receive(self) -> T:
        """The next item, waiting while the stream is empty; ``anyio.EndOfStream`` once it is
        closed and empty."""
        while (item := await self.next()) is None:  # woken: wait on, unless closed
            if self._closed or self._receiver_closed:
                raise anyio.EndOfStream
        return item

    def _take(self) -> T:
        item = self._items.popleft()
        if self._putters:  # room again: the longest-waiting sender's item goes in, in order
            waiting, queued = self._putters.popleft()
            self._items.append(queued)
            if not waiting.done():
                waiting.set_result(None)
        return item

    def close_receiver(self) -> None:
        """Nobody will receive any more: waiting and later sends raise BrokenResourceError."""
        self._receiver_closed = True
        self._items.clear()
        while self._putters:
            waiting, _ = self._putters.popleft()
            if not waiting.done():
                waiting.set_exception(anyio.BrokenResourceError())

    def __aiter__(self) -> BatchStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
