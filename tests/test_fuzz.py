"""Property tests of the wire against hostile input: arbitrary bytes, truncated, oversized and
deeply nested frames, wrong types in every field, through the decoder, the handshake and a
real Unix-socket communicator. Plus a bounded run of the atheris fuzz targets in fuzz/."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lute_async.communicators import RunChannel, SocketCommunicator
from lute_async.communicators.base import Batch, FrameConnection
from lute_async.errors import HandshakeError, ProtocolError
from lute_async.messages import FrameDecoder, Message, parse_hello, parse_message

RUN = "0123456789abcdef0123456789abcdef"
SECRET = "s3cret-s3cret-s3cret"
HELLO = {"v": 1, "run": RUN, "pid": 7, "rank": 0, "secret": SECRET}
ROOT = Path(__file__).resolve().parent.parent

int64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
plain = st.recursive(
    st.none()
    | st.booleans()
    | int64
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(max_size=10) | int64, inner, max_size=6)
    ),
    max_leaves=30,
)
anything = plain | st.lists(plain) | st.dictionaries(plain.filter(lambda v: v is None), plain)


def feed_in_pieces(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[Any]:
    frames: list[Any] = []
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        frames.extend(decoder.feed(data[start:point]))
        start = point
        assert decoder.pending <= decoder.max_frame
    return frames


@settings(max_examples=60, deadline=None)
@given(st.lists(plain, max_size=10), st.lists(st.integers(min_value=0), max_size=12))
def test_any_plain_frames_split_anywhere_decode_back_exactly(
    values: list[Any], cuts: list[int]
) -> None:
    data = b"".join(msgpack.packb(v, use_bin_type=True) for v in values)
    decoder = FrameDecoder(max_frame=1 << 20)
    assert feed_in_pieces(decoder, data, cuts) == values
    assert decoder.pending == 0 and decoder.offset == len(data)


@settings(deadline=None)
@given(
    st.lists(plain, max_size=5),
    st.binary(min_size=1, max_size=200),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_garbage_after_good_frames_keeps_them_and_raises_only_protocol_error(
    before: list[Any], garbage: bytes, cuts: list[int]
) -> None:
    good = b"".join(msgpack.packb(v, use_bin_type=True) for v in before)
    decoder = FrameDecoder(max_frame=1024)
    frames: list[Any] = []
    try:
        frames = feed_in_pieces(decoder, good, cuts)
        frames.extend(decoder.feed(garbage))
    except ProtocolError as exc:
        assert exc.offset is not None and exc.offset >= len(good)
    assert frames[: len(before)] == before
    assert decoder.pending <= decoder.max_frame


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=200_000))
def test_deep_nesting_is_a_protocol_error_or_a_frame_never_a_crash(depth: int) -> None:
    data = b"\x91" * depth + b"\xc0"  # [[[...[nil]...]]]
    decoder = FrameDecoder(max_frame=1 << 20)
    try:
        frames = list(decoder.feed(data))
    except ProtocolError:
        return
    assert len(frames) == 1


@settings(deadline=None)
@given(
    st.sampled_from([b"\xdf", b"\xdd", b"\xdb", b"\xc6"]),  # map32, array32, str32, bin32
    st.integers(min_value=2**20, max_value=2**32 - 1),
    st.binary(max_size=64),
)
def test_huge_declared_lengths_never_allocate_beyond_the_frame_limit(
    header: bytes, length: int, tail: bytes
) -> None:
    decoder = FrameDecoder(max_frame=4096)
    data = header + length.to_bytes(4, "big") + tail + b"\x00" * 8192
    with pytest.raises(ProtocolError):
        for _ in decoder.feed(data):
            pass
    assert decoder.pending <= 4096


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(HELLO)), anything)
def test_hello_with_any_value_in_any_field_is_accepted_only_when_valid(
    field: str, value: Any
) -> None:
    frame = {**HELLO, field: value}
    valid = {
        "v": value == 1 and type(value) is not float,
        "run": value == RUN,
        "pid": isinstance(value, int),
        "rank": value is None or isinstance(value, int),
        "secret": value == SECRET,
    }[field]
    try:
        hello = parse_hello(frame, run_id=RUN, secret=SECRET, require_secret=True)
    except HandshakeError as exc:
        assert SECRET not in str(exc)
        assert not valid or field == "v"
    else:
        assert valid or field == "v"
        assert hello.secret is None  # never kept once checked


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["sig", "seq", "ts", "data"]), anything)
def test_message_with_any_value_in_any_field_is_a_message_or_a_protocol_error(
    field: str, value: Any
) -> None:
    frame = {"sig": "tick", "seq": 1, "ts": 1.0, "data": None, field: value}
    try:
        sig, seq, ts, data = parse_message(frame)
    except ProtocolError:
        assert field != "data"
        return
    assert type(sig) is str and sig and type(seq) is int and isinstance(ts, float)
    assert data == frame["data"]


@settings(deadline=None)
@given(st.binary(max_size=512), st.lists(st.integers(min_value=0), max_size=6))
def test_a_connection_fed_arbitrary_bytes_reports_only_protocol_errors(
    junk: bytes, cuts: list[int]
) -> None:
    errors: list[ProtocolError] = []
    channel = RunChannel(
        RUN,
        SECRET,
        None,  # type: ignore[arg-type]  # FrameConnection.feed never sends
        max_frame=256,
        on_protocol_error=lambda source, conn, error: errors.append(error),
    )
    parser = FrameConnection(channel, "socket", require_secret=True)
    data = msgpack.packb(HELLO) + junk
    try:
        points = sorted({c % (len(data) + 1) for c in cuts})
        start = 0
        for point in [*points, len(data)]:
            for message in parser.feed(data[start:point]):
                assert isinstance(message, Message) and parser.hello is not None
            parser.raise_fatal()
            start = point
        parser.finish()
    except ProtocolError:
        pass
    assert all(isinstance(e, ProtocolError) for e in errors)


def good_frames(tag: str, n: int) -> bytes:
    frames = [msgpack.packb({**HELLO, "pid": os.getpid()})]
    frames += [
        msgpack.packb({"sig": tag, "seq": i, "ts": time.time(), "data": i}) for i in range(1, n + 1)
    ]
    return b"".join(frames)


async def serve_connections(payloads: list[bytes]) -> tuple[list[Message], list[str]]:
    """Connect once per payload to a real SocketCommunicator, send it, and collect what the
    communicator delivers and reports once the (pretend) task has exited."""
    errors: list[str] = []
    send, receive = anyio.create_memory_object_stream[Batch](math.inf)
    channel = RunChannel(
        RUN,
        SECRET,
        send,
        max_frame=1024,
        on_protocol_error=lambda source, conn, error: errors.append(str(error)),
    )
    communicator = SocketCommunicator()
    setup = await communicator.open(channel)
    try:
        for payload in payloads:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(setup.env["LUTE_ASYNC_SOCKET"])
                client.sendall(payload)
        exited = anyio.Event()
        exited.set()
        await communicator.serve(exited)
    finally:
        await communicator.aclose()
    send.close()
    messages = [m async for batch in receive for m in batch]
    return messages, errors


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=4096), st.booleans())
def test_valid_connections_around_a_hostile_one_are_delivered_whole(
    junk: bytes, with_hello: bool
) -> None:
    hostile = (msgpack.packb(HELLO) if with_hello else b"") + junk
    assume(hostile)
    messages, errors = anyio.run(
        serve_connections, [good_frames("before", 50), hostile, good_frames("after", 50)]
    )
    for tag in ("before", "after"):
        mine = [m for m in messages if m.sig == tag]
        assert [m.data for m in mine] == list(range(1, 51))
        assert [m.seq for m in mine] == list(range(1, 51))
    assert all(isinstance(e, str) for e in errors)


FUZZ_TARGETS = sorted((ROOT / "fuzz").glob("fuzz_*.py"))


@pytest.mark.parametrize("target", FUZZ_TARGETS, ids=lambda p: p.stem)
def test_atheris_fuzz_target_survives_a_bounded_run(target: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    if target.stem == "fuzz_config":
        pytest.importorskip("lute_async.config")
    runs = int(os.environ.get("LUTE_ASYNC_FUZZ_RUNS", "20000"))
    done = subprocess.run(
        [sys.executable, target, f"-runs={runs}", "-seed=1", "-max_len=4096"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"Done {runs} runs" in done.stderr
    # The figure for the README reliability table: executions without a failure.
    print(f"fuzz {target.stem}: {runs} executions, 0 failures")
