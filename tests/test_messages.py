"""Wire protocol v1: the frame codec, hello checks and message validation."""

from __future__ import annotations

import msgpack
import pytest

from lute_async.errors import FrameTooLarge, HandshakeError, ProtocolError
from lute_async.messages import (
    FrameDecoder,
    encode,
    encode_hello,
    encode_message,
    parse_hello,
    parse_message,
)


def test_frames_split_at_every_byte_decode_whole_and_in_order() -> None:
    stream = encode_hello("r1", 7) + b"".join(encode_message("log", i, i + 1) for i in range(50))
    decoder = FrameDecoder()
    frames = [frame for byte in stream for frame in decoder.feed(bytes([byte]))]
    assert frames[0]["run"] == "r1"
    assert [f["data"] for f in frames[1:]] == list(range(50))
    assert decoder.pending == 0


def test_frame_over_the_limit_raises_frame_too_large_with_offset() -> None:
    decoder = FrameDecoder(max_frame=1024)
    ok = encode_message("log", "x", 1)
    big = encode_message("log", "y" * 4096, 2)
    with pytest.raises(FrameTooLarge) as info:
        list(decoder.feed(ok + big))
    assert info.value.offset == len(ok)


def test_undecodable_bytes_raise_protocol_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="undecodable"):
        list(decoder.feed(b"\xc1\xc1\xc1"))


def test_ext_types_are_refused_so_nothing_but_plain_data_decodes() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="ext type"):
        list(decoder.feed(msgpack.packb(msgpack.ExtType(1, b"\x80\x04"))))


def test_pickle_bytes_are_not_a_frame() -> None:
    import pickle

    decoder = FrameDecoder()
    payload = pickle.dumps({"sig": "result"})
    with pytest.raises(ProtocolError):
        frames = list(decoder.feed(payload))
        for frame in frames:
            parse_message(frame)


def test_hello_with_wrong_secret_is_refused() -> None:
    frame = msgpack.unpackb(encode_hello("r1", 1, secret="nope"))
    with pytest.raises(HandshakeError, match="wrong secret"):
        parse_hello(frame, run_id="r1", secret="right", require_secret=True)


def test_hello_without_secret_is_refused_where_one_is_required() -> None:
    frame = msgpack.unpackb(encode_hello("r1", 1))
    with pytest.raises(HandshakeError, match="no secret"):
        parse_hello(frame, run_id="r1", secret="right", require_secret=True)


def test_hello_for_another_run_is_refused() -> None:
    frame = msgpack.unpackb(encode_hello("other", 1))
    with pytest.raises(HandshakeError, match="unknown run"):
        parse_hello(frame, run_id="r1", secret=None, require_secret=False)


@pytest.mark.parametrize(
    "frame",
    [
        {"seq": 1, "ts": 1.0, "data": None},
        {"sig": 3, "seq": 1, "ts": 1.0},
        {"sig": "x", "seq": "1", "ts": 1.0},
        {"sig": "x", "seq": 1, "ts": "now"},
        [1, 2, 3],
        "log",
    ],
)
def test_malformed_message_frames_are_protocol_errors(frame: object) -> None:
    with pytest.raises(ProtocolError, match="malformed"):
        parse_message(frame)


def test_tasks_cannot_send_terminal_events() -> None:
    with pytest.raises(ProtocolError, match="executor's own event"):
        parse_message({"sig": "done", "seq": 1, "ts": 1.0, "data": None})


def test_encode_roundtrips_nested_plain_data() -> None:
    value = {"a": [1, 2.5, None, True, b"\x00bytes", "text"], "b": {"c": -1}}
    assert list(FrameDecoder().feed(encode(value))) == [value]
