"""TypedFrameDecoder gives what FrameDecoder gives, as a connection sees frames: the same
frames (a typed Frame as the dict msgpack makes of it; a message frame's missing data is None
and an int ts a float either way, as the connection makes them), the same data types, the same
errors at the same offsets, the same pending bytes, however the stream is cut and whatever the
frames hold."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import int64, plain

from lute_async.communicators.typed import BIG_FRAME, Frame, TypedFrameDecoder
from lute_async.errors import ProtocolError
from lute_async.messages import FrameDecoder

MAX_FRAME = 4096
SCALARS = (type(None), bool, int, float, str, bytes)

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
        if getattr(decoder, "scalar_data", False):  # the connection checks no depth then
            assert all(type(f) is Frame and type(f.data) in SCALARS for f in got)
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


# Streams as a Reporter sends them (sig, seq, ts, data in that order, seqs going on by one),
# broken up by what makes the decoder's guess from the seqs wrong or the frames not typed.
LONG_SIG = "s" * 40  # packed as a str8
START = b"\x84\xa3sig"
lookalike = st.sampled_from(
    [
        START + b"\xa4tick\xa3seq\x05",  # a frame start inside a frame's data
        START + b"\xa4tick\xa3seq\xcd\x01",  # ... cut within its seq
        START + b"\xd9",
        START + b"\xa4tick\xa3seq\xcf" + b"\xff" * 8,  # a seq of 2**64 - 1
        START,
    ]
)
tick = st.tuples(st.just("frame"), st.sampled_from(["tick", "data", LONG_SIG]), st.none() | plain)
step = st.one_of(
    tick,
    tick,
    tick,
    tick,
    st.tuples(st.just("frame"), st.just("tick"), values),
    st.tuples(st.just("frame"), st.just("tick"), lookalike | st.text(max_size=30)),
    st.tuples(st.just("nested"), st.just("tick"), st.integers(0, 300)),  # a frame-like dict
    st.tuples(st.just("jump"), st.integers(-3, 300)),
    st.tuples(st.just("hello")),
    st.tuples(st.just("other order")),
)


def frame_of(sig: str, seq: int, data: Any) -> bytes:
    """A message frame as a Reporter packs it."""
    return msgpack.packb({"sig": sig, "seq": seq, "ts": 1.5, "data": data}, use_bin_type=True)


def reporter_stream(first: int, steps: list[tuple[Any, ...]]) -> bytes:
    seq, out = first, bytearray()
    for kind, *args in steps:
        if kind in ("frame", "nested"):
            data = args[1]
            if kind == "nested":
                data = {"sig": "tick", "seq": data, "ts": 1.0, "data": None}
            out += frame_of(args[0], seq, data)
            seq += 1
        elif kind == "jump":
            seq += args[0]
        elif kind == "hello":
            out += msgpack.packb({"v": 1, "run": "r", "pid": 1, "rank": None, "secret": None})
            seq = 1
        elif kind == "other order":
            out += msgpack.packb({"seq": seq, "sig": "tick", "ts": 1.5, "data": None})
            seq += 1
        else:
            out += args[0]
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0, 1, 120, 250, 2**16 - 3, 2**32 - 2, 2**40]),
    st.lists(st.tuples(st.just("frame"), st.just("tick"), st.none()), min_size=30, max_size=200)
    | st.lists(step, min_size=20, max_size=200),
    st.none() | odd,  # what ends the stream
    st.lists(st.integers(1, 800), min_size=5, max_size=40),  # the sizes of the reads
)
def test_frames_found_from_their_seqs_are_those_the_msgpack_decoder_finds(
    first: int, steps: list[tuple[Any, ...]], end: bytes | None, reads: list[int]
) -> None:
    data = reporter_stream(first, [("frame", "tick", None), *steps]) + (end or b"")
    cuts = [cut for cut in itertools.accumulate(reads) if cut < len(data)]
    expected = decode(FrameDecoder(MAX_FRAME), data, cuts)
    got = decode(TypedFrameDecoder(MAX_FRAME), data, cuts)
    assert same(got[0], expected[0]), (got[0], expected[0])
    assert got[1:] == expected[1:]


def test_a_reporters_stream_in_small_reads_takes_the_seq_path(monkeypatch: Any) -> None:
    taken: list[bool] = []
    fast = TypedFrameDecoder._fast

    def counted(self: TypedFrameDecoder, chunk: bytes | memoryview) -> Any:
        result = fast(self, chunk)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(TypedFrameDecoder, "_fast", counted)
    steps = [("frame", "tick", {"n": i}) for i in range(300)]
    data = reporter_stream(100, steps)
    cuts = list(range(0, len(data), 997))
    frames, error, pending = decode(TypedFrameDecoder(MAX_FRAME), data, cuts)
    assert error is None and pending == 0
    assert [f["seq"] for f in frames] == list(range(100, 400))
    assert sum(taken) > len(taken) * 0.9


def test_one_read_of_more_than_max_frame_with_a_hello_in_it_decodes_whole() -> None:
    # The frames of one read that msgpack must decode (here: a hello among them) were fed to
    # one bounded Unpacker together: past max_frame bytes that raised BufferFull.
    hello = msgpack.packb({"v": 1, "run": "r", "pid": 1, "rank": None, "secret": None})
    ticks = [
        msgpack.packb({"sig": "tick", "seq": i, "ts": 1.5, "data": "x" * 50}) for i in range(1, 101)
    ]
    data = b"".join([ticks[0], hello, *ticks[1:]])
    assert len(data) > MAX_FRAME
    assert decode(TypedFrameDecoder(MAX_FRAME), data, []) == decode(
        FrameDecoder(MAX_FRAME), data, []
    )


def test_a_frame_near_max_frame_finished_by_a_read_with_a_hello_after_it_decodes() -> None:
    # The same in a connection's 16 KiB reads: the big frame's last part and the frames after
    # it (a hello among them) passed max_frame together.
    limit = 64 * 1024
    small = b"".join(frame_of("tick", i, "x" * 50) for i in range(1, 120))
    big = frame_of("tick", 120, b"x" * (limit - 1024))
    hello = msgpack.packb({"v": 1, "run": "r", "pid": 1, "rank": None, "secret": None})
    data = small + big + hello + b"".join(frame_of("tick", i, "x" * 50) for i in range(1, 200))
    cuts = list(range(16 * 1024, len(data), 16 * 1024))
    expected = decode(FrameDecoder(limit), data, cuts)
    assert expected[1] is None and len(expected[0]) == 320
    assert decode(TypedFrameDecoder(limit), data, cuts) == expected
