"""The Communicator protocol and the pieces every kind shares: turning one connection's bytes
into Messages (handshake, frame decoding, validation, seq checks) and stdout/stderr into lines."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from lute_async.errors import HandshakeError, ProtocolError
from lute_async.messages import FrameDecoder, Hello, Message, parse_hello, parse_message

#: Read size for pipes and sockets: large enough to batch thousands of small frames.
READ_SIZE = 256 * 1024
#: Longest stdout/stderr line kept whole; longer ones are split into several log messages.
MAX_LINE = 1024 * 1024

Batch = list[Message]


@dataclass(slots=True)
class ChildSetup:
    """What a communicator gives the task process: environment variables and inherited fds."""

    env: dict[str, str] = field(default_factory=dict)
    pass_fds: tuple[int, ...] = ()
    stdout: int | None = None
    stderr: int | None = None


class RunChannel:
    """A run's side of the multiplexed stream, shared by all its communicators.

    Readers send batches of messages in order; ``protocol_error`` reports a bad frame or
    connection without touching any other message.
    """

    def __init__(
        self,
        run_id: str,
        secret: str,
        send: MemoryObjectSendStream[Batch],
        *,
        max_frame: int,
        on_protocol_error: Callable[[str, int, ProtocolError], None],
        on_output: Callable[[int], bool] | None = None,
    ) -> None:
        self.run_id = run_id
        self.secret = secret
        self.max_frame = max_frame
        self.send = send
        self._on_protocol_error = on_protocol_error
        self.on_output = on_output
        self._connections = 0

    def next_conn(self) -> int:
        """A new connection number for this run."""
        self._connections += 1
        return self._connections

    def protocol_error(self, source: str, conn: int, error: ProtocolError) -> None:
        self._on_protocol_error(source, conn, error)


class FrameConnection:
    """Decodes one connection's frames: a hello first, then message frames."""

    __slots__ = ("_decoder", "_last_seq", "channel", "conn", "hello", "require_secret", "source")

    def __init__(self, channel: RunChannel, source: str, *, require_secret: bool) -> None:
        self.channel = channel
        self.source = source
        self.conn = channel.next_conn()
        self.require_secret = require_secret
        self.hello: Hello | None = None
        self._decoder = FrameDecoder(channel.max_frame)
        self._last_seq = 0

    def feed(self, chunk: bytes) -> Batch:
        """Decode ``chunk``; bad frames are reported and skipped, fatal errors raise."""
        batch: Batch = []
        channel = self.channel
        for frame in self._decoder.feed(chunk):
            if type(frame) is dict and "v" in frame:
                # A hello: first on every connection; a later one (a helper process sharing
                # the pipe) re-identifies the sender.
                self.hello = parse_hello(
                    frame,
                    run_id=channel.run_id,
                    secret=channel.secret,
                    require_secret=self.require_secret,
                )
                self._last_seq = 0
                continue
            hello = self.hello
            if hello is None:
                raise HandshakeError("first frame was not a hello")
            try:
                sig, seq, ts, data = parse_message(frame)
            except ProtocolError as exc:
                channel.protocol_error(self.source, self.conn, exc)
                continue
            if seq != self._last_seq + 1:
                channel.protocol_error(
                    self.source,
                    self.conn,
                    ProtocolError(f"seq jumped from {self._last_seq} to {seq}"),
                )
            self._last_seq = seq
            batch.append(Message(sig, data, seq, ts, hello.rank, hello.pid, self.source, self.conn))
        return batch

    def finish(self) -> None:
        """At end of stream: a partial frame left over means the sender died mid-message."""
        pending = self._decoder.pending
        if pending:
            self.channel.protocol_error(
                self.source,
                self.conn,
                ProtocolError(
                    f"connection ended inside a frame; {pending} bytes discarded",
                    offset=self._decoder.offset,
                ),
            )


class LineSplitter:
    """Splits a byte stream (stdout or stderr) into ``log`` messages, one per line."""

    __slots__ = ("_partial", "_seq", "conn", "source")

    def __init__(self, channel: RunChannel, source: str) -> None:
        self.source = source
        self.conn = channel.next_conn()
        self._partial = b""
        self._seq = 0

    def feed(self, chunk: bytes) -> Batch:
        data = self._partial + chunk if self._partial else chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        return self._messages(lines)

    def finish(self) -> Batch:
        rest, self._partial = self._partial, b""
        return self._messages([rest]) if rest else []

    def _messages(self, lines: list[bytes]) -> Batch:
        now = time.time()
        batch: Batch = []
        for raw in lines:
            self._seq += 1
            line = raw.decode("utf-8", "replace").rstrip("\r")
            data = {"message": line, "level": "info", "stream": self.source}
            batch.append(Message("log", data, self._seq, now, None, None, self.source, self.conn))
        return batch


async def send_batch(send: MemoryObjectSendStream[Batch], batch: Batch) -> None:
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


async def pump_connection(
    receive: Callable[[], Awaitable[bytes]],
    parser: FrameConnection,
    send: MemoryObjectSendStream[Batch],
    *,
    hello_timeout: float | None = None,
) -> None:
    """Read chunks with ``receive`` (b"" at EOF) into ``parser`` until EOF or a fatal protocol
    error, which is reported and ends this connection only. A connection that has not said
    hello within ``hello_timeout`` seconds is dropped (slow or silent peers hold nothing)."""
    try:
        if hello_timeout is not None:
            with anyio.fail_after(hello_timeout):
                while parser.hello is None:
                    chunk = await receive()
                    if not chunk:
                        parser.finish()
                        return
                    batch = parser.feed(chunk)
                    if batch:
                        await send.send(batch)
        while chunk := await receive():
            batch = parser.feed(chunk)
            if batch:
                await send_batch(send, batch)
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


class Communicator(Protocol):
    """One way for task processes to send frames to the executor.

    ``open`` prepares the channel and says what the child needs; ``serve`` reads until the
    process has ``exited`` and every connection has ended; ``describe`` says what it is for the
    record; ``aclose`` releases everything, also after a failed run.
    """

    kind: str

    async def open(self, channel: RunChannel) -> ChildSetup: ...

    def child_started(self) -> None:
        """Close the parent's copies of the ends the child now holds."""

    async def serve(self, exited: anyio.Event) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...
