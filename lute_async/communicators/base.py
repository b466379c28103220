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
#: Bytes of a read decoded into one batch. The dispatcher handles (and frees) a batch before
#: the next is decoded, so a few hundred messages are alive at a time: too few for the garbage
#: collector to run, while thousands from one 256 KiB read cost it ~0.3-1 us a message.
BATCH_BYTES = 16 * 1024
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

    __slots__ = (
        "_decoder",
        "_good_sig",
        "_last_seq",
        "channel",
        "conn",
        "fatal",
        "hello",
        "require_secret",
        "source",
    )

    def __init__(self, channel: RunChannel, source: str, *, require_secret: bool) -> None:
        self.channel = channel
        self.source = source
        self.conn = channel.next_conn()
        self.require_secret = require_secret
        self.hello: Hello | None = None
        self._decoder = FrameDecoder(channel.max_frame)
        self._last_seq = 0
        #: The error that ended decoding, kept until the messages before it are delivered.
        self.fatal: ProtocolError | None = None
        # The last sig that passed every check: frames with an equal one skip the str, empty
        # and executor-event checks (msgpack decodes sig to a new str object every time).
        # Starts as an object equal to nothing a frame can hold.
        self._good_sig: object = object()

    def feed(self, chunk: bytes | memoryview) -> Batch:
        """Decode ``chunk``; bad frames are reported and skipped. A fatal error stops decoding:
        the messages before it are returned, and :meth:`raise_fatal` raises it afterwards;
        the stream cannot be resynchronised, so later chunks are ignored."""
        if self.fatal is not None:
            return []
        frames, error = self._decoder.feed_batch(chunk)
        batch: Batch = []
        append = batch.append
        last_seq, good_sig, source, conn = self._last_seq, self._good_sig, self.source, self.conn
        rank, pid = self._sender()
        new = object.__new__
        for frame in frames:
            # The usual frame, checked inline: a dict that is no hello, with an int seq, a
            # float ts and a sig equal to one that passed every check on this connection
            # (so a hello came first). Anything else takes _check_frame.
            try:
                sig = frame["sig"]
                seq = frame["seq"]
                ts = frame["ts"]
            except (KeyError, TypeError):
                sig = None
            if sig == good_sig and type(seq) is int and type(ts) is float and "v" not in frame:
                if seq != last_seq + 1:
                    self._seq_jump(last_seq, seq)
                last_seq = seq
                # Message(...) field by field: 40% cheaper than calling the dataclass on 3.11
                # (test_fast_path_messages_equal_constructed_ones checks every field is set).
                message = new(Message)
                message.sig = sig
                message.seq = seq
                message.ts = ts
                message.data = frame.get("data")
                message.rank = rank
                message.pid = pid
                message.source = source
                message.conn = conn
                append(message)
                continue
            self._last_seq = last_seq
            try:
                checked = self._check_frame(frame)
            except ProtocolError as exc:
                error = exc
                break
            if checked is not None:
                append(checked)
                good_sig = checked.sig
            last_seq = self._last_seq
            rank, pid = self._sender()
        self._last_seq = last_seq
        self._good_sig = good_sig
        self.fatal = error
        return batch

    def raise_fatal(self) -> None:
        """Raise the error that ended decoding, once what came before it is delivered."""
        if self.fatal is not None:
            raise self.fatal

    def _sender(self) -> tuple[int | None, int | None]:
        """The rank and pid the last hello named (None, None before the first)."""
        hello = self.hello
        return (hello.rank, hello.pid) if hello is not None else (None, None)

    def _check_frame(self, frame: Any) -> Message | None:
        """A hello, a message needing every check, or a malformed frame (reported, None)."""
        if type(frame) is dict and "v" in frame:
            # A hello: first on every connection; a later one (a helper process sharing
            # the pipe) re-identifies the sender.
            channel = self.channel
            self.hello = parse_hello(
                frame,
                run_id=channel.run_id,
                secret=channel.secret,
                require_secret=self.require_secret,
            )
            self._last_seq = 0
            return None
        hello = self.hello
        if hello is None:
            raise HandshakeError("first frame was not a hello")
        try:
            sig, seq, ts, data = parse_message(frame)
        except ProtocolError as exc:
            self.channel.protocol_error(self.source, self.conn, exc)
            return None
        if seq != self._last_seq + 1:
            self._seq_jump(self._last_seq, seq)
        self._last_seq = seq
        return Message(sig, data, seq, ts, hello.rank, hello.pid, self.source, self.conn)

    def _seq_jump(self, last_seq: int, seq: int) -> None:
        self.channel.protocol_error(
            self.source, self.conn, ProtocolError(f"seq jumped from {last_seq} to {seq}")
        )

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


class LineBuffer:
    """Cuts a byte stream into lines (without their newline); the last, unfinished line is
    held for the next chunk, and a line longer than :data:`MAX_LINE` is cut into pieces."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._partial + chunk if self._partial else chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        return lines

    def finish(self) -> list[bytes]:
        """At end of stream: the unfinished last line, if any."""
        rest, self._partial = self._partial, b""
        return [rest] if rest else []


def line_text(raw: bytes) -> str:
    """One output line as text: invalid UTF-8 replaced, a CRLF's CR dropped."""
    return raw.decode("utf-8", "replace").rstrip("\r")


class LineSplitter:
    """Splits a byte stream (stdout or stderr) into ``log`` messages, one per line."""

    __slots__ = ("_lines", "_seq", "conn", "source")

    def __init__(self, channel: RunChannel, source: str) -> None:
        self.source = source
        self.conn = channel.next_conn()
        self._lines = LineBuffer()
        self._seq = 0

    def feed(self, chunk: bytes) -> Batch:
        return self._messages(self._lines.feed(chunk))

    def finish(self) -> Batch:
        return self._messages(self._lines.finish())

    def _messages(self, lines: list[bytes]) -> Batch:
        now = time.time()
        batch: Batch = []
        for raw in lines:
            self._seq += 1
            data = {"message": line_text(raw), "level": "info", "stream": self.source}
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
            # Only the hello is timed: handing on what came with it may wait on back-pressure
            # from the run's other channels for as long as the dispatcher needs.
            batch = []
            with anyio.fail_after(hello_timeout):
                while parser.hello is None and parser.fatal is None:
                    chunk = await receive()
                    if not chunk:
                        parser.finish()
                        return
                    batch = parser.feed(chunk)
            if batch:
                await send.send(batch)
            parser.raise_fatal()
        while chunk := await receive():
            view = memoryview(chunk)
            for start in range(0, len(view), BATCH_BYTES):
                batch = parser.feed(view[start : start + BATCH_BYTES])
                if batch:
                    await send_batch(send, batch)
                parser.raise_fatal()
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
