"""Wire protocol v1: event names, Message and the msgpack frame codec.

Frames are msgpack maps, self-delimiting, decoded by msgpack's streaming ``Unpacker`` with a
bounded buffer. The first frame of every connection is a hello; later frames are messages::

    hello:   {"v": 1, "run": RUN_ID, "pid": PID, "rank": R, "secret": S}
    message: {"sig": EVENT, "seq": N, "ts": FLOAT, "data": ANY}

Nothing here ever unpickles: msgpack decodes to plain data only (ext types are refused).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from lute_async.errors import FrameTooLarge, HandshakeError, ProtocolError
from lute_async.status import TaskStatus as TaskStatus  # re-exported: defined in status.py
from lute_async.wire import PROTOCOL_VERSION

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024


class EventName(enum.StrEnum):
    """Names of the events the executor itself knows; tasks may emit any other name too."""

    QUEUED = "queued"
    STARTED = "started"
    LOG = "log"
    PROGRESS = "progress"
    RESULT = "result"
    ERROR = "error"
    STOPPED = "stopped"
    CONTINUED = "continued"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    #: An attempt of a run with a ``retry`` ended and another follows (not a terminal event).
    RETRYING = "retrying"
    #: The scheduler put the run's job back in its queue (SLURM requeue, preemption).
    REQUEUED = "requeued"


TERMINAL_EVENTS: Final = frozenset(
    {EventName.DONE, EventName.FAILED, EventName.CANCELLED, EventName.TIMED_OUT}
)
#: Events only the executor may fire; a task sending one of these breaks the protocol.
EXECUTOR_EVENTS: Final = TERMINAL_EVENTS | {
    EventName.QUEUED,
    EventName.STOPPED,
    EventName.CONTINUED,
    EventName.RETRYING,
    EventName.REQUEUED,
}


#: The status each terminal event leaves a run in.
TERMINAL_STATUS: Final = {
    EventName.DONE: TaskStatus.COMPLETED,
    EventName.FAILED: TaskStatus.FAILED,
    EventName.CANCELLED: TaskStatus.CANCELLED,
    EventName.TIMED_OUT: TaskStatus.TIMEDOUT,
}


@dataclass(slots=True)
class Message:
    """One decoded message of a run's stream, tagged with where it came from."""

    sig: str
    data: Any = None
    seq: int = 0
    ts: float = field(default_factory=time.time)
    rank: int | None = None
    pid: int | None = None
    source: str = "executor"
    """``pipe``, ``socket``, ``tcp``, ``stdout``, ``stderr`` or ``executor``."""
    conn: int = 0
    """Connection number within the run; ``seq`` increases per connection."""


@dataclass(slots=True, frozen=True)
class Hello:
    """The first frame of a connection: who is talking, for which run."""

    run: str
    pid: int
    rank: int | None
    secret: str | None


def encode(obj: Any) -> bytes:
    """Pack one frame (any msgpack-able value) to bytes."""
    return msgpack.packb(obj, use_bin_type=True)


def encode_hello(run: str, pid: int, rank: int | None = None, secret: str | None = None) -> bytes:
    """Pack a hello frame."""
    return encode({"v": PROTOCOL_VERSION, "run": run, "pid": pid, "rank": rank, "secret": secret})


def encode_message(sig: str, data: Any, seq: int, ts: float | None = None) -> bytes:
    """Pack a message frame."""
    return encode({"sig": sig, "seq": seq, "ts": time.time() if ts is None else ts, "data": data})


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack ext type {code} is not allowed on the wire")


#: A connection decoder's starting buffer: a few 16 KiB batches of frames.
DECODER_BUFFER = 64 * 1024


def frame_unpacker(max_frame: int) -> msgpack.Unpacker:
    """The Unpacker of a connection's frames, bounded by ``max_frame`` bytes."""
    return msgpack.Unpacker(
        raw=False,
        use_list=True,
        strict_map_key=False,
        max_buffer_size=max_frame,
        # The buffer starts at read_size (1 MiB by default) and its tail walks all of it,
        # so every connection came to hold 1 MiB resident; it still grows for a big frame.
        read_size=min(max_frame, DECODER_BUFFER),
        ext_hook=_refuse_ext,
    )


class FrameDecoder:
    """Incremental decoder of a byte stream of frames, bounded by ``max_frame`` bytes.

    Feed it chunks as they arrive; it yields each complete frame. Errors raise
    :class:`ProtocolError` (or :class:`FrameTooLarge`) with the stream offset; after a
    byte-level error the stream cannot be resynchronised and the connection must be closed.
    """

    __slots__ = ("_consumed", "_fed", "_unpacker", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._fed = 0
        # Bytes up to the end of the last complete frame. Unpacker.tell() alone is not that:
        # while a frame is incomplete it counts the part already parsed.
        self._consumed = 0
        self._unpacker = frame_unpacker(max_frame)

    @property
    def offset(self) -> int:
        """Bytes of the stream consumed by complete frames so far."""
        return self._consumed

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return self._fed - self._consumed

    def feed(self, chunk: bytes | memoryview) -> Iterator[Any]:
        """Add ``chunk`` to the stream and yield every frame it completes."""
        frames, error = self.feed_batch(chunk)
        yield from frames
        if error is not None:
            raise error

    def feed_batch(self, chunk: bytes | memoryview) -> tuple[list[Any], ProtocolError | None]:
        """Add ``chunk`` and return every frame it completes, plus the error that stopped
        decoding (None when there was none); frames before the error are returned with it."""
        unpacker = self._unpacker
        tell = unpacker.tell
        frames: list[Any] = []
        append = frames.append
        view = memoryview(chunk)
        while view:
            # Feed at most what the bounded buffer can take, so an oversized frame is
            # reported as such rather than as a BufferFull on an innocent chunk.
            room = self.max_frame - self.pending
            if room <= 0:
                return frames, self._too_large()
            part, view = view[:room], view[room:]
            try:
                unpacker.feed(part)
            except msgpack.BufferFull:
                return frames, self._too_large()
            self._fed += len(part)
            consumed = self._consumed
            try:
                for frame in unpacker:
                    append(frame)
                    consumed = tell()
            except ProtocolError as exc:
                return frames, ProtocolError(str(exc), offset=consumed)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                # FormatError, StackError, ExtraData, ValueError for exceeded limits, and
                # TypeError for unhashable map keys.
                message = f"undecodable bytes ({type(exc).__name__}: {exc})"
                return frames, ProtocolError(message, offset=consumed)
            finally:
                self._consumed = consumed
        return frames, None

    def _too_large(self) -> FrameTooLarge:
        return FrameTooLarge(
            f"frame larger than the {self.max_frame}-byte limit", offset=self.offset
        )


def parse_hello(frame: Any, *, run_id: str, secret: str | None, require_secret: bool) -> Hello:
    """Check a hello frame against the run it claims, returning who sent it."""
    import hmac  # only the executor side checks hellos; keep the task side's import light

    if not isinstance(frame, dict) or frame.get("v") != PROTOCOL_VERSION:
        if isinstance(frame, dict) and "secret" in frame:  # never echo a secret into logs
            frame = {**frame, "secret": "***"}
        raise HandshakeError(
            f"expected a protocol v{PROTOCOL_VERSION} hello frame, got {_brief(frame)}"
        )
    if frame.get("run") != run_id:
        raise HandshakeError(f"hello for unknown run {_brief(frame.get('run'))}")
    pid, rank, given = frame.get("pid"), frame.get("rank"), frame.get("secret")
    if not isinstance(pid, int) or not (rank is None or isinstance(rank, int)):
        raise HandshakeError("hello frame has a non-integer pid or rank")
    if require_secret or given is not None:
        if not isinstance(given, str) or secret is None:
            raise HandshakeError("hello frame has no secret")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise HandshakeError("hello frame has a wrong secret")
    return Hello(run=run_id, pid=pid, rank=rank, secret=None)


def parse_message(frame: Any) -> tuple[str, int, float, Any]:
    """Check a message frame's shape, returning ``(sig, seq, ts, data)``."""
    if type(frame) is dict:
        sig = frame.get("sig")
        seq = frame.get("seq")
        ts = frame.get("ts")
        if (
            type(sig) is str
            and sig
            and type(seq) is int
            and type(ts) in (float, int)
            and sig not in EXECUTOR_EVENTS
        ):
            return sig, seq, float(ts), frame.get("data")  # type: ignore[arg-type]
        if type(sig) is str and sig in EXECUTOR_EVENTS:
            raise ProtocolError(f"tasks may not send the executor's own event {sig!r}")
    raise ProtocolError(f"malformed message frame {_brief(frame)}")


def _brief(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
