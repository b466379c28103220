"""CallbackReads: a pipe read in the event loop's reader callbacks, through a bounded stream.

Real pipes and the run's own BatchStream: every chunk arrives in order however small the
stream, reads pause while the stream is full (the writer is back-pressured), the readers are
drained only once everything is handed on, and a cancel or a gone receiver stops the reads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import anyio

from lute_async.communicators.base import Batch
from lute_async.communicators.callback_reads import CallbackReads
from lute_async.communicators.fdio import set_nonblocking
from lute_async.communicators.readers import Readers
from lute_async.communicators.readiness import readiness
from lute_async.communicators.stream import BatchStream
from lute_async.messages import Message


def as_batch(chunk: bytes | memoryview) -> tuple[list[Batch], bool]:
    """One batch per chunk: a message per byte, so order is checked byte by byte."""
    if not chunk:
        return [], False
    return [[Message("b", byte, 0, 0.0, None, 0) for byte in chunk]], True


@contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    set_nonblocking(read_fd)
    try:
        yield read_fd, write_fd
    finally:
        for fd in (read_fd, write_fd):
            with suppress(OSError):
                os.close(fd)


async def test_chunks_arrive_in_order_through_a_full_stream_and_drain_after_the_last() -> None:
    stream: BatchStream[Batch] = BatchStream(1)
    drained = asyncio.Event()
    payload = bytes(range(256)) * 4096  # 1 MiB: the pipe fills, the writer is held up
    got = bytearray()

    async def take_all() -> None:
        async for batch in stream:
            got.extend(message.data for message in batch)
            await anyio.lowlevel.checkpoint()  # a slow consumer: the stream stays full

    def write_all(fd: int) -> None:
        for start in range(0, len(payload), 4096):
            os.write(fd, payload[start : start + 4096])
        os.close(fd)

    read_fd, write_fd = os.pipe()  # the write end (blocking) is the thread's, closed by it
    set_nonblocking(read_fd)
    try:
        async with asyncio.TaskGroup() as group:
            taking = group.create_task(take_all())
            readers = Readers(group, drained.set)
            CallbackReads({read_fd: as_batch}, stream, readers)
            readers.exited()
            await asyncio.to_thread(write_all, write_fd)
            await drained.wait()  # after the last chunk was handed on
            stream.close()
            await taking
    finally:
        os.close(read_fd)
    assert bytes(got) == payload


async def test_reads_pause_while_the_stream_is_full() -> None:
    stream: BatchStream[Batch] = BatchStream(1)
    drained = asyncio.Event()
    decoded = asyncio.Event()

    def decode(chunk: bytes | memoryview) -> tuple[list[Batch], bool]:
        decoded.set()
        return as_batch(chunk)

    with pipe() as (read_fd, write_fd):
        async with asyncio.TaskGroup() as group:
            readers = Readers(group, drained.set)
            reads = CallbackReads({read_fd: decode}, stream, readers)
            for byte in b"ab":  # "a" fills the stream, "b" is held
                decoded.clear()
                os.write(write_fd, bytes([byte]))
                await decoded.wait()
            # Held: the pipe is no longer watched, so what is written now waits in it.
            assert not readiness().watching(read_fd)
            os.write(write_fd, b"c")
            taken = [await stream.receive() for _ in range(3)]
            assert [m.data for batch in taken for m in batch] == list(b"abc")
            reads.cancel()
        assert not drained.is_set()  # never told of an exit: the cancel only released


async def test_a_cancel_stops_the_reads_and_releases_the_readers() -> None:
    stream: BatchStream[Batch] = BatchStream(8)
    drained = asyncio.Event()
    with pipe() as (read_fd, _write_fd):
        async with asyncio.TaskGroup() as group:
            readers = Readers(group, drained.set)
            CallbackReads({read_fd: as_batch}, stream, readers)
            readers.exited()
            assert not drained.is_set()
            readers.cancel()
            assert drained.is_set()
            # Nothing watches the pipe any more: what is written now is never read.
            assert not readiness().watching(read_fd)


async def test_a_gone_receiver_stops_the_reads_without_an_error() -> None:
    stream: BatchStream[Batch] = BatchStream(8)
    drained = asyncio.Event()
    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        with pipe() as (read_fd, write_fd):
            async with asyncio.TaskGroup() as group:
                readers = Readers(group, drained.set)
                CallbackReads({read_fd: as_batch}, stream, readers)
                readers.exited()
                stream.close_receiver()
                os.write(write_fd, b"x")
                await drained.wait()  # the reads gave up and released the readers
    finally:
        loop.set_exception_handler(None)
    assert errors == []
