"""Message frames decoded by msgspec straight into :class:`Frame` structs: no dict per frame.

:class:`TypedFrameDecoder` has :class:`~lute_async.messages.FrameDecoder`'s interface and
gives its results. An ``Unpacker`` that only skips finds where frames end, bounds the buffer
and reports byte-level errors (or, for a Reporter's frames, their seqs say where: see the
class); the complete frames of a read are then decoded by msgspec as one array, about twice as
fast as msgpack makes dicts of them. A run of frames msgspec refuses, or
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


def _typed(buf: memoryview) -> tuple[list[Frame], bool] | None:
    """``buf`` (an array of frames) as Frames, and whether all their data are scalars; None
    when msgspec refuses it or decodes some frame's data otherwise than msgpack would."""
    try:
        frames: list[Frame] = _FRAMES.decode(buf)
    except Exception:  # whatever msgspec refuses, msgpack decodes again
        return None
    if _SCALARS.issuperset(map(type, map(_DATA, frames))):
        return frames, True
    if all(map(_alike, map(_DATA, frames))):
        return frames, False
    return None


def _array_header(count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big")  # an array of that many items


#: How a frame packed as a Reporter packs it begins: ``{"sig": SIG, "seq": SEQ, ...}``.
_FRAME_START = b"\x84\xa3sig"
_SEQ_KEY = b"\xa3seq"
#: The bytes after the type byte of an unsigned msgpack int, by type byte.
_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


def _seq_at(held: bytearray, at: int) -> int | None:
    """The seq of the frame that starts at ``at`` in ``held`` if it begins as a Reporter's
    (sig, then seq) and its seq is not cut off; else None."""
    end = len(held)
    pos = at + len(_FRAME_START)
    if pos >= end:
        return None
    kind = held[pos]
    if 0xA0 <= kind <= 0xBF:  # a str of up to 31 bytes
        pos += 1 + (kind & 0x1F)
    elif kind == 0xD9 and pos + 1 < end:  # of up to 255
        pos += 2 + held[pos + 1]
    else:
        return None
    if held[pos : pos + len(_SEQ_KEY)] != _SEQ_KEY:
        return None
    pos += len(_SEQ_KEY)
    if pos >= end:
        return None
    kind = held[pos]
    if kind < 0x80:
        return kind
    width = _UINT_WIDTH.get(kind)
    if width is None or pos + 1 + width > end:
        return None
    return int.from_bytes(held[pos + 1 : pos + 1 + width], "big")


#: Room kept before the held bytes for the array header they are decoded under (no copy).
_GAP = 5
#: The most feeds the fast path waits after missing (its wait doubles with each miss).
_MAX_WAIT = 256


class TypedFrameDecoder:
    """Incremental decoder of a stream of frames, bounded by ``max_frame`` bytes, returning
    :class:`Frame` structs for message frames and dicts (or whatever a frame is) otherwise.

    Where frames end is found by an ``Unpacker`` that skips them one by one, or, on the fast
    path, from their seqs: once a frame has decoded typed, the held bytes' last frame start
    (``{"sig": ..., "seq": N`` as a Reporter packs it) says that ``N - seq - 1`` frames come
    before it, if seqs go on by one; msgspec then decodes that many from the bytes before it,
    which succeeds only when they are exactly that many whole frames (frames delimit
    themselves), and an ``Unpacker`` takes the rest, as if it had skipped them all. Anything
    else (a guess that fails, frames of other shapes, held bytes over ``max_frame``) takes the
    skipping path, so the frames, errors and offsets are the same either way."""

    __slots__ = (
        "_base",
        "_consumed",
        "_fed",
        "_held",
        "_origin",
        "_penalty",
        "_plain",
        "_seq",
        "_skipper",
        "_wait",
        "max_frame",
        "scalar_data",
    )

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._fed = 0
        self._consumed = 0  # up to the end of the last complete frame handed out
        # _GAP bytes of room, then the bytes from _consumed to _fed: all the skipper was fed.
        self._held = bytearray(_GAP)
        self._skipper = frame_unpacker(max_frame)
        self._origin = 0  # the stream offset the skipper started at
        self._seq: int | None = None  # the last frame's seq, when it decoded typed
        self._wait = 0  # feeds before the fast path is tried again, after a miss
        self._penalty = 1  # the wait after the next miss
        self._plain: FrameDecoder | None = None  # once a big frame came: it decodes the rest
        self._base = 0  # the stream offset _plain started at
        #: True when every frame the last :meth:`feed_batch` returned is a Frame whose data is
        #: None, a bool, an int, a float, a str or bytes (no container to check the depth of).
        self.scalar_data = False

    def begin_after(self, offset: int) -> None:
        """The stream's first ``offset`` bytes were decoded elsewhere (a hello): count this
        decoder's offsets from there. Only before anything was fed."""
        assert self._fed == 0, "begin_after() after a feed"
        self._fed = self._consumed = self._origin = offset

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
        self.scalar_data = False
        if self._plain is not None:
            return self._plain_feed(chunk)
        if self._wait:
            self._wait -= 1
        elif self._seq is not None and self.pending + len(chunk) <= self.max_frame:
            fast = self._fast(chunk)
            if fast is not None:
                return fast
        ends: list[int] = []
        error: ProtocolError | None = None
        skipper = self._skipper
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
            error = self._skip(ends)
            if error is not None:
                break
        return self._complete(ends, error)

    def _fast(self, chunk: bytes | memoryview) -> tuple[list[Any], ProtocolError | None] | None:
        """:meth:`feed_batch` by the frames' seqs; None, with nothing changed, when the guess
        cannot be made or is wrong."""
        held, seq = self._held, self._seq
        assert seq is not None
        size = len(held)
        held += chunk
        count, cut = 0, len(held)
        for _ in range(2):  # the last frame begun, or the one before if its seq is cut off
            cut = held.rfind(_FRAME_START, _GAP, cut)
            if cut <= _GAP:
                break
            last = _seq_at(held, cut)
            if last is not None:
                count = last - seq - 1
                break
        typed = None
        if 0 < count < cut:  # a frame takes a byte at least (a wrong seq can say anything)
            held[:_GAP] = _array_header(count)
            with memoryview(held) as view, view[:cut] as complete:
                typed = _typed(complete)
            if typed is None:  # a wrong guess: wait before the next, longer each time
                self._wait, self._penalty = self._penalty, min(2 * self._penalty, _MAX_WAIT)
        if typed is None:
            del held[size:]
            return None
        frames: list[Any] = typed[0]
        self._penalty = 1
        self._fed += len(held) - size
        self._consumed += cut - _GAP
        self._seq = frames[-1].seq
        # The frame begun at the cut (and any after it), as the skipper would have left it.
        self._skipper, self._origin = frame_unpacker(self.max_frame), self._consumed
        with memoryview(held) as view, view[cut:] as rest:
            self._skipper.feed(rest)
        del held[_GAP:cut]
        ends: list[int] = []
        more, error = self._complete(ends, self._skip(ends))
        if not more:
            self.scalar_data = typed[1]
            return frames, error
        self.scalar_data = typed[1] and self.scalar_data
        return frames + more, error

    def _skip(self, ends: list[int]) -> ProtocolError | None:
        """Skip the complete frames the skipper holds, noting where each ends in ``ends``;
        the error that stopped it, if any."""
        skipper, origin = self._skipper, self._origin
        skip, tell = skipper.skip, skipper.tell
        try:
            while True:
                skip()
                ends.append(origin + tell())
        except msgpack.OutOfData:
            return None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            last = ends[-1] if ends else self._consumed
            return ProtocolError(f"undecodable bytes ({type(exc).__name__}: {exc})", offset=last)

    def _complete(
        self, ends: list[int], error: ProtocolError | None
    ) -> tuple[list[Any], ProtocolError | None]:
        """The frames ending at ``ends``, and the error (``error`` or a decoding one)."""
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
        held, self._held = self._held, bytearray(_GAP)
        frames, error = plain.feed_batch(memoryview(held)[_GAP:])
        assert not frames and error is None  # a part of one frame, within max_frame

    def _decode(self, ends: list[int]) -> tuple[list[Any], ProtocolError | None]:
        """The frames between ``_consumed`` and ``ends[-1]`` (``ends``: where each ends)."""
        start = self._consumed
        size = ends[-1] - start
        held = self._held
        held[:_GAP] = _array_header(len(ends))
        with memoryview(held) as view:
            with view[: _GAP + size] as complete:
                typed = _typed(complete)
            segment = b"" if typed is not None else bytes(view[_GAP : _GAP + size])
        del held[_GAP : _GAP + size]
        self._consumed = ends[-1]
        if typed is not None:
            frames, self.scalar_data = typed
            self._seq = frames[-1].seq
            return frames, None
        self._seq = None
        return self._decode_as_dicts(segment, start, ends)

    def _decode_as_dicts(
        self, segment: bytes, start: int, ends: list[int]
    ) -> tuple[list[Any], ProtocolError | None]:
        """Decode ``segment`` (the frames from stream offset ``start`` ending at ``ends``) as
        FrameDecoder does, one frame at a time (together they may pass ``max_frame``); an
        error names the offset of the end of the last good frame before it."""
        unpacker = frame_unpacker(self.max_frame)
        frames: list[Any] = []
        consumed = start
        try:
            with memoryview(segment) as view:
                for end in ends:
                    unpacker.feed(view[consumed - start : end - start])
                    frames.append(unpacker.unpack())
                    consumed = end
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
