"""RecordWriter: the saves of many runs in one worker-thread hop and one transaction.

Every status change of every run is still written, in the order asked, and each caller waits
until its own record is committed. What batches them is only concurrency: the saves asked for
while a batch is being written go into the next one, so a lone run costs what a direct save
costs and eight runs at once share a commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from lute_async.records.model import AnalysisRecord

__all__ = ["RecordWriter"]

#: Saves ``records`` in one transaction, returning what each save raised (or None).
SaveMany = Callable[[Sequence[AnalysisRecord]], list[Exception | None]]


@dataclass(slots=True)
class _Save:
    record: AnalysisRecord
    done: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None


class RecordWriter:
    """Writes records through ``save_many`` in a worker thread, one batch at a time."""

    def __init__(self, save_many: SaveMany, limiter: anyio.CapacityLimiter) -> None:
        self._save_many = save_many
        self._limiter = limiter
        self._queue: list[_Save] = []
        self._batch_written: anyio.Event | None = None  # set when the batch in writing ends

    async def save(self, record: AnalysisRecord) -> None:
        """Save ``record`` and return once it is committed; raise what its save raised."""
        mine = _Save(record)
        self._queue.append(mine)
        while not mine.done.is_set():
            if self._batch_written is not None:  # another caller is writing: wait for it
                await self._batch_written.wait()
            else:  # nobody is: write everything queued, this record included
                await self._write_queue()
        if mine.error is not None:
            raise mine.error

    async def _write_queue(self) -> None:
        batch, self._queue = self._queue, []
        written = self._batch_written = anyio.Event()
        ended = False
        try:
            # Once the worker thread has started, a cancel waits for it to return.
            errors = await anyio.to_thread.run_sync(
                self._save_many, [entry.record for entry in batch], limiter=self._limiter
            )
            for entry, error in zip(batch, errors, strict=True):
                entry.error = error
            ended = True
        except Exception as exc:  # save_many itself failed: every save in it did
            for entry in batch:
                entry.error = exc
            ended = True
        finally:
            if ended:
                for entry in batch:
                    entry.done.set()
            else:  # cancelled before the thread ran: the next caller writes them
                self._queue[:0] = batch
            self._batch_written = None
            written.set()
