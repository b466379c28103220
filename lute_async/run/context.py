"""RunContext: what a run needs from the executor that owns it, injected at creation.

A run saves its record, waits for a concurrency slot, fires the executor's hooks (watched by
its hook watchdog) and launches with the executor's defaults through this, never by reaching
into the executor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from lute_async.communicators import CommunicatorSpec, SocketHome
from lute_async.hooks.events import RunView
from lute_async.hooks.registry import HookRegistry
from lute_async.hooks.watchdog import HookWatchdog


@dataclass(slots=True, frozen=True)
class RunContext:
    """The executor's services and defaults, as one run sees them."""

    #: Saves a run's record (errors are logged and counted in the record, never raised).
    save: Callable[[RunView], Awaitable[None]]
    #: The executor's hooks, fired for every run before the run's own.
    hooks: HookRegistry
    #: Bounds how many runs execute at once (None: unbounded).
    limiter: anyio.CapacityLimiter | None
    #: Reports sync hooks that block the loop past ``hook_timeout`` (None: no timeout).
    watchdog: HookWatchdog | None
    hook_timeout: float | None
    #: Seconds between SIGTERM and SIGKILL when a run is ended.
    grace: float
    #: The communicator kinds a run opens unless it names its own.
    communicators: tuple[CommunicatorSpec, ...]
    max_frame: int
    #: Seconds of silence after a task's exit before its readers are ended.
    drain_timeout: float
    #: Whether a task starts with the executor's environment.
    inherit_env: bool
    record_env: str
    #: Runs' working directories (params files) live under this one.
    workdir: Path
    #: Where runs' Unix sockets are bound (None: each run makes a directory of its own).
    socket_home: SocketHome | None = None
