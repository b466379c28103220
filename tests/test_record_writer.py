"""RecordWriter: concurrent saves share a transaction, each status change is still written,
one bad record fails alone, and a cancelled writer strands nobody."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio
import pytest

from lute_async import Executor
from lute_async.records import AnalysisRecord, RecordStore
from lute_async.records.store import checkpoint, save_at_once
from lute_async.records.writer import RecordWriter


class CountingStore(RecordStore):
    """A real store that remembers the size of each batch written."""

    batches: list[list[str]]

    def save_many(self, records: Sequence[AnalysisRecord]) -> list[Exception | None]:
        self.batches.append([record.id for record in records])
        return super().save_many(records)


@pytest.fixture
def store(record_db: Path | str) -> CountingStore:
    """A real store of each backend (sqlite, PostgreSQL)."""
    opened = CountingStore(record_db)
    opened.batches = []
    return opened


def record(name: str, status: str = "PENDING") -> AnalysisRecord:
    return AnalysisRecord(name=name, status=status)


async def test_saves_asked_for_during_a_write_share_the_next_transaction(
    store: CountingStore,
) -> None:
    writer = RecordWriter(store.save_many)
    records = [record(f"r{i}") for i in range(20)]
    async with anyio.create_task_group() as tg:
        for one in records:
            tg.start_soon(writer.save, one)
    assert sorted(i for batch in store.batches for i in batch) == sorted(r.id for r in records)
    assert len(store.batches) < len(records)  # the first batch has one, the next the rest
    assert [store.get(r.id).name for r in records] == [r.name for r in records]


async def test_every_status_change_of_a_run_is_written_in_order(store: CountingStore) -> None:
    writer = RecordWriter(store.save_many)
    one = record("steps")
    seen = []
    for status in ("PENDING", "RUNNING", "COMPLETED"):
        one.status = status
        await writer.save(one)
        seen.append(store.get(one.id).status)
    assert seen == ["PENDING", "RUNNING", "COMPLETED"]


async def test_a_record_the_database_refuses_fails_alone(store: CountingStore) -> None:
    writer = RecordWriter(store.save_many)
    good, bad, also_good = record("good"), record("bad", status="NOT_A_STATUS"), record("ok")
    failures: dict[str, Exception] = {}

    async def save(one: AnalysisRecord) -> None:
        try:
            await writer.save(one)
        except Exception as exc:
            failures[one.name] = exc

    async with anyio.create_task_group() as tg:
        for one in (good, bad, also_good):
            tg.start_soon(save, one)
    assert list(failures) == ["bad"] and "NOT_A_STATUS" in str(failures["bad"])
    assert store.get(good.id).name == "good" and store.get(also_good.id).name == "ok"


async def test_a_cancelled_caller_s_save_is_still_written(store: CountingStore) -> None:
    writer = RecordWriter(store.save_many)
    first, queued = record("first"), record("queued")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await writer.save(queued)  # cancelled while it waits for its commit
    await writer.save(first)  # written after the cancelled one: the queue keeps order
    assert store.get(first.id).name == "first" and store.get(queued.id).name == "queued"
    await writer.aclose()


async def test_a_large_result_is_stored_by_the_thread_not_the_loop(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "large.db")
    store.batches = []
    writer = RecordWriter(store.save_many, partial(save_at_once, store))
    small = AnalysisRecord(name="small", status="COMPLETED", result={"payload": b"x" * 100})
    large = AnalysisRecord(name="large", status="COMPLETED", result={"payload": b"x" * 100_000})
    await writer.save(small)
    await writer.save(large)
    assert store.batches == [[large.id]]
    assert store.get(large.id).result == {"payload": b"x" * 100_000}
    await writer.aclose()


async def test_close_writes_what_is_queued_and_ends_the_thread(store: CountingStore) -> None:
    writer = RecordWriter(store.save_many)
    last = record("last")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await writer.save(last)
    writers = sum(t.name == "lute-async-records" for t in threading.enumerate())
    await writer.aclose()
    assert store.get(last.id).name == "last"
    assert sum(t.name == "lute-async-records" for t in threading.enumerate()) == writers - 1
    with pytest.raises(RuntimeError, match="closed"):
        await writer.save(record("late"))


async def test_an_executor_batches_the_records_of_concurrent_runs(
    store: CountingStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lute_async.executor

    at_once: list[list[str]] = []  # the batches written in the loop (sqlite, not busy)

    def counted(store: RecordStore, records: Sequence[AnalysisRecord]) -> bool:
        written = save_at_once(store, records)
        if written:
            at_once.append([record.id for record in records])
        return written

    monkeypatch.setattr(lute_async.executor, "save_at_once", counted)
    async with Executor(store, workdir=tmp_path / "work", log_events=False) as executor:
        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(executor.run, ["true"])
        assert {r.status for r in store.query(limit=100)} == {"COMPLETED"}
    batches = store.batches + at_once
    saves = [i for batch in batches for i in batch]
    runs = set(saves)
    assert len(runs) == 16 and all(saves.count(i) >= 3 for i in runs)  # every status change
    assert len(batches) < len(saves)


def _writer_threads() -> int:
    return sum(t.name == "lute-async-records" for t in threading.enumerate())


async def test_saves_are_written_in_the_loop_while_the_database_is_free(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "free.db")
    store.batches = []
    writer = RecordWriter(store.save_many, partial(save_at_once, store))
    before = _writer_threads()
    records = [record(f"r{i}") for i in range(10)]
    async with anyio.create_task_group() as tg:
        for one in records:
            tg.start_soon(writer.save, one)
    assert [store.get(r.id).name for r in records] == [r.name for r in records]
    assert store.batches == []  # save_many (the thread's) never ran
    assert _writer_threads() == before
    await writer.aclose()


async def test_a_busy_database_sends_the_saves_to_the_thread_in_order(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    store = CountingStore(path)
    store.batches = []
    entered = threading.Event()  # the thread's save_many has started (and waits on the lock)

    def save_many(records: Sequence[AnalysisRecord]) -> list[Exception | None]:
        entered.set()
        return store.save_many(records)

    writer = RecordWriter(save_many, partial(save_at_once, store))
    one = record("steps")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    async with anyio.create_task_group() as tg:
        for status in ("PENDING", "RUNNING"):
            tg.start_soon(
                writer.save, AnalysisRecord.from_dict({**one.to_dict(), "status": status})
            )
        await anyio.to_thread.run_sync(entered.wait)
        other.execute("COMMIT")  # the thread's save, waiting on the lock, goes through
    other.close()
    assert [i for batch in store.batches for i in batch] == [one.id, one.id]
    assert store.get(one.id).status == "RUNNING"  # the later status last
    await writer.aclose()


async def test_a_slow_write_in_the_loop_moves_the_writes_to_the_thread(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "slow.db")
    store.batches = []
    writer = RecordWriter(store.save_many, partial(save_at_once, store))
    writer.slow_write = 0.0  # every write counts as slow
    records = [record(f"r{i}") for i in range(5)]
    for one in records:  # the first three in the loop (two slow ones in a row pass), then not
        await writer.save(one)
    assert store.batches == [[records[3].id], [records[4].id]]
    assert [store.get(one.id).name for one in records] == [one.name for one in records]
    await writer.aclose()


async def test_the_thread_checkpoints_the_wal_the_loop_s_commits_leave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lute_async.records.writer as writer_module

    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY", 5)
    store = CountingStore(tmp_path / "wal.db")
    store.batches = []
    done: list[tuple[int, int] | None] = []

    def checkpointed() -> None:
        done.append(checkpoint(store))

    writer = RecordWriter(store.save_many, partial(save_at_once, store), checkpointed)
    records = [record(f"r{i}") for i in range(30)]
    for one in records:  # one at a time: commits in the loop, which never checkpoint
        await writer.save(one)  # (or in the thread while it holds the lock checkpointing)
    await writer.aclose()
    assert [store.get(one.id).name for one in records] == [one.name for one in records]
    # Every 5 the loop wrote (a save asked for while the thread checkpoints goes to the thread).
    assert 2 <= len(done) <= 6
    for result in done:
        assert result is not None
        frames, copied = result
        assert frames > 0 and copied == frames  # nobody read meanwhile: all of it copied


async def test_slow_writes_apart_keep_the_writes_in_the_loop(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "hiccup.db")
    store.batches = []
    writer = RecordWriter(store.save_many, partial(save_at_once, store))
    for i in range(9):
        writer.slow_write = 60.0 if i % 3 == 2 else 0.0  # two slow, one fast, again and again
        await writer.save(record(f"r{i}"))
    assert store.batches == []  # never three slow ones in a row: all written by the loop
    await writer.aclose()
