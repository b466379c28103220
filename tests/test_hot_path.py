"""The per-message fast paths: a connection's inline frame checks and the dispatcher's sync-hook
path behave exactly like the general code they skip."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest

from lute_async import Event, Executor
from lute_async.communicators.base import (
    BATCH_BYTES,
    Batch,
    FrameConnection,
    RunChannel,
)
from lute_async.communicators.pump import pump_connection
from lute_async.errors import ProtocolError
from lute_async.hooks.registry import Hook
from lute_async.messages import Message

RUN = "run-1"


def connection(errors: list[ProtocolError]) -> FrameConnection:
    channel = RunChannel(
        RUN,
        "secret",
        None,  # type: ignore[arg-type]  # FrameConnection.feed never sends
        max_frame=1 << 20,
        on_protocol_error=lambda source, conn, error: errors.append(error),
    )
    return FrameConnection(channel, "socket", require_secret=False)


def hello(pid: int, rank: int | None = None) -> bytes:
    return msgpack.packb({"v": 1, "run": RUN, "pid": pid, "rank": rank, "secret": None})


def frame(sig: str, seq: int, ts: Any = 1.5, data: Any = None) -> bytes:
    return msgpack.packb({"sig": sig, "seq": seq, "ts": ts, "data": data}, use_bin_type=True)


def test_fast_path_messages_equal_constructed_ones() -> None:
    errors: list[ProtocolError] = []
    parser = connection(errors)
    stream = hello(10, rank=2) + b"".join(frame("tick", i, data=[i]) for i in range(1, 5))
    batch = parser.feed(stream)
    expected = [Message("tick", [i], i, 1.5, 2, 10, "socket", parser.conn) for i in range(1, 5)]
    assert batch == expected  # dataclass equality reads every field: none may be left unset
    assert errors == []


def test_integer_ts_takes_the_full_check_and_arrives_as_a_float() -> None:
    parser = connection([])
    batch = parser.feed(hello(10) + frame("tick", 1) + frame("tick", 2, ts=7) + frame("tick", 3))
    assert [(m.seq, m.ts) for m in batch] == [(1, 1.5), (2, 7.0), (3, 1.5)]
    assert type(batch[1].ts) is float


def test_a_seq_jump_on_the_fast_path_is_reported_and_the_message_kept() -> None:
    errors: list[ProtocolError] = []
    parser = connection(errors)
    batch = parser.feed(hello(10) + frame("tick", 1) + frame("tick", 2) + frame("tick", 5))
    assert [m.seq for m in batch] == [1, 2, 5]
    assert [str(e) for e in errors] == ["seq jumped from 2 to 5"]


def test_an_executor_event_is_refused_after_valid_messages() -> None:
    errors: list[ProtocolError] = []
    parser = connection(errors)
    batch = parser.feed(hello(10) + frame("tick", 1) + frame("done", 2) + frame("tick", 3))
    assert [m.sig for m in batch] == ["tick", "tick"]
    assert [str(e) for e in errors] == [
        "tasks may not send the executor's own event 'done'",
        "seq jumped from 1 to 3",  # a refused frame does not count as seen
    ]


def test_a_later_hello_reidentifies_the_sender_of_the_messages_after_it() -> None:
    parser = connection([])
    batch = parser.feed(hello(10) + frame("tick", 1) + hello(11, rank=3) + frame("tick", 1))
    assert [(m.pid, m.rank, m.seq) for m in batch] == [(10, None, 1), (11, 3, 1)]


def test_a_frame_with_v_and_a_sig_is_taken_as_a_hello() -> None:
    parser = connection([])
    messages = parser.feed(hello(10) + frame("tick", 1))
    both = {"v": 1, "run": RUN, "pid": 12, "rank": None, "sig": "tick", "seq": 2, "ts": 1.5}
    messages += parser.feed(msgpack.packb(both) + frame("tick", 1))
    assert [(m.pid, m.seq) for m in messages] == [(10, 1), (12, 1)]


def test_messages_before_a_fatal_error_in_the_same_read_are_kept() -> None:
    errors: list[ProtocolError] = []
    parser = connection(errors)
    wrong = msgpack.packb({"v": 1, "run": "another-run", "pid": 11, "rank": None, "secret": None})
    oversized = msgpack.packb({"sig": "tick", "seq": 4, "ts": 1.5, "data": "x" * (2 << 20)})
    for fatal, why in ((wrong, "another-run"), (oversized, "limit")):
        parser = connection(errors)
        stream = hello(10) + b"".join(frame("tick", i) for i in range(1, 4)) + fatal
        batch = parser.feed(stream + frame("tick", 5))
        assert [m.seq for m in batch] == [1, 2, 3]
        with pytest.raises(ProtocolError, match=why):
            parser.raise_fatal()
        assert parser.feed(frame("tick", 6)) == []  # no resynchronising after a fatal error
        with pytest.raises(ProtocolError, match=why):
            parser.raise_fatal()


async def test_a_large_read_reaches_the_dispatcher_in_order_in_several_batches() -> None:
    stream = hello(10) + b"".join(frame("tick", i, data="x" * 60) for i in range(1, 2001))
    assert len(stream) > 4 * BATCH_BYTES
    chunks = [stream, b""]

    async def receive() -> bytes:
        return chunks.pop(0)

    send, receive_batches = anyio.create_memory_object_stream[Batch](math.inf)
    await pump_connection(receive, connection([]), send)
    send.close()
    batches = [batch async for batch in receive_batches]
    assert len(batches) > 4
    assert [m.seq for batch in batches for m in batch] == list(range(1, 2001))


TICKS = """
    from lute_async.task import Reporter
    with Reporter.connect() as report:
        for i in range(5):
            report.emit("tick", i)
"""


async def run_ticks(executor: Executor, script: Callable[[str], list[str]], *hooks: Hook) -> Any:
    """Run a task emitting ``tick`` 0..4 with ``hooks`` on ``tick``; return its record."""
    for hook in hooks:
        executor.on("tick", hook)
    return await executor.run(script(TICKS))


async def test_hooks_get_events_equal_to_constructed_ones(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    events: list[Event] = []
    await run_ticks(executor, script, events.append)
    assert [e.data for e in events] == list(range(5))
    for e in events:  # dataclass equality reads every field: none may be left unset
        assert e == Event("tick", e.run, e.message.data, e.message.rank, e.message.ts, e.message)
        assert e.message.pid not in (None, os.getpid()) and e.message.source == "pipe"


async def test_an_event_a_hook_keeps_is_never_refilled_for_a_later_message(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # The fast path fills one Event again for the next message while nothing else holds it:
    # the events a hook keeps (every other one here) must stay those of their own messages.
    kept: list[Event] = []
    seen: list[Any] = []

    def keeps_even_ones(event: Event) -> None:
        seen.append((event.data, event.message.seq, event.name))
        if event.data % 2 == 0:
            kept.append(event)

    await run_ticks(executor, script, keeps_even_ones)
    assert seen == [(i, i + 1, "tick") for i in range(5)]
    assert [e.data for e in kept] == [0, 2, 4]
    for e in kept:
        assert e == Event("tick", e.run, e.message.data, e.message.rank, e.message.ts, e.message)
        assert e.data == e.message.seq - 1
    assert len({id(e) for e in kept}) == 3


async def test_hooks_added_or_removed_by_a_hook_apply_from_the_next_message(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    seen: list[str] = []

    def changes_hooks(event: Event) -> None:
        seen.append(f"first {event.data}")
        if event.data == 1:
            event.run.on("tick", lambda e: seen.append(f"added {e.data}"))
        if event.data == 2:
            executor.hooks.remove("tick", changes_hooks)

    await run_ticks(executor, script, changes_hooks)
    assert seen == ["first 0", "first 1", "first 2", "added 2", "added 3", "added 4"]


async def test_a_coroutine_from_a_sync_hook_is_awaited_before_the_next_hook(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    calls: list[str] = []

    async def later(event: Event) -> None:
        await anyio.sleep(0.01)
        calls.append(f"awaited {event.data}")

    await run_ticks(executor, script, lambda e: later(e), lambda e: calls.append(f"next {e.data}"))
    assert calls == [f"{what} {i}" for i in range(5) for what in ("awaited", "next")]


async def test_a_raising_sync_hook_on_a_custom_event_is_recorded_and_the_rest_run(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    after: list[int] = []

    def broken(event: Event) -> None:
        if event.data == 3:
            raise ValueError("bad tick")

    record = await run_ticks(executor, script, broken, lambda e: after.append(e.data))
    assert record.status == "COMPLETED" and after == list(range(5))
    assert [(e["event"], e["type"], e["message"]) for e in record.hook_errors] == [
        ("tick", "ValueError", "bad tick")
    ]


async def test_a_lone_sync_hook_has_its_coroutines_awaited_and_its_errors_recorded(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # One hook takes a path of its own (called with no loop over the hook tuple).
    calls: list[str] = []

    async def later(data: int) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(f"awaited {data}")

    def lone(event: Event) -> Any:
        calls.append(f"called {event.data}")
        if event.data == 1:
            raise ValueError("bad tick")
        return later(event.data) if event.data == 3 else None

    record = await run_ticks(executor, script, lone)
    assert record.status == "COMPLETED"
    assert calls == ["called 0", "called 1", "called 2", "called 3", "awaited 3", "called 4"]
    assert [(e["event"], e["type"], e["message"]) for e in record.hook_errors] == [
        ("tick", "ValueError", "bad tick")
    ]


async def test_an_async_hook_on_a_custom_event_is_still_cut_by_hook_timeout(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    seen: list[int] = []

    async def hang_on_first(event: Event) -> None:
        if event.data == 0:
            await anyio.sleep_forever()

    async with Executor(db=tmp_path / "runs.db", hook_timeout=0.3) as executor:
        record = await run_ticks(executor, script, hang_on_first, lambda e: seen.append(e.data))
    assert record.status == "COMPLETED" and seen == list(range(5))
    assert [(e["event"], e["type"]) for e in record.hook_errors] == [("tick", "TimeoutError")]
