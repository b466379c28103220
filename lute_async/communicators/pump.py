"""Handing a connection's reads on as batches: decoded in slices of at most
:data:`~lute_async.communicators.base.BATCH_BYTES`, each sent into the run's stream in order
(a full stream blocks the reader), the hello read first within its time limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import anyio

from lute_async.communicators.base import BATCH_BYTES, Batch, FrameConnection
from lute_async.communicators.stream import BatchSender
from lute_async.errors import HandshakeError, ProtocolError

__all__ = ["pump_connection", "read_batches", "send_batch"]


async def send_batch(send: BatchSender[Batch], batch: Batch) -> None:
    """Hand ``batch`` to the dispatcher, then yield so it runs before this reader reads on.

    ``send`` yields *before* handing over, which costs an event-loop turn per message at low
    rates; handing over first and then yielding keeps order and back-pressure (a full stream
    still blocks in ``send``) and lets the hooks run in the very next turn.
    """
    try:
        send.send_nowait(batch)
    except anyio.WouldBlock:
        await send.send(batch)
    else:
        await anyio.lowlevel.checkpoint()


def read_batches(view: memoryview, parser: FrameConnection) -> Iterator[Batch]:
    """Decode one read in batches of at most :data:`BATCH_BYTES`; a fatal ProtocolError is
    raised after the batches before it."""
    for start in range(0, len(view), BATCH_BYTES):
        if batch := parser.feed(view[start : start + BATCH_BYTES]):
            yield batch
        parser.raise_fatal()


async def _deliver(view: memoryview, parser: FrameConnection, send: BatchSender[Batch]) -> None:
    for batch in read_batches(view, parser):
        await send_batch(send, batch)


async def pump_connection(
    receive: Callable[[], Awaitable[bytes]],
    parser: FrameConnection,
    send: BatchSender[Batch],
    *,
    hello_timeout: float | None = None,
    on_hello: Callable[[], None] | None = None,
    greet: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Send ``greet`` (the TCP challenge), then read chunks with ``receive`` (b"" at EOF) into
    ``parser`` until EOF or a fatal protocol error, reported and ending this connection only.
    A connection not done with its hello (greeting included) within ``hello_timeout`` seconds
    is dropped (slow or silent peers hold nothing); ``on_hello`` is called once it is."""
    try:
        # Only the hello is timed: handing on what came with it may wait on back-pressure
        # from the run's other channels. The hello fits in the first BATCH_BYTES of a read
        # (the hello decoder's limit is smaller); the rest is handed on like any later read.
        batch: Batch = []
        rest = memoryview(b"")
        with anyio.fail_after(hello_timeout):
            if greet is not None:
                await greet()
            while parser.hello is None and parser.fatal is None:
                chunk = await receive()
                if not chunk:
                    parser.finish()
                    return
                view = memoryview(chunk)
                batch, rest = parser.feed(view[:BATCH_BYTES]), view[BATCH_BYTES:]
        if parser.hello is not None and on_hello is not None:
            on_hello()
        if batch:
            await send.send(batch)
        parser.raise_fatal()
        await _deliver(rest, parser, send)
        while chunk := await receive():
            await _deliver(memoryview(chunk), parser, send)
    except TimeoutError:
        parser.channel.protocol_error(
            parser.source,
            parser.conn,
            HandshakeError(f"no hello frame within {hello_timeout} s; connection dropped"),
        )
        return
    except ProtocolError as exc:
        parser.channel.protocol_error(parser.source, parser.conn, exc)
        return
    parser.finish()
