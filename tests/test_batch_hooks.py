"""Batch hooks: one call per decoded batch with its events, in stream order, for every message
exactly once, alongside per-message hooks, with errors isolated and recorded like theirs."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import log_events

from lute_async import Event, EventBatch, Executor, logs
from lute_async.error_budget import KEPT_ERRORS
from lute_async.hooks.registry import HookRegistry

#: Enough ~100-byte messages for many decoded batches (a batch is at most 16 KiB of frames).
TICKS = 3000

FLOOD = """
    from lute_async.task import Reporter
    with Reporter.connect(prefer=({via!r},)) as report:
        for i in range({n}):
            report.emit("tick", i)
"""

Script = Callable[[str], list[str]]


def flood(script: Script, via: str = "pipe", n: int = TICKS) -> list[str]:
    return script(FLOOD.format(via=via, n=n))


@pytest.mark.parametrize("via", ["pipe", "socket"])
async def test_a_batch_hook_sees_every_message_once_in_order_with_the_terminal_event(
    executor: Executor, script: Script, via: str
) -> None:
    ticks: list[list[int]] = []
    names: list[str] = []

    def on_ticks(batch: EventBatch) -> None:
        assert isinstance(batch, EventBatch)
        ticks.append([event.data for event in batch])

    executor.on_batch("tick", on_ticks)
    executor.on_batch("*", lambda batch: names.extend(event.name for event in batch))
    record = await executor.run(flood(script, via), communicators=(via,))
    assert record.status == "COMPLETED", record.error
    assert [i for batch in ticks for i in batch] == list(range(TICKS))
    assert len(ticks) > 1 and all(ticks)  # several batches, none empty
    assert names.count("tick") == TICKS
    assert names[0] == "started" and names[-1] == "done"
    assert names.count("done") == 1


async def test_batch_events_equal_the_per_message_ones(executor: Executor, script: Script) -> None:
    per_message: list[Event] = []
    batched: list[Event] = []
    slices: list[tuple[int, int]] = []

    def on_batch(batch: EventBatch) -> None:
        batched.extend(batch)
        assert [event.message for event in batch] == batch.messages
        assert batch[0] == batch[:1][0] and len(batch[1:]) == len(batch) - 1
        slices.append((batch[0].data, batch[-1].data))

    executor.on("tick", per_message.append)
    executor.on_batch("tick", on_batch)
    await executor.run(flood(script, n=500))
    assert batched == per_message and len(batched) == 500
    assert slices[0][0] == 0 and slices[-1][1] == 499


async def test_per_message_and_batch_hooks_each_keep_the_order(
    executor: Executor, script: Script
) -> None:
    log: list[tuple[str, Any]] = []
    seen_by_batch: list[int] = []

    def on_batch(batch: EventBatch) -> None:
        # A batch hook runs after the per-message hooks of its batch's messages.
        second = [data for what, data in log if what == "second"]
        assert second[-1] == batch[-1].data
        seen_by_batch.extend(event.data for event in batch)
        log.append(("batch", len(batch)))

    executor.on("tick", lambda event: log.append(("message", event.data)))
    executor.on_batch("tick", on_batch)
    executor.on("tick", lambda event: log.append(("second", event.data)))
    await executor.run(flood(script))
    assert [data for what, data in log if what == "message"] == list(range(TICKS))
    assert [data for what, data in log if what == "second"] == list(range(TICKS))
    assert seen_by_batch == list(range(TICKS))


async def test_an_async_batch_hook_is_awaited_in_order(executor: Executor, script: Script) -> None:
    seen: list[int] = []

    async def on_batch(batch: EventBatch) -> None:
        await anyio.lowlevel.checkpoint()
        seen.extend(event.data for event in batch)

    executor.on_batch("tick", on_batch)
    record = await executor.run(flood(script))
    assert record.status == "COMPLETED"
    assert seen == list(range(TICKS))


async def test_a_raising_batch_hook_is_isolated_and_recorded_within_the_budget(
    executor: Executor, script: Script
) -> None:
    calls = 0
    after: list[int] = []
    per_message: list[int] = []

    def broken(batch: EventBatch) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"bad batch of {len(batch)}")

    executor.on("tick", lambda event: per_message.append(event.data[0]))
    executor.on_batch("tick", broken)
    executor.on_batch("tick", lambda batch: after.extend(event.data[0] for event in batch))
    # 4000 messages of > 100 bytes cannot fit in fewer than 25 batches of at most 16 KiB.
    padded = """
        from lute_async.task import Reporter
        with Reporter.connect() as report:
            for i in range(4000):
                report.emit("tick", [i, "x" * 100])
    """
    record = await executor.run(script(padded))
    assert record.status == "COMPLETED"
    assert after == per_message == list(range(4000))
    assert calls > KEPT_ERRORS  # enough failing batches to exceed what is kept whole
    kept = record.hook_errors
    assert len(kept) == KEPT_ERRORS
    assert {(e["event"], e["type"]) for e in kept} == {("tick", "ValueError")}
    assert kept[0]["hook"].endswith("broken") and "bad batch of" in kept[0]["message"]
    assert record.extra["hook_errors_dropped"]["total"] == calls
    stored = (await executor.store()).get(record.id)
    assert len(stored.hook_errors) == KEPT_ERRORS


async def test_a_batch_hook_failing_on_the_terminal_event_is_in_the_saved_record(
    executor: Executor, script: Script
) -> None:
    finished: list[str] = []

    def on_done(batch: EventBatch) -> None:
        finished.append(batch[0].run.status)
        raise RuntimeError("cannot archive")

    executor.on_batch("done", on_done)
    record = await executor.run(flood(script, n=3))
    assert finished == ["COMPLETED"]  # the record was final when the hook ran
    assert [(e["event"], e["message"]) for e in record.hook_errors] == [("done", "cannot archive")]
    stored = (await executor.store()).get(record.id)
    assert [e["message"] for e in stored.hook_errors] == ["cannot archive"]


async def test_an_async_batch_hook_is_cut_by_hook_timeout(tmp_path: Path, script: Script) -> None:
    later: list[int] = []

    async def hangs_on_first(batch: EventBatch) -> None:
        if batch[0].data == 0:
            await anyio.sleep_forever()

    async with Executor(db=tmp_path / "runs.db", hook_timeout=0.3) as executor:
        executor.on_batch("tick", hangs_on_first)
        executor.on_batch("tick", lambda batch: later.extend(event.data for event in batch))
        record = await executor.run(flood(script, n=5))
    assert record.status == "COMPLETED" and later == list(range(5))
    assert [(e["event"], e["type"]) for e in record.hook_errors] == [("tick", "TimeoutError")]


class _Tripwire(io.StringIO):
    """A log stream that says when a ``hook_blocking`` line has been written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if '"event": "hook_blocking"' in text:
            self.seen.set()
        return written


async def test_a_sync_batch_hook_blocking_the_loop_is_reported_by_the_watchdog(
    tmp_path: Path, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = _Tripwire()
    monkeypatch.setattr(sys, "stderr", logged)
    monkeypatch.setattr(logs, "_logger", logs._logger)
    logs.configure(renderer="json")

    def block_until_reported(batch: EventBatch) -> None:
        # Blocks the loop's thread until the watchdog thread has logged it (it cannot be cut).
        assert logged.seen.wait(timeout=60)

    async with Executor(db=tmp_path / "runs.db", hook_timeout=0.2) as executor:
        executor.on_batch("done", block_until_reported)
        record = await executor.run(flood(script, n=3))
        stored = (await executor.store()).get(record.id)
    for rec in (record, stored):
        assert [(e["event"], e["type"]) for e in rec.hook_errors] == [("done", "TimeoutError")]
        assert "past hook_timeout 0.2 s" in rec.hook_errors[0]["message"]
    [blocking] = [e for e in log_events(logged.getvalue()) if e["event"] == "hook_blocking"]
    assert blocking["run_id"] == record.id and "block_until_reported" in blocking["hook"]


async def test_a_batch_hook_added_by_a_hook_applies_from_the_next_message(
    executor: Executor, script: Script
) -> None:
    seen: list[int] = []

    def adds_batch_hook(event: Event) -> None:
        if event.data == 10:
            event.run.on_batch("tick", lambda batch: seen.extend(e.data for e in batch))

    executor.on("tick", adds_batch_hook)
    await executor.run(flood(script))
    assert seen == list(range(11, TICKS))


async def test_batch_hooks_fire_on_a_run_whose_messages_are_read(
    executor: Executor, script: Script
) -> None:
    batched: list[str] = []
    executor.on_batch("*", lambda batch: batched.extend(event.name for event in batch))
    async with executor.start(flood(script, n=50)) as run:
        read = [message.sig async for message in run.messages()]
    assert batched == read
    assert read.count("tick") == 50 and read[-1] == "done"


async def test_a_batch_hook_sees_the_cancelled_end_of_a_cancelled_caller(
    executor: Executor, script: Script
) -> None:
    ended: list[tuple[str, str]] = []
    ready = anyio.Event()

    argv = script("import time\nprint('ready', flush=True)\ntime.sleep(300)\n")
    executor.on("log", lambda event: ready.set())
    executor.on_batch(
        "cancelled", lambda batch: ended.extend((e.name, e.run.status) for e in batch)
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: executor.run(argv, grace=1))
        await ready.wait()
        tg.cancel_scope.cancel()
    assert ended == [("cancelled", "CANCELLED")]


def test_registering_checks_the_hook_and_removing_an_unknown_one_fails() -> None:
    registry = HookRegistry()
    with pytest.raises(TypeError, match="must be callable"):
        registry.add_batch("tick", "not a function")  # type: ignore[arg-type]

    def fn(batch: EventBatch) -> None:
        pass

    registry.add_batch("tick", fn)
    assert registry.wants("tick") and not registry.wants("other") and registry
    with pytest.raises(ValueError, match="not registered as a batch hook for 'other'"):
        registry.remove_batch("other", fn)
    registry.remove_batch("tick", fn)
    assert not registry.wants("tick") and not registry


async def test_on_batch_works_as_a_decorator(executor: Executor, script: Script) -> None:
    seen: list[int] = []

    @executor.on_batch("tick")
    def collect(batch: EventBatch) -> None:
        seen.extend(event.data for event in batch)

    await executor.run(flood(script, n=20))
    assert seen == list(range(20))
