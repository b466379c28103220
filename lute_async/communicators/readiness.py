"""Readiness: a run's descriptors watched through one epoll set of lute-async's own per loop.

asyncio's ``add_reader`` costs ~20 us of Python per descriptor and ``remove_reader`` ~7 (a
Handle with a copied context, a selector key, a KeyError for every new descriptor), four times
a short run (its three pipes and its pidfd): ~10% of the executor's loop for a ``/bin/true``
run. Here those descriptors go into one epoll set of ours (an ``epoll_ctl`` each, ~2-4 us),
whose own descriptor the event loop watches once; when it is readable, the callback of each
ready descriptor is called. Level-triggered, as the loop's readers are. Written by hand: no
library offers a cheaper readiness wait on an asyncio or uvloop loop.

A descriptor must be unwatched before it is closed (as with ``remove_reader``).
"""

from __future__ import annotations

import asyncio
import select
import weakref
from collections.abc import Callable

__all__ = ["Readiness", "readiness"]

#: The Readiness of each event loop, made at its first use there.
_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Readiness] = (
    weakref.WeakKeyDictionary()
)


class Readiness:
    """Descriptors watched for readability, each with a callback, on one event loop."""

    __slots__ = ("__weakref__", "_callbacks", "_epoll", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the loop holds this (its reader), not the reverse
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[int], None]] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)
        weakref.finalize(loop, self._epoll.close)  # the set goes with its loop

    def watch(self, fd: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(fd)`` whenever ``fd`` is readable, until :meth:`unwatch` (a bound
        method is fine: this holds it, so its object holds nothing back, and no cycle keeps
        a run alive after its end)."""
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = callback

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed); nothing if it is not watched."""
        if self._callbacks.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def watching(self, fd: int) -> bool:
        """True while ``fd`` is watched."""
        return fd in self._callbacks

    def _ready(self) -> None:
        # The callbacks as they were when the events were read: one that an earlier callback
        # unwatched (and perhaps a new descriptor with its number watched) is not called.
        ready = [(fd, self._callbacks.get(fd)) for fd, _ in self._epoll.poll(0)]
        for fd, callback in ready:
            if callback is None or self._callbacks.get(fd) is not callback:
                continue
            try:
                callback(fd)
            except Exception as exc:  # as the loop does for a reader's callback
                loop = self._loop()
                if loop is not None:
                    message = f"exception in the readiness callback of fd {fd}"
                    loop.call_exception_handler({"message": message, "exception": exc})


def readiness() -> Readiness:
    """The running loop's Readiness."""
    loop = asyncio.get_running_loop()
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP[loop] = Readiness(loop)
    return found
