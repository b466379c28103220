"""``AsyncReporter``: the :class:`Reporter` API for async tasks."""

from __future__ import annotations

from lute_async.task.reporter import Reporter

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any


class AsyncReporter:
    """The :class:`Reporter` API for async tasks: sends never block the event loop."""

    def __init__(self, reporter: Reporter) -> None:
        self.sync = reporter

    @classmethod
    def connect(cls, **kwargs: Any) -> AsyncReporter:
        """Connect like :meth:`Reporter.connect`."""
        return cls(Reporter.connect(**kwargs))

    @property
    def connected(self) -> bool:
        return self.sync.connected

    async def _call(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        import asyncio

        # Buffering is a memory append; only a flush may block on a full pipe, so run the
        # flushing calls in a thread and keep the buffered path on the loop.
        if kwargs.pop("_flushes", False):
            await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))
        else:
            fn(*args, **kwargs)

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
