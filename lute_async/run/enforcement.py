"""What ends a run from outside the task: its wall-time Deadline and its output budget, and
ending a run for a limit (verdict first, then SIGKILL), in one place."""

from __future__ import annotations

import math
import signal as signal_module
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from lute_async.run.lifecycle import Lifecycle

if TYPE_CHECKING:
    from lute_async.launchers.base import TaskProcess
    from lute_async.records import AnalysisRecord


class Deadline:
    """A run's wall-time deadline: a cancel scope that stopping parks and resuming moves, so
    time spent stopped is free (also when the task is stopped before the deadline is armed).
    :meth:`wait` returns when it passes."""

    __slots__ = ("_armed", "_paused_left", "_scope", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._scope: anyio.CancelScope | None = None  # set while armed (the process runs)
        self._armed = False
        self._paused_left: float | None = None

    async def wait(self) -> None:
        """Arm the deadline ``seconds`` from now (or parked, if paused already) and sleep
        until it passes (no polling)."""
        self._armed = True
        paused = self._paused_left is not None
        deadline = math.inf if paused else anyio.current_time() + self.seconds
        with anyio.CancelScope(deadline=deadline) as scope:
            self._scope = scope
            try:
                await anyio.sleep_forever()
            finally:
                self._scope = None

    def pause(self) -> None:
        """Stop the clock (the task was stopped)."""
        if self._paused_left is not None:
            return
        if self._scope is not None:
            self._paused_left = self._scope.deadline - anyio.current_time()
            self._scope.deadline = math.inf
        elif not self._armed:
            self._paused_left = self.seconds

    def resume(self) -> None:
        """Restart the clock with the time that was left when it was paused."""
        if self._paused_left is None:
            return
        if self._scope is not None:
            self._scope.deadline = anyio.current_time() + self._paused_left
            self._paused_left = None
        elif not self._armed:  # its clock starts, in full, when it is armed
            self._paused_left = None

    @property
    def left(self) -> float | None:
        """Seconds left (constant while paused), or None while it is neither armed nor paused."""
        if self._paused_left is not None:
            return self._paused_left
        if self._scope is None:
            return None
        return max(0.0, self._scope.deadline - anyio.current_time())


def end_for_limit(
    lifecycle: Lifecycle,
    record: AnalysisRecord,
    process: TaskProcess | None,
    kind: str,
    detail: str,
) -> None:
    """A limit of ``kind`` was exceeded: if that is the run's end, set the record's verdict and
    SIGKILL the process group (a limit is not negotiated with a SIGTERM)."""
    if not lifecycle.exceed(kind, detail):
        return
    assert lifecycle.end is not None
    record.verdict = lifecycle.end.verdict
    if process is not None and not lifecycle.exited:
        process.send_signal(signal_module.SIGKILL)


class OutputBudget:
    """Counts the bytes of a run's stdout/stderr; past ``limit`` the run is ended for
    ``output_limit`` and the rest is discarded (and counted in the record)."""

    __slots__ = ("_end", "_record", "limit", "seen")

    def __init__(self, limit: int, record: AnalysisRecord, end: Callable[[str, str], None]) -> None:
        self.limit = limit
        self.seen = 0
        self._record = record
        self._end = end

    def __call__(self, n: int) -> bool:
        """``n`` more bytes were read: True to keep them, False to discard them."""
        self.seen += n
        if self.seen <= self.limit:
            return True
        self._end("output_limit", f"more than {self.limit} bytes on stdout/stderr")
        self._record.extra["output_discarded_bytes"] = self.seen - self.limit
        return False
