"""Message frames decoded by msgspec straight into :class:`Frame` structs: no dict per frame.

:class:`TypedFrameDecoder` has :class:`~lute_async.messages.FrameDecoder`'s interface and
gives its results. An ``Unpacker`` that only skips finds where frames end, bounds the buffer
and reports byte-level errors; the complete frames of a read are then decoded by msgspec as one
array, about twice as fast as msgpack makes dicts of them. A run of frames msgspec refuses, or
decodes otherwise than msgpack (a hello, anything but ``{sig, seq, ts, data}`` of the expected
types, msgpack timestamps and other ext types, map keys that are not str or int), is decoded
again as FrameDecoder does, so the frames, their data and every error are FrameDecoder's.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgpack
import msgspec

from lute_async.communicators.bounds import MAX_DEPTH
from lute_async.errors import FrameTooLarge, ProtocolError
from lute_async.messages import FrameDecoder, frame_unpacker

#: Data msgspec and msgpack decode alike when no container holds it.
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
#: Map keys both decode alike.
_KEYS = frozenset({str, int})
#: A frame this large (pending) hands the connection to FrameDecoder: a big payload is not
#: worth copying, and it is rare enough not to need the speed.
BIG_FRAME = 1 << 20


class Frame(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A message frame that decoded as one: any other field (``v``: a hello) refuses it."""

    sig: str
    seq: int
    ts: float
    data: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The frame as msgpack decodes it (for the checks that take a dict)."""
        return {"sig": self.sig, "seq": self.seq, "ts": self.ts, "data": self.data}


def _no_ext(code: int, data: memoryview) -> Any:
    raise ValueError(f"ext type {code}")  # decoded again by msgpack, which refuses it


_FRAMES = msgspec.msgpack.Decoder(list[Frame], ext_hook=_no_ext)
_DATA = attrgetter("data")


def _alike(data: Any) -> bool:
    """True when ``data`` (decoded by msgspec) holds only what msgpack decodes the same way: no
    datetime (a msgpack timestamp), no tuple (an array used as a map key), only str and int
    keys. Data nested past :data:`MAX_DEPTH` is left to msgpack (and refused). Level by level,
    as :func:`~lute_async.communicators.bounds.nesting_exceeds` walks."""
    level = [data]
    for _ in range(MAX_DEPTH + 1):
        deeper: list[Any] = []
        for value in level:
            kind = type(value)
            if kind in _SCALARS:
                continue
            if kind is dict:
                if not _KEYS.issuperset(map(type, value)):
                    return False
                items = value.values()
            elif kind is list:
                items = value
            else:
                return False
            if not _SCALARS.issuperset(map(type, items)):
                deeper.extend(items)
        if not deeper:
            return True
        level = deeper
    return False


class TypedFrameDecoder:
    """Incremental decoder of a stream of frames, bounded by ``max_frame`` bytes, returning
    :class:`Frame` structs for message frames and dicts (or whatever a frame is) otherwise."""

    __slots__ = ("_base", "_consumed", "_fed", "_held", "_plain", "_skipper", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._fed = 0
        self._consumed = 0  # up to the end of the last complete frame handed out
        self._held = bytearray()  # the bytes from _consumed to _fed
        self._skipper = frame_unpacker(max_frame)
        self._plain: FrameDecoder | None = None  # once a big frame came: it decodes the rest
        self._base = 0  # the stream offset _plain started at

    @property
    def offset(self) -> int:
        """Bytes of the stream consumed by complete frames so far."""
        return self._consumed if self._plain is None else self._base + self._plain.offset

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return self._fed - self._consumed if self._plain is None else self._plain.pending

    def feed_batch(self, chunk: bytes | memoryview) -> tuple[list[Any], ProtocolError | None]:
        """Add ``chunk`` and return every frame it completes, plus the error that stopped
        decoding (None when there was none); frames before the error are returned with it."""
        if self._plain is not None:
            return self._plain_feed(chunk)
        skipper = self._skipper
        skip, tell = skipper.skip, skipper.tell
        ends: list[int] = []
        error: ProtocolError | None = None
        view = memoryview(chunk)
        while view:
            last = ends[-1] if ends else self._consumed
            room = self.max_frame - (self._fed - last)
            if room <= 0:
                error = self._too_large(last)
                break
            part, view = view[:room], view[room:]
            try:
                skipper.feed(part)
            except msgpack.BufferFull:
                error = self._too_large(last)
                break
            self._held += part
            self._fed += len(part)
            try:
                while True:
                    skip()
                    ends.append(tell())
            except msgpack.OutOfData:
                pass
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                last = ends[-1] if ends else self._consumed
                error = ProtocolError(
                    f"undecodable bytes ({type(exc).__name__}: {exc})", offset=last
                )
                break
        frames: list[Any] = []
        if ends:
            frames, decode_error = self._decode(ends)
            error = decode_error or error
        if error is None and self.pending > BIG_FRAME:
            self._hand_over()
        return frames, error

    def _plain_feed(self, chunk: bytes | memoryview) -> tuple[list[Any], ProtocolError | None]:
        """``_plain``'s frames, its error's offset counted in the whole stream's bytes."""
        assert self._plain is not None
        frames, error = self._plain.feed_batch(chunk)
        if error is not None and error.offset is not None:
            text = str(error).removesuffix(f" (at byte {error.offset})")
            error = type(error)(text, offset=self._base + error.offset)
        return frames, error

    def _hand_over(self) -> None:
        """Let a FrameDecoder decode the rest of the stream, from the frame under way."""
        plain = self._plain = FrameDecoder(self.max_frame)
        self._base = self._consumed
        held, self._held = self._held, bytearray()
        frames, error = plain.feed_batch(memoryview(held))
        assert not frames and error is None  # a part of one frame, within max_frame

    def _decode(self, ends: list[int]) -> tuple[list[Any], ProtocolError | None]:
        """The frames between ``_consumed`` and ``ends[-1]`` (``ends``: where each ends)."""
        start = self._consumed
        size = ends[-1] - start
        held = self._held
        segment = bytes(held[:size])
        del held[:size]
        self._consumed = ends[-1]
        header = b"\xdd" + len(ends).to_bytes(4, "big")  # an array of that many frames
        try:
            frames: list[Any] = _FRAMES.decode(header + segment)
        except Exception:  # whatever msgspec refuses, msgpack decodes again
            pass
        else:
            data = list(map(_DATA, frames))
            if _SCALARS.issuperset(map(type, data)) or all(map(_alike, data)):
                return frames, None
        return self._decode_as_dicts(segment, start)

    def _decode_as_dicts(
        self, segment: bytes, start: int
    ) -> tuple[list[Any], ProtocolError | None]:
        """Decode ``segment`` (complete frames from stream offset ``start``) as FrameDecoder
        does; an error names the offset of the end of the last good frame before it."""
        unpacker = frame_unpacker(self.max_frame)
        unpacker.feed(segment)
        frames: list[Any] = []
        consumed = start
        try:
            for frame in unpacker:
                frames.append(frame)
                consumed = start + unpacker.tell()
        except ProtocolError as exc:
            return frames, self._stopped(frames, consumed, ProtocolError(str(exc)))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            message = f"undecodable bytes ({type(exc).__name__}: {exc})"
            return frames, self._stopped(frames, consumed, ProtocolError(message))
        return frames, None

    def _stopped(self, frames: list[Any], consumed: int, error: ProtocolError) -> ProtocolError:
        """``error`` at ``consumed``, which decoding now ends at (the stream is not resumed)."""
        self._consumed = consumed
        return ProtocolError(str(error), offset=consumed)

    def _too_large(self, offset: int) -> FrameTooLarge:
        return FrameTooLarge(f"frame larger than the {self.max_frame}-byte limit", offset=offset)
