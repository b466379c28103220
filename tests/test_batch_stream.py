"""BatchStream: a run's bounded batch stream keeps order, back-pressures, ends and breaks as
anyio's memory object stream did."""

from __future__ import annotations

import anyio
import pytest

from lute_async.communicators.stream import BatchStream


async def test_items_come_out_in_order_and_iteration_ends_after_close() -> None:
    stream = BatchStream[int](2)
    received: list[int] = []

    async def consume() -> None:
        async for item in stream:
            received.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for item in range(50):  # more than the buffer: senders wait for room
            await stream.send(item)
        stream.close()
    assert received == list(range(50))


async def test_a_full_stream_refuses_send_nowait_and_blocks_send_until_a_receive() -> None:
    stream = BatchStream[str](1)
    stream.send_nowait("a")
    with pytest.raises(anyio.WouldBlock):
        stream.send_nowait("b")
    sent: list[str] = []

    async def send(item: str) -> None:
        await stream.send(item)
        sent.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "b")
        tg.start_soon(send, "c")
        await anyio.wait_all_tasks_blocked()
        assert sent == []  # both wait for room
        with pytest.raises(anyio.WouldBlock):  # a newcomer does not overtake them
            stream.send_nowait("d")
        assert [await stream.receive() for _ in range(3)] == ["a", "b", "c"]
    assert sent == ["b", "c"]


async def test_a_cancelled_send_that_waited_sends_nothing() -> None:
    stream = BatchStream[str](1)
    stream.send_nowait("kept")
    with anyio.move_on_after(0) as scope:
        await stream.send("dropped")
    assert scope.cancelled_caught
    stream.close()
    assert [item async for item in stream] == ["kept"]


async def test_a_closed_receiver_breaks_waiting_and_later_sends() -> None:
    stream = BatchStream[int](1)
    stream.send_nowait(1)
    failures: list[BaseException] = []

    async def send() -> None:
        try:
            await stream.send(2)
        except anyio.BrokenResourceError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        await anyio.wait_all_tasks_blocked()
        stream.close_receiver()
    assert len(failures) == 1
    with pytest.raises(anyio.BrokenResourceError):
        stream.send_nowait(3)


async def test_a_send_after_close_is_refused_and_receive_ends() -> None:
    stream = BatchStream[int](4)
    stream.close()
    with pytest.raises(anyio.ClosedResourceError):
        stream.send_nowait(1)
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()
