"""BackgroundRuns: one event loop in a thread of its own, running lute-async runs for
synchronous callers (:class:`~lute_async.futures.FuturesExecutor`, the PSI/J plugin).

A caller's thread hands work to the loop with ``asyncio.run_coroutine_threadsafe`` and waits
on the returned future; nothing polls. Each run is an asyncio task on the loop; its handle
(:class:`BackgroundRun`) gives the caller the run id, the live record and a
``concurrent.futures.Future`` that resolves with the final record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio

from lute_async.errors import LuteAsyncError
from lute_async.executor import Command, Executor, Run
from lute_async.records import AnalysisRecord

__all__ = ["BackgroundRun", "BackgroundRuns"]

T = TypeVar("T")


class BackgroundRun:
    """A run started on a :class:`BackgroundRuns` loop, seen from any thread."""

    def __init__(self, run: Run, owner: BackgroundRuns) -> None:
        self.run = run
        self.id = run.id
        self.owner = owner
        #: Resolves with the final record once the run has ended (its terminal hooks done).
        self.finished: concurrent.futures.Future[AnalysisRecord] = concurrent.futures.Future()
        self.started = threading.Event()

    @property
    def record(self) -> AnalysisRecord:
        """The run's record (live until the run ends, then final)."""
        return self.run.record

    def cancel(self) -> None:
        """Ask the loop to cancel the run (returns at once; the run ends CANCELLED)."""
        self.owner.spawn(self.run.cancel())


class BackgroundRuns:
    """An :class:`Executor` on an asyncio loop in a daemon thread; runs started from any
    thread. ``executor_options`` are :class:`Executor`'s keyword arguments."""

    def __init__(self, name: str = "lute-async-loop", **executor_options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._live: dict[str, BackgroundRun] = {}
        self._closed = False
        try:
            self.executor = self.call(self._open(executor_options))
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _open(options: dict[str, Any]) -> Executor:
        executor = Executor(**options)  # anyio objects are made on the loop
        await executor.store()
        return executor

    # -- calling into the loop ------------------------------------------------------------

    @property
    def in_loop(self) -> bool:
        """True when the calling code runs on this loop's thread."""
        return threading.current_thread() is self._thread

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its value (from another thread only)."""
        if self.in_loop:
            coro.close()
            raise LuteAsyncError(
                "a blocking call into the lute-async loop was made from the loop's own thread "
                "(a hook or a done callback): it would wait for itself"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start ``coro`` on the loop without waiting for it (from any thread)."""
        if self.in_loop:
            self._loop.create_task(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, self._loop)

    # -- runs -------------------------------------------------------------------------------

    def start(
        self,
        cmd: Command,
        on_end: Callable[[BackgroundRun], None] | None = None,
        on_start: Callable[[BackgroundRun], None] | None = None,
        **options: Any,
    ) -> BackgroundRun:
        """Make and start a run of ``cmd`` (``options`` as :meth:`Executor.run`'s); a
        ConfigError for a bad option is raised here, in the caller's thread. ``on_start`` is
        called on the loop when the task has started, ``on_end`` once the record is final."""
        if self._closed:
            raise LuteAsyncError("this lute-async background loop is shut down")
        if self.in_loop:  # from a hook or a callback: the loop is ours, make it right here
            return self._start(cmd, options, on_end, on_start)

        async def start() -> BackgroundRun:
            return self._start(cmd, options, on_end, on_start)

        return self.call(start())

    def _start(
        self,
        cmd: Command,
        options: dict[str, Any],
        on_end: Callable[[BackgroundRun], None] | None,
        on_start: Callable[[BackgroundRun], None] | None = None,
    ) -> BackgroundRun:
        run = self.executor._make_run(cmd, dict(options))
        handle = BackgroundRun(run, self)

        def started(event: Any) -> None:
            handle.started.set()
            if on_start is not None:
                on_start(handle)

        run.on("started", started)
        self._live[run.id] = handle
        self._loop.create_task(self._drive(handle, on_end))
        return handle

    async def _drive(
        self, handle: BackgroundRun, on_end: Callable[[BackgroundRun], None] | None
    ) -> None:
        try:
            await handle.run._execute()
        except BaseException as exc:  # the record is final either way; report it
            if not handle.run.done and not handle.finished.done():
                handle.finished.set_exception(exc)
        finally:
            self._live.pop(handle.id, None)
            handle.started.set()
            if not handle.finished.done():
                handle.finished.set_result(handle.run.record)
            if on_end is not None:
                on_end(handle)

    def live(self, run_id: str) -> BackgroundRun | None:
        """The handle of a run of this loop that has not ended, or None."""
        return self._live.get(run_id)

    def live_runs(self) -> list[BackgroundRun]:
        """Every run of this loop that has not ended."""
        return list(self._live.values())

    def load(self, run_id: str) -> AnalysisRecord:
        """The stored record of ``run_id`` (RecordNotFound when there is none)."""

        async def load() -> AnalysisRecord:
            executor = self.executor
            store = await executor.store()
            # One database user at a time, as the executor's own saves.
            return await anyio.to_thread.run_sync(store.get, run_id, limiter=executor._db_limiter)

        return self.call(load())

    # -- closing ----------------------------------------------------------------------------

    def close(self, *, cancel: bool = False) -> None:
        """Wait for every run to end (cancel them first with ``cancel``), close the record
        store and stop the loop thread. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if cancel:
            for handle in self.live_runs():
                handle.cancel()
        for handle in self.live_runs():
            concurrent.futures.wait([handle.finished])
        try:
            self.call(self.executor.aclose())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if not self.in_loop:
            self._thread.join()
            self._loop.close()
