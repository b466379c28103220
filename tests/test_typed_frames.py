"""TypedFrameDecoder gives what FrameDecoder gives, as a connection sees frames: the same
frames (a typed Frame as the dict msgpack makes of it; a message frame's missing data is None
and an int ts a float either way, as the connection makes them), the same data types, the same
errors at the same offsets, the same pending bytes, however the stream is cut and whatever the
frames hold."""

from __future__ import annotations

import datetime
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import int64, plain

from lute_async.communicators.typed import BIG_FRAME, Frame, TypedFrameDecoder
from lute_async.errors import ProtocolError
from lute_async.messages import FrameDecoder

MAX_FRAME = 4096

# test_fuzz's data, and what msgspec could decode otherwise: odd map keys, timestamps.
keys = st.text(max_size=6) | int64 | st.binary(max_size=4) | st.none() | st.booleans()
stamps = st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1))
values = (
    plain
    | stamps
    | st.dictionaries(keys, plain | stamps, max_size=4)
    | st.lists(st.dictionaries(keys, plain, max_size=3) | stamps, max_size=3)
)
message = st.fixed_dictionaries(
    {
        "sig": st.sampled_from(["tick", "data", ""]) | int64,
        "seq": int64 | st.booleans() | st.floats(allow_nan=False),
    },
    optional={
        "ts": st.floats(allow_nan=False) | int64 | st.booleans() | st.text(max_size=3),
        "data": values,
        "v": st.just(1),
        "other": st.just(0),
    },
)
odd = st.sampled_from(
    [
        b"\xc1",  # a byte msgpack never uses
        b"\xc7\x01\x05x",  # an ext type
        b"\x81\xa3sig\xa2\xff\xfe",  # invalid UTF-8
        b"\x81\x91\x01\x02",  # an array as a map key
        msgpack.packb([1, 2, 3]),
        msgpack.packb("x" * 5000),  # over max_frame
        b"\x91" * 300 + b"\xc0",  # deeper than msgpack's stack
    ]
)
frame_bytes = message.map(lambda f: msgpack.packb(f, use_bin_type=True)) | odd


def decode(decoder: Any, data: bytes, cuts: list[int]) -> tuple[list[Any], Any, int]:
    """Feed ``data`` cut at ``cuts``; the frames, the first error (as text and offset) and the
    bytes pending at the end."""
    frames: list[Any] = []
    start = 0
    for point in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        got, error = decoder.feed_batch(data[start:point])
        frames += [as_seen(f.as_dict() if type(f) is Frame else f) for f in got]
        start = point
        if error is not None:  # the connection ends: nothing pending is ever read
            return frames, (type(error).__name__, str(error), error.offset), None
    return frames, None, decoder.pending


def as_seen(frame: Any) -> Any:
    """``frame`` as FrameConnection takes it: a message's data defaults to None, and an int
    ts that passes its checks becomes a float."""
    if type(frame) is not dict or "sig" not in frame or "v" in frame:
        return frame
    seen = {"data": None, **frame}
    if type(seen.get("ts")) is int:
        seen["ts"] = float(seen["ts"])
    return seen


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 == 1.0 == True are not the same here)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, b[k2]) for k2 in b if k2 == k) for k, v in a.items()
        )
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_bytes, max_size=12), st.lists(st.integers(0, 10**6), max_size=5))
def test_the_typed_decoder_gives_what_the_msgpack_one_gives(
    frames: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(frames)
    expected = decode(FrameDecoder(MAX_FRAME), data, cuts)
    got = decode(TypedFrameDecoder(MAX_FRAME), data, cuts)
    assert same(got[0], expected[0]), (got[0], expected[0])
    assert got[1:] == expected[1:]


def test_message_frames_decode_typed_and_the_rest_as_msgpack_does() -> None:
    decoder = TypedFrameDecoder(MAX_FRAME)
    good = msgpack.packb({"sig": "tick", "seq": 1, "ts": 1.5, "data": {"n": [1, "x"]}})
    hello = msgpack.packb({"v": 1, "run": "r", "pid": 1, "rank": None, "secret": None})
    stamp = msgpack.packb({"sig": "tick", "seq": 2, "ts": 1.5, "data": msgpack.Timestamp(5)})
    frames, error = decoder.feed_batch(good + good)
    assert error is None and [type(f) for f in frames] == [Frame, Frame]
    frames, error = decoder.feed_batch(hello + good)  # a run with a hello: all as dicts
    assert error is None and [type(f) for f in frames] == [dict, dict]
    frames, error = decoder.feed_batch(stamp)
    assert error is None and type(frames[0]["data"]) is msgpack.Timestamp
    assert not isinstance(frames[0]["data"], datetime.datetime)


def test_a_big_frame_hands_the_stream_to_the_msgpack_decoder_at_the_same_offsets() -> None:
    limit = 4 * BIG_FRAME
    small = msgpack.packb({"sig": "tick", "seq": 1, "ts": 1.5, "data": None})
    big = msgpack.packb({"sig": "tick", "seq": 2, "ts": 1.5, "data": b"x" * (2 * BIG_FRAME)})
    typed, plain = TypedFrameDecoder(limit), FrameDecoder(limit)
    stream = small + big + small
    step = 64 * 1024
    got: list[Any] = []
    for start in range(0, len(stream), step):
        frames, error = typed.feed_batch(stream[start : start + step])
        assert error is None
        got += [f.as_dict() if type(f) is Frame else f for f in frames]
        plain.feed_batch(stream[start : start + step])
        assert (typed.offset, typed.pending) == (plain.offset, plain.pending)
    assert [f["seq"] for f in got] == [1, 2, 1] and got[1]["data"] == b"x" * (2 * BIG_FRAME)


def test_an_error_after_good_frames_keeps_them_and_names_the_offset() -> None:
    good = msgpack.packb({"sig": "tick", "seq": 1, "ts": 1.5, "data": "ok"})
    for bad in (b"\xc1", b"\xc7\x01\x05x", b"\x81\xa3sig\xa2\xff\xfe"):
        frames, error = TypedFrameDecoder(MAX_FRAME).feed_batch(good + good + bad)
        assert len(frames) == 2 and isinstance(error, ProtocolError)
        assert error.offset == 2 * len(good)
