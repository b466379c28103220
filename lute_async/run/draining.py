"""Draining: how a run's task learns of the exit and of its readers' end, and dispatches what
the readers still bring after the exit until they are all at their end (or silent too long).
"""

from __future__ import annotations

import asyncio

from lute_async.communicators.readers import Readers
from lute_async.launchers.base import ExitStatus, TaskProcess
from lute_async.logs import get_logger
from lute_async.run.lifecycle import Phase
from lute_async.run.state import RunState


class Draining(RunState):
    """The exit and the drain of a run's attempt, seen from the run's own task."""

    async def _wait_exit(self, process: TaskProcess) -> None:
        """Wait for the exit of a process that cannot call back (a scheduler's job, say)."""
        try:
            status = await process.wait()
        except Exception as exc:  # raised by the run's own task, which it wakes
            self._exit_error = exc
            self._exited.set()
            self._receive.wake()
            return
        self._exited_with(status)

    def _exited_with(self, status: ExitStatus) -> None:
        """The process has exited (called back, or by _wait_exit): note it and wake the run's
        task. A cancel waiting for the exit sees it at once, even from inside a hook."""
        self._exit = status
        if self._lifecycle.phase.value < Phase.DRAINING.value:  # not after an abort's end
            self._lifecycle.advance(Phase.DRAINING)
        self._exited.set()
        self._receive.wake()

    def _readers_ended(self) -> None:
        self._drained.set()
        self._receive.wake()

    async def _drain(self, readers: Readers) -> None:
        """After the exit, dispatch what the readers still bring until all are at their end.

        What the task wrote before it exited may take a while to read on a loaded executor,
        so the limit is on *silence*: ``drain_timeout`` seconds with no batch (a process that
        escaped the group may hold a pipe open forever) ends the readers. A slow hook is not
        silence: the time runs only while this waits.
        """
        if self._drained.is_set():  # the usual end: every reader was at EOF by the exit
            return
        timeout, receive = self._context.drain_timeout, self._receive
        loop = asyncio.get_running_loop()
        last = loop.time()  # when the stream last moved
        while not self._drained.is_set():
            # Not a poll: the timer wakes the stream once per drain_timeout of silence.
            timer = loop.call_at(last + timeout, receive.wake)
            try:
                batch = await receive.next()
            finally:
                timer.cancel()
            if batch is not None:
                await self._dispatch_batch(batch)
                last = loop.time()
            elif not self._drained.is_set() and loop.time() >= last + timeout:
                readers.cancel()
                get_logger().warning(
                    "drain_timeout", run_id=self.id, run=self.name, seconds=timeout
                )
                return
