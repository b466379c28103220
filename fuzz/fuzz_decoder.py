"""Coverage-guided fuzz target (atheris) for the wire: FrameDecoder, parse_hello, parse_message
and a FrameConnection doing the whole handshake, fed arbitrary bytes in arbitrary chunks.

Invariants checked on every input: nothing but ProtocolError escapes, the decoder never holds
more than ``max_frame`` undecoded bytes, and every message it accepts is well formed.

    python fuzz/fuzz_decoder.py -runs=20000             # the CI smoke (tests/test_fuzz.py)
    python fuzz/fuzz_decoder.py -max_total_time=3600 corpus/   # a longer run
"""

from __future__ import annotations

import sys
from typing import Any

import atheris
import msgpack

with atheris.instrument_imports(include=["lute_async"]):
    from lute_async.communicators.base import FrameConnection, RunChannel
    from lute_async.errors import ProtocolError
    from lute_async.messages import FrameDecoder, parse_hello, parse_message

MAX_FRAME = 4096
RUN = "0123456789abcdef0123456789abcdef"
SECRET = "s3cret-s3cret-s3cret"
HELLO = msgpack.packb({"v": 1, "run": RUN, "pid": 1, "rank": 0, "secret": SECRET})


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, start = [], 0
    for point in [*points, len(data)]:
        out.append(data[start:point])
        start = point
    return [chunk for chunk in out if chunk]


def _decode_raw(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame=MAX_FRAME)
    try:
        for chunk in _chunks(data, cuts):
            for frame in decoder.feed(chunk):
                assert decoder.pending <= MAX_FRAME
                try:
                    if isinstance(frame, dict) and "v" in frame:
                        parse_hello(frame, run_id=RUN, secret=SECRET, require_secret=True)
                    else:
                        sig, seq, ts, _ = parse_message(frame)
                        assert type(sig) is str and sig and type(seq) is int
                        assert isinstance(ts, float)
                except ProtocolError:
                    pass
            assert decoder.pending <= MAX_FRAME
    except ProtocolError:
        pass


def _errors(source: str, conn: int, error: ProtocolError) -> None:
    assert isinstance(error, ProtocolError)


def _connection(data: bytes, cuts: list[int], require_secret: bool) -> None:
    channel = RunChannel(
        RUN,
        SECRET,
        None,
        max_frame=MAX_FRAME,
        on_protocol_error=_errors,  # type: ignore[arg-type]
    )
    parser = FrameConnection(channel, "socket", require_secret=require_secret)
    try:
        for chunk in _chunks(data, cuts):
            for message in parser.feed(chunk):
                assert parser.hello is not None
                assert type(message.sig) is str and type(message.seq) is int
            parser.raise_fatal()
        parser.finish()
    except ProtocolError:
        pass


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    mode = fdp.ConsumeIntInRange(0, 3)
    cuts = [fdp.ConsumeIntInRange(0, 1 << 16) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 0:
        _decode_raw(body, cuts)
    elif mode == 1:
        _decode_raw(HELLO + body, cuts)
    else:
        # 2: a connection that must say hello itself; 3: one that starts with a valid hello.
        _connection(body if mode == 2 else HELLO + body, cuts, require_secret=mode == 2)


def main(argv: list[str]) -> Any:
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
