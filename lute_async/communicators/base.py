"""The Communicator protocol and the pieces every kind shares: turning one connection's bytes
into Messages (handshake, frame decoding, validation, seq checks); stdout/stderr into lines
lives in :mod:`lute_async.communicators.lines` (re-exported here)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from lute_async.communicators.bounds import (
    CONTAINERS,
    HELLO_BUFFER,
    MAX_DEPTH,
    HelloDecoder,
    data_too_deep,
)
from lute_async.communicators.lines import MAX_LINE, LineBuffer, LineSplitter, line_text
from lute_async.communicators.stream import BatchSender
from lute_async.communicators.typed import Frame, TypedFrameDecoder
from lute_async.error_budget import KEPT_ERRORS, ErrorBudget
from lute_async.errors import HandshakeError, ProtocolError
from lute_async.messages import Hello, Message, parse_hello, parse_message

#: Read size for pipes and sockets: large enough to batch thousands of small frames.
READ_SIZE = 256 * 1024
#: Bytes of a read decoded into one batch. The dispatcher frees a batch before the next is
#: decoded, so a few hundred messages are alive at a time: too few for the garbage collector
#: to run, while thousands from one 256 KiB read cost it ~0.3-1 us a message.
BATCH_BYTES = 16 * 1024
#: Connections one run may hold open at once (every rank's reporter, helpers): a task that
#: leaks connections is refused more at this many, before it can take all of the executor's
#: file descriptors from the other runs.
MAX_RUN_CONNECTIONS = 512

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
    connection without touching any other message: the first ``kept_errors`` go to
    ``on_protocol_error``, the rest are counted in :attr:`error_log`. Listeners hold at most
    ``max_connections`` connections of the run open at once.
    """

    def __init__(
        self,
        run_id: str,
        secret: str,
        send: BatchSender[Batch],
        *,
        max_frame: int,
        on_protocol_error: Callable[[str, int, ProtocolError], None],
        on_output: Callable[[int], bool] | None = None,
        max_connections: int = MAX_RUN_CONNECTIONS,
        kept_errors: int = KEPT_ERRORS,
    ) -> None:
        self.run_id = run_id
        self.secret = secret
        self.max_frame = max_frame
        self.send = send
        self._on_protocol_error = on_protocol_error
        self.on_output = on_output
        self.max_connections = max_connections
        self.error_log = ErrorBudget("protocol_errors", run_id, kept_errors)
        self._connections = 0
        self._open_connections = 0

    def next_conn(self) -> int:
        """A new connection number for this run."""
        self._connections += 1
        return self._connections

    def connection_opened(self) -> bool:
        """Count a new connection open; False (nothing counted) when the run is at
        ``max_connections`` and it must be closed."""
        if self._open_connections >= self.max_connections:
            return False
        self._open_connections += 1
        return True

    def connection_closed(self) -> None:
        self._open_connections -= 1

    def protocol_error(self, source: str, conn: int, error: ProtocolError) -> None:
        if self.error_log.add(type(error).__name__, last_source=source, last_error=str(error)):
            self._on_protocol_error(source, conn, error)


class FrameConnection:
    """Decodes one connection's frames: a hello first, then message frames. Hellos are
    checked by ``check_hello`` (the TCP challenge's), by default by :func:`parse_hello`."""

    __slots__ = (
        "_check_hello",
        "_decoder",
        "_good_sig",
        "_greeting",
        "_last_seq",
        "channel",
        "conn",
        "fatal",
        "hello",
        "source",
    )

    def __init__(
        self,
        channel: RunChannel,
        source: str,
        *,
        require_secret: bool,
        check_hello: Callable[[Any], Hello] | None = None,
    ) -> None:
        self.channel = channel
        self.source = source
        self.conn = channel.next_conn()
        self.hello: Hello | None = None
        self._check_hello = check_hello or partial(
            parse_hello, run_id=channel.run_id, secret=channel.secret, require_secret=require_secret
        )
        # Made once the hello is in (most commands never write a frame): its Unpacker costs
        # a run more than the hello decoder does.
        self._decoder: TypedFrameDecoder | None = None
        # The first frame is decoded within a hello's small limits; None once it has been.
        self._greeting: HelloDecoder | None = HelloDecoder(min(HELLO_BUFFER, channel.max_frame))
        self._last_seq = 0
        #: The error that ended decoding, kept until the messages before it are delivered.
        self.fatal: ProtocolError | None = None
        # The last sig that passed every check (at first, an object equal to nothing a frame
        # holds): frames with an equal one skip the str, empty and executor-event checks.
        self._good_sig: Any = object()

    def feed(self, chunk: bytes | memoryview) -> Batch:
        """Decode ``chunk``; bad frames are reported and skipped. A fatal error stops decoding:
        the messages before it are returned, and :meth:`raise_fatal` raises it afterwards;
        the stream cannot be resynchronised, so later chunks are ignored."""
        if self.fatal is not None:
            return []
        if self._greeting is not None:
            try:
                rest = self._greet(chunk)
            except ProtocolError as exc:
                self.fatal = exc
                return []
            if not rest:
                return []
            chunk = rest
        decoder = self._decoder
        assert decoder is not None  # made with the hello
        frames, error = decoder.feed_batch(chunk)
        scalar = decoder.scalar_data  # all Frames, none with data to check the depth of
        batch: Batch = []
        append = batch.append
        last_seq, source, conn, good_sig = self._last_seq, self.source, self.conn, self._good_sig
        rank, pid = self._sender()
        new = object.__new__
        containers, too_deep = CONTAINERS, data_too_deep
        for frame in frames:
            # The usual frame, checked inline: one decoded typed (a Frame: a str sig, an int
            # seq, a float ts, data, nothing else) with a sig equal to one that passed every
            # check on this connection (so a hello came first). Anything else: _check_frame.
            if (scalar or type(frame) is Frame) and frame.sig == good_sig:
                seq = frame.seq
                if seq != last_seq + 1:
                    self._seq_jump(last_seq, seq)
                last_seq = seq
                # Message(...) field by field: 40% cheaper than calling the dataclass on 3.11
                # (test_fast_path_messages_equal_constructed_ones checks every field is set).
                message = new(Message)
                message.sig = good_sig  # the same object for all: one route lookup each run
                message.seq = seq
                message.ts = frame.ts
                data = message.data = frame.data
                if not scalar and type(data) in containers and too_deep(data):
                    error = self._too_deep()
                    break
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

    def _greet(self, chunk: bytes | memoryview) -> bytes:
        """Decode the first frame (which must be the hello) within the hello limits; the bytes
        after it, b"" while it is incomplete."""
        assert self._greeting is not None
        greeted = self._greeting.feed(chunk)
        if greeted is None:
            return b""
        self._greeting = None
        decoder = self._decoder = TypedFrameDecoder(self.channel.max_frame)
        frame, hello_bytes, rest = greeted
        self._check_frame(frame)  # raises unless it is a valid hello
        # The frame decoder's offsets count from the start of the stream, hello included.
        decoder.begin_after(len(hello_bytes))
        return rest

    def _too_deep(self) -> ProtocolError:
        offset = self._decoder.offset if self._decoder is not None else 0
        return ProtocolError(f"message data nested deeper than {MAX_DEPTH} levels", offset=offset)

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
        if type(frame) is Frame:
            frame = frame.as_dict()
        if type(frame) is dict and "v" in frame:
            # A hello: first on every connection; a later one (a helper process sharing
            # the pipe) re-identifies the sender.
            self.hello = self._check_hello(frame)
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
        if type(data) in CONTAINERS and data_too_deep(data):
            raise self._too_deep()
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
        greeting, decoder = self._greeting, self._decoder
        if decoder is not None:
            pending = decoder.pending
        else:
            pending = greeting.pending if greeting is not None else 0
        if pending:
            self.channel.protocol_error(
                self.source,
                self.conn,
                ProtocolError(
                    f"connection ended inside a frame; {pending} bytes discarded",
                    offset=decoder.offset if decoder is not None else 0,
                ),
            )


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

    async def serve(self, exited: asyncio.Event) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


__all__ = [
    "BATCH_BYTES",
    "MAX_LINE",
    "MAX_RUN_CONNECTIONS",
    "READ_SIZE",
    "Batch",
    "ChildSetup",
    "Communicator",
    "FrameConnection",
    "LineBuffer",
    "LineSplitter",
    "RunChannel",
    "line_text",
]
