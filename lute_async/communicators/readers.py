"""Readers: what reads one attempt's communicators, counted until each has ended.

A communicator that reads on demand (``reads_on_demand = True``) has no task of its own: it is
handed the attempt's :class:`Readers` and starts what it needs there, a task per connection
(the shared socket) or reads in the event loop's reader callbacks held open until their end
(the pipe). Once the task has exited and no reader is left, the attempt is drained.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

__all__ = ["OnDemand", "Readers", "serve_on_demand"]


class Readers:
    """The readers of one attempt: tasks in ``group`` and callback reads, each counted until
    it ends; ``drained`` is called once :meth:`exited` was called and none is left."""

    __slots__ = (
        "_cancels",
        "_exited",
        "_group",
        "_holds",
        "_left",
        "_tasks",
        "drained",
        "task_pid",
    )

    def __init__(
        self,
        group: asyncio.TaskGroup,
        drained: Callable[[], None],
        task_pid: int | None = None,
    ) -> None:
        self._group = group
        self._tasks: list[asyncio.Task[None]] = []
        self._cancels: dict[int, Callable[[], None]] = {}  # of the callback reads still held
        self._holds = 0  # holds made: each one's number
        self._left = 0
        self._exited = False
        self.drained = drained
        #: The attempt's task process (None: not known, as for a scheduler's job).
        self.task_pid = task_pid

    def spawn(self, reading: Coroutine[Any, Any, None]) -> None:
        """Run ``reading`` (one connection's reads, say) as a reader task."""
        self._left += 1
        self._tasks.append(self._group.create_task(self._until_end(reading)))

    async def _until_end(self, reading: Coroutine[Any, Any, None]) -> None:
        try:
            await reading
        finally:
            self._ended()

    def hold(self, cancel: Callable[[], None]) -> Callable[[], None]:
        """Count a reader that is not a task (reads in callbacks) until the function returned
        is called at its end; ``cancel`` stops it if the readers are cancelled first. The
        function holds a number, not ``cancel``: no cycle through the reader keeps its run
        alive after its end."""
        self._left += 1
        self._holds += 1
        held = self._holds
        self._cancels[held] = cancel

        def release() -> None:
            if self._cancels.pop(held, None) is not None:
                self._ended()

        return release

    def _ended(self) -> None:
        self._left -= 1
        if not self._left and self._exited:
            self.drained()

    def exited(self) -> None:
        """The task has exited: drained as soon as no reader is left (at once if none is)."""
        self._exited = True
        if not self._left:
            self.drained()

    def cancel(self) -> None:
        """Stop every reader still going (the drain's limit was reached, or the run ends)."""
        for task in self._tasks:
            task.cancel()
        for cancel in list(self._cancels.values()):
            cancel()


class OnDemand(Protocol):
    """A communicator that reads on demand (``reads_on_demand = True``): no task of its own,
    its readers started in the attempt's :class:`Readers`."""

    def read_with(self, readers: Readers) -> None:
        """Read from now on through ``readers``."""

    def exited(self) -> None:
        """The task exited: take what it sent just before, then stop listening."""


async def serve_on_demand(communicator: OnDemand, exited: asyncio.Event) -> None:
    """A communicator's ``serve`` for one that reads on demand: read through readers of its
    own until the task has ``exited`` and every reader has ended."""
    drained = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        readers = Readers(group, drained.set)
        try:
            communicator.read_with(readers)
            await exited.wait()
            communicator.exited()
            readers.exited()
            await drained.wait()
        finally:
            readers.cancel()
