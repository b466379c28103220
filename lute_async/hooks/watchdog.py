"""A watchdog for synchronous hooks that block the event loop past ``hook_timeout``.

An async hook that overruns is cancelled; a sync hook runs on the loop's own thread, where
nothing can interrupt it, and a blocked thread cannot report itself. So a helper thread does:
it wakes once per half timeout while hooks are being called (and sleeps on an event when none are)
and, when the same call is still running past the timeout, logs ``hook_blocking`` with the
hook, the event, the run and the loop thread's stack. The stdlib's ``faulthandler`` timer is
process-global and writes plain text to a file, hence this small thread of our own.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lute_async.hooks.events import hook_name
from lute_async.logs import get_logger


@dataclass(slots=True)
class _Call:
    hook: Callable[..., Any]
    event: str
    run_id: str
    started: float
    reported: bool = False


class HookWatchdog:
    """Reports sync hook calls running longer than ``timeout`` seconds; see the module doc."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._call: _Call | None = None
        self._busy = threading.Event()  # set while hooks are being called
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = threading.get_ident()

    def enter(self, hook: Callable[..., Any], event: str, run_id: str) -> None:
        """A sync hook call begins (on the event loop's thread)."""
        self._call = _Call(hook, event, run_id, time.monotonic())
        if self._thread is None:
            self._start()
        elif not self._busy.is_set():  # set() notifies a Condition: only when needed
            self._busy.set()

    def leave(self) -> float | None:
        """The call ended: its duration if it ran past the timeout, else None."""
        call, self._call = self._call, None
        if call is None:
            return None
        elapsed = time.monotonic() - call.started
        return elapsed if elapsed >= self.timeout else None

    def close(self) -> None:
        """Stop the watchdog thread."""
        self._stop.set()
        self._busy.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._stop.clear()  # an executor may be used again after aclose()
        self._busy.set()
        self._thread = threading.Thread(target=self._watch, name="lute-async-hook-watchdog")
        self._thread.daemon = True
        self._thread.start()

    def _watch(self) -> None:
        while True:
            self._busy.wait()  # no hook calls, no wake-ups
            while True:
                if self._stop.wait(self.timeout / 2):
                    return
                # Clear, then look: a call entered after the look sets _busy again.
                self._busy.clear()
                call = self._call
                if call is None:
                    break
                elapsed = time.monotonic() - call.started
                if not call.reported and elapsed >= self.timeout:
                    call.reported = True
                    self._report(call, elapsed)

    def _report(self, call: _Call, elapsed: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        get_logger().error(
            "hook_blocking",
            hook=hook_name(call.hook),
            hook_event=call.event,
            run_id=call.run_id,
            seconds=round(elapsed, 3),
            hook_timeout=self.timeout,
            hint="a sync hook runs on the event loop: make it async or move the work to a "
            "thread (anyio.to_thread.run_sync); every run waits while it blocks",
            stack=stack,
        )
