"""ReportWaiters: waiting on a fork server's reports, by what they are about.

The control connection is read by an event-loop reader callback while anyone waits (no task:
nothing outlives the runs that use the server); a report wakes the waiters of its own key (a
child's pid, minus a request's id, READY), not every waiter. A waiter is a coroutine
(:meth:`ReportWaiters._until`) or a callback (:meth:`ReportWaiters.call_on_exit`: a run's task
then learns of its child's exit without a task of its own waiting for it).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from lute_async.errors import LaunchError


class ServerDied(LaunchError):
    """The fork server ended (killed, or crashed) while it was needed."""


@dataclass(slots=True)
class Exit:
    """A child's end as the server's ``wait4`` saw it."""

    status: int
    usage: dict[str, float]


@dataclass(slots=True)
class Reports:
    """The reports read and not yet taken, by what they are about."""

    spawned: dict[int, dict[str, Any]] = field(default_factory=dict)
    exits: dict[int, Exit] = field(default_factory=dict)
    stopped: set[int] = field(default_factory=set)
    #: The pid outside the namespace of each sandboxed child, by request id.
    hellos: dict[int, int] = field(default_factory=dict)


class ReportWaiters:
    """The waiting side of :class:`~.server.Server` (which reads the reports: ``_read``)."""

    dead: str | None
    sock: socket.socket
    _reports: Reports
    _waiting: dict[int, list[asyncio.Future[None]]]
    _watching: asyncio.AbstractEventLoop | None

    def _read(self) -> None:
        raise NotImplementedError

    async def _until(self, key: int, done: Callable[[], bool]) -> None:
        """Wait until ``done()``, woken by the reports about ``key`` (a request id or a
        child's pid); ServerDied if the server ends first.

        The connection is read by an event-loop reader callback, registered while anyone
        waits (no task: nothing outlives the runs that use the server); a report wakes the
        waiters of its own key, not every waiter."""
        while not done():
            if self.dead is not None:
                raise ServerDied(self.dead)
            waiter = self._arm(key)
            try:
                await waiter
            finally:
                self._disarm(key, waiter)

    def _arm(self, key: int) -> asyncio.Future[None]:
        """A waiter woken by the next report about ``key``; the connection is watched
        until no waiter is left."""
        loop = asyncio.get_running_loop()
        if self._watching is not loop:
            self._watch(loop)
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(key, []).append(waiter)
        return waiter

    def _disarm(self, key: int, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiting.get(key, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters and key in self._waiting:
            del self._waiting[key]
        if not self._waiting:
            self._unwatch()

    def call_on_exit(
        self,
        pid: int,
        callback: Callable[[Exit | None], None],
        waiter: asyncio.Future[None] | None = None,
    ) -> None:
        """Call ``callback`` with child ``pid``'s exit once it is reported (None if the
        server dies first), from the connection's reader callback: no task waits. (Re-armed
        with a partial, not a closure naming itself: that would be a cycle keeping the run
        alive until the garbage collector ran.)"""
        if waiter is not None:
            self._disarm(pid, waiter)
        exits = self._reports.exits
        if pid in exits:
            self._reports.stopped.discard(pid)
            callback(exits.pop(pid))
        elif self.dead is not None:
            callback(None)
        else:  # not yet (a "stopped" report, say): wait for the next one about it
            self._arm(pid).add_done_callback(partial(self.call_on_exit, pid, callback))

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the connection from ``loop``'s reader callback. The waiters of another loop
        (one that ended while they waited) are dropped: nothing would ever run them."""
        if self._watching is not None:
            self._unwatch()
            self._waiting = {
                key: live
                for key, waiters in self._waiting.items()
                if (live := [waiter for waiter in waiters if waiter.get_loop() is loop])
            }
        loop.add_reader(self.sock, self._read)
        self._watching = loop

    def _unwatch(self) -> None:
        """No one waits: stop watching the connection (until the next waiter)."""
        loop, self._watching = self._watching, None
        if loop is not None and not loop.is_closed() and self.sock.fileno() >= 0:
            loop.remove_reader(self.sock)

    def _wake(self, key: int | None) -> None:
        """Wake the waiters of ``key`` (all of them for None)."""
        keys = list(self._waiting) if key is None else [key]
        for each in keys:
            for waiter in self._waiting.get(each, ()):
                if not waiter.done():
                    waiter.set_result(None)
