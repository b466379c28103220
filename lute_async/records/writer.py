"""RecordWriter: the saves of many runs in one thread of their own, one transaction a batch.

Every status change of every run is still written, in the order asked, and each caller waits
until its own record is committed. What batches them is only concurrency: the saves asked for
while a batch is being written go into the next one, so a lone run costs what a direct save
costs and eight runs at once share a commit.

The saves asked for in one turn of the event loop are written together at its end: in the
loop itself when the database takes them at once (``save_now``: a sqlite file that is not
busy, ~0.3 ms for eight records), else by the writer's thread, which waits as it must (another
process's write lock, PostgreSQL's round trips, a journal to replay). Under load a thread's
commit waited for the loop to hand over the GIL, up to the 5 ms switch interval three times a
run: 55-68% of a short run's latency. The loop writes only while the thread has nothing in
hand (order is kept), and stops for good once a write takes longer than :data:`SLOW_WRITE`
(a slow file system). ``anyio.to_thread`` would do the hop, but costs ~0.1 ms of the loop's
time per call; the database keeps its own lock either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from queue import SimpleQueue

import anyio

from lute_async.logs import get_logger
from lute_async.records.model import AnalysisRecord

__all__ = ["RecordWriter"]

#: Saves ``records`` in one transaction, returning what each save raised (or None).
SaveMany = Callable[[Sequence[AnalysisRecord]], list[Exception | None]]
#: Saves ``records`` in one transaction if that needs no waiting: True; False, nothing written.
SaveNow = Callable[[Sequence[AnalysisRecord]], bool]
#: Seconds a write in the event loop may take; after SLOW_WRITES_ALLOWED slower ones in a row
#: (a slow file system, not a passing hiccup) the loop stops writing.
SLOW_WRITE = 0.02
SLOW_WRITES_ALLOWED = 3
#: Records the loop writes between two checkpoints of the database by the thread (the loop's
#: commits never checkpoint: see ``RecordDatabase.write_at_once``).
CHECKPOINT_EVERY = 1000

#: One save asked for: the record, and the future its caller awaits on its loop.
_Save = tuple[AnalysisRecord, "asyncio.Future[Exception | None]", asyncio.AbstractEventLoop]
#: A save's future and what its save raised (or None).
_Settled = tuple["asyncio.Future[Exception | None]", Exception | None]


#: Queued for the thread in place of a batch: checkpoint the database.
_CHECKPOINT: list[_Save] = []


class RecordWriter:
    """Writes the records asked for in one loop turn at its end: through ``save_now`` in the
    loop when it can, else through ``save_many`` in a thread of its own, one batch at a time."""

    def __init__(
        self,
        save_many: SaveMany,
        save_now: SaveNow | None = None,
        checkpoint: Callable[[], object] | None = None,
    ) -> None:
        self._save_many = save_many
        self._save_now = save_now
        self._checkpoint = checkpoint
        self._written_now = 0  # records the loop wrote since the thread's last checkpoint
        self._slow_writes = 0
        self._in_thread = 0  # saves handed to the thread and not settled yet
        #: Seconds a write in the loop may take before the loop stops writing.
        self.slow_write = SLOW_WRITE
        self._queue: SimpleQueue[list[_Save] | None] = SimpleQueue()
        self._asked: dict[asyncio.AbstractEventLoop, list[_Save]] = {}
        self._thread: threading.Thread | None = None
        self._closed = False

    async def save(self, record: AnalysisRecord) -> None:
        """Save ``record`` and return once it is committed; raise what its save raised.

        A caller cancelled while it waits leaves its save queued: it is still written, in
        order with the others.
        """
        if self._closed:
            raise RuntimeError("the record writer is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Exception | None] = loop.create_future()
        asked = self._asked.get(loop)
        if asked is None:  # the first save of this turn of the loop: hand over at its end
            asked = self._asked[loop] = []
            loop.call_soon(self._hand_over, loop)
        asked.append((record, done, loop))
        error = await done
        if error is not None:
            raise error

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the saves asked for in one turn of ``loop`` now, or give them to the thread
        in one wake-up."""
        batch = self._asked.pop(loop)
        if self._save_now is not None and not self._in_thread and self._write_now(batch):
            return
        self._in_thread += len(batch)
        self._start_thread()
        self._queue.put(batch)

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_forever, name="lute-async-records", daemon=True
            )
            self._thread.start()

    def _write_now(self, batch: list[_Save]) -> bool:
        assert self._save_now is not None
        started = time.perf_counter()
        if not self._save_now([record for record, _, _ in batch]):
            return False
        took = time.perf_counter() - started
        if took <= self.slow_write:
            self._slow_writes = 0
        else:
            self._slow_writes += 1
            if self._slow_writes >= SLOW_WRITES_ALLOWED:  # the loop must not wait on this disk
                self._save_now = None
                get_logger().warning(
                    "record_writes_slow", seconds=round(took, 3), moved_to="thread"
                )
        _settle([(done, None) for _, done, _ in batch])
        self._written_now += len(batch)
        if self._written_now >= CHECKPOINT_EVERY and self._checkpoint is not None:
            self._written_now = 0
            self._start_thread()
            self._queue.put(_CHECKPOINT)
        return True

    def _settled(self, settled: list[_Settled]) -> None:
        self._in_thread -= len(settled)
        _settle(settled)

    async def aclose(self) -> None:
        """Write what is asked for and queued, then end the thread."""
        self._closed = True
        loop = asyncio.get_running_loop()
        if loop in self._asked:  # asked for in this turn: written before the stop
            self._hand_over(loop)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await anyio.to_thread.run_sync(thread.join)

    def _write_forever(self) -> None:
        queue = self._queue
        while True:
            first = queue.get()
            batch: list[_Save] = []
            stop = first is None
            checkpoint = first is _CHECKPOINT
            if first is not None:
                batch += first
            while not queue.empty():  # everything asked for meanwhile joins this batch
                more = queue.get_nowait()
                if more is None:
                    stop = True
                else:
                    checkpoint = checkpoint or more is _CHECKPOINT
                    batch += more
            if batch:
                self._write(batch)
            if checkpoint and self._checkpoint is not None:
                with contextlib.suppress(Exception):  # the next commits will do it then
                    self._checkpoint()
            if stop:
                return

    def _write(self, batch: list[_Save]) -> None:
        try:
            errors = self._save_many([record for record, _, _ in batch])
        except Exception as exc:  # save_many itself failed: every save in it did
            errors = [exc] * len(batch)
        loops: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
        for (_, done, loop), error in zip(batch, errors, strict=True):
            loops.setdefault(loop, []).append((done, error))
        for loop, settled in loops.items():  # one wake-up per loop and batch
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(self._settled, settled)


def _settle(settled: list[_Settled]) -> None:
    for done, error in settled:
        if not done.done():  # a cancelled caller's future is already done
            done.set_result(error)
