"""``AsyncReporter``: the :class:`Reporter` API for async tasks, whose sends never block the
event loop: a message is packed into the reporter's buffer on the loop and written by the
reporter's flusher thread; the flushing calls write in a worker thread that the loop awaits."""

from __future__ import annotations

from lute_async.task.reporter import Reporter

#: Buffered bytes past which a send awaits the channel (in a thread) before it returns: a task
#: outpacing a slow executor waits for it, its loop still running, instead of filling memory.
HIGH_WATER = 1024 * 1024

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any


class AsyncReporter:
    """The :class:`Reporter` API for async tasks: sends never block the event loop."""

    def __init__(self, reporter: Reporter) -> None:
        self.sync = reporter
        reporter.write_inline = False  # its writes are the flusher thread's from now on

    @classmethod
    def connect(cls, **kwargs: Any) -> AsyncReporter:
        """Connect like :meth:`Reporter.connect`."""
        return cls(Reporter.connect(**kwargs))

    @property
    def connected(self) -> bool:
        return self.sync.connected

    async def _call(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        # Buffering is a memory append (the flusher thread writes), so it stays on the loop;
        # a flushing call, or a buffer past HIGH_WATER, waits for the channel in a thread.
        flushes = kwargs.pop("_flushes", False)
        if not flushes:
            fn(*args, **kwargs)
            if self.sync.buffered < HIGH_WATER:
                return
            fn, args, kwargs = self.sync.flush, (), {}
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    async def started(self, params: Any = None) -> None:
        await self._call(self.sync.started, params)

    async def log(self, message: str, level: str = "info") -> None:
        await self._call(self.sync.log, message, level)

    async def progress(
        self, fraction: float, message: str = "", *, total: float | None = None
    ) -> None:
        await self._call(self.sync.progress, fraction, message, total=total)

    async def emit(self, sig: str, data: Any = None) -> None:
        await self._call(self.sync.emit, sig, data)

    async def result(self, payload: Any, summary: str | None = None) -> None:
        await self._call(self.sync.result, payload, summary, _flushes=True)

    async def error(self, exc: BaseException | str) -> None:
        await self._call(self.sync.error, exc, _flushes=True)

    async def flush(self) -> None:
        await self._call(self.sync.flush, _flushes=True)

    async def aclose(self) -> None:
        await self._call(self.sync.close, _flushes=True)

    async def __aenter__(self) -> AsyncReporter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
            await self.error(exc)
        await self.aclose()
