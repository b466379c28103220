"""Readiness: one epoll set per event loop, with real pipes, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
import uvloop

from lute_async.communicators.readiness import readiness


def both_ready(
    first: tuple[int, Callable[[int], None]], second: tuple[int, Callable[[int], None]]
) -> None:
    """Watch two pipes' read ends and make both readable before the loop next looks."""
    watching = readiness()
    for read_fd, callback in (first, second):
        watching.watch(read_fd, callback)
    for read_fd, _ in (first, second):
        os.write(PIPES[read_fd], b"x")


#: Each test pipe's write end by its read end.
PIPES: dict[int, int] = {}


def pipe() -> int:
    read_fd, write_fd = os.pipe()
    PIPES[read_fd] = write_fd
    return read_fd


def close(*read_fds: int) -> None:
    for read_fd in read_fds:
        os.close(read_fd)
        os.close(PIPES.pop(read_fd))


def run_on(loop_kind: str, main: object) -> None:
    runner = uvloop.run if loop_kind == "uvloop" else asyncio.run
    runner(main)  # type: ignore[arg-type]


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_ready_pipe_calls_its_callback_until_unwatched(loop_kind: str) -> None:
    async def main() -> None:
        watching = readiness()
        assert readiness() is watching  # one per loop
        read_fd, write_fd = os.pipe()
        calls: list[bytes] = []
        called = asyncio.Event()

        def readable(_: int) -> None:
            calls.append(os.read(read_fd, 10))
            called.set()

        try:
            watching.watch(read_fd, readable)
            assert watching.watching(read_fd)
            os.write(write_fd, b"one")
            await called.wait()
            watching.unwatch(read_fd)
            assert not watching.watching(read_fd)
            watching.unwatch(read_fd)  # unwatching twice is nothing
        finally:
            os.close(read_fd)
            os.close(write_fd)
        assert calls == [b"one"]

    run_on(loop_kind, main())


def test_a_callback_unwatched_by_an_earlier_one_in_the_same_batch_is_not_called() -> None:
    async def main() -> None:
        watching = readiness()
        first_r, second_r = pipe(), pipe()
        calls: list[str] = []
        done = asyncio.Event()

        def first(_: int) -> None:
            os.read(first_r, 10)
            calls.append("first")
            watching.unwatch(first_r)
            watching.unwatch(second_r)  # ready in this same batch: must not be called now
            done.set()

        def second(_: int) -> None:
            os.read(second_r, 10)
            calls.append("second")
            watching.unwatch(second_r)
            watching.unwatch(first_r)
            done.set()

        try:
            both_ready((first_r, first), (second_r, second))
            await done.wait()
            assert len(calls) == 1
        finally:
            close(first_r, second_r)

    asyncio.run(main())


def test_a_raising_callback_goes_to_the_loops_handler_and_the_others_still_run() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[BaseException] = []
        handled = asyncio.Event()

        def handler(_: object, context: dict[str, object]) -> None:
            reported.append(context["exception"])  # type: ignore[arg-type]
            handled.set()

        loop.set_exception_handler(handler)
        watching = readiness()
        bad_r, good_r = pipe(), pipe()
        good_called = asyncio.Event()

        def bad(_: int) -> None:
            watching.unwatch(bad_r)
            raise RuntimeError("broken callback")

        def good(_: int) -> None:
            os.read(good_r, 10)
            watching.unwatch(good_r)
            good_called.set()

        try:
            both_ready((bad_r, bad), (good_r, good))
            await good_called.wait()
            await handled.wait()
        finally:
            close(bad_r, good_r)
        assert [str(error) for error in reported] == ["broken callback"]

    asyncio.run(main())
