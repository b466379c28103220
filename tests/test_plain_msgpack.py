"""The task side's own msgpack encoder: msgpack's bytes for plain data, msgpack for the rest."""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import sys
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lute_async import Event, Executor
from lute_async.plain_msgpack import MAX_DEPTH, NotPlain, pack_plain
from lute_async.task import _PLAIN_MESSAGES, Reporter, _Sink, _to_wire

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)  # NaN's bits do not show in float.hex(): msgpack packs it
    | st.text()
    | st.binary()
)
PLAIN = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner) | st.lists(inner).map(tuple) | st.dictionaries(SCALARS, inner),
    max_leaves=40,
)

#: Lengths on each side of every fix/8/16-bit header limit.
LENGTHS = (0, 15, 16, 31, 32, 255, 256, 65535, 65536)
BOUNDARIES = [
    *(
        n
        for bits in (5, 7, 8, 15, 16, 31, 32, 63, 64)
        for sign in (1, -1)
        for delta in (-1, 0, 1)
        if -(2**63) <= (n := sign * 2**bits + delta) < 2**64  # msgpack's int range
    ),
    *(0.0, -0.0, 0.1, -2.5, math.inf, -math.inf, 5e-324, 2.225073858507201e-308),
    *(sys.float_info.min, sys.float_info.max, 2.0**-1074, -(2.0**1023)),
    *("s" * n for n in LENGTHS),
    "é" * 16,  # 16 characters, 32 bytes: the header counts bytes
    *(b"b" * n for n in LENGTHS),
    *([None] * n for n in LENGTHS),
    *({i: None for i in range(n)} for n in LENGTHS),
]


def msgpack_bytes(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes | bytearray) -> list[Any]:
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    return list(unpacker)


def short_id(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 40 else f"{type(value).__name__}-{len(value)}"


class Colour(enum.IntEnum):
    RED = 1


class Label(str):
    pass


@dataclasses.dataclass
class Point:
    x: int
    y: float


def nested(levels: int) -> list[Any]:
    """Lists ``levels`` deep: [[[]]] is 3."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


class MemorySink:
    """A reporter sink that keeps what it was sent."""

    def __init__(self) -> None:
        self.data = bytearray()

    def sink(self) -> _Sink:
        return _Sink(self.data.extend, lambda: None)


# -- the encoder ---------------------------------------------------------------------------------


@given(PLAIN)
def test_plain_data_packs_to_the_bytes_msgpack_packs(value: Any) -> None:
    assert pack_plain(value) == msgpack_bytes(value)


@pytest.mark.parametrize("value", BOUNDARIES, ids=short_id)
def test_each_format_boundary_packs_like_msgpack(value: Any) -> None:
    assert pack_plain(value) == msgpack_bytes(value)


def test_nesting_up_to_max_depth_packs_like_msgpack() -> None:
    value = nested(MAX_DEPTH)
    assert pack_plain(value) == msgpack_bytes(value)


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        "\ud800",  # a lone surrogate is not UTF-8
        math.nan,
        [1.0, -math.nan],
        bytearray(b"x"),
        memoryview(b"x"),
        {1, 2},
        Colour.RED,
        Label("x"),
        Point(1, 2.0),
        PurePosixPath("/tmp"),
        1j,
        {"ok": [1, 2, {"deep": {3}}]},
        nested(MAX_DEPTH + 1),
    ],
    ids=short_id,
)
def test_values_outside_the_plain_subset_raise_not_plain(value: Any) -> None:
    with pytest.raises(NotPlain):
        pack_plain(value)


# -- the reporter --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "decoded"),
    [
        ({1, 2}, [1, 2]),
        (PurePosixPath("/tmp/x"), "/tmp/x"),
        (Point(1, 2.5), {"x": 1, "y": 2.5}),
        (Colour.RED, 1),
        (Label("x"), "x"),
        (bytearray(b"ab"), b"ab"),
        ({"when": [2**64 - 1, {3}]}, {"when": [2**64 - 1, [3]]}),
    ],
    ids=short_id,
)
def test_reporter_sends_values_outside_the_subset_through_msgpack(data: Any, decoded: Any) -> None:
    sent = MemorySink()
    report = Reporter(sent.sink(), run_id="r")
    report.emit("first", data)
    report.emit("after", "plain")
    report.close()
    frames = decode(sent.data)
    assert [(f["sig"], f["seq"], f["data"]) for f in frames] == [
        ("first", 1, decoded),
        ("after", 2, "plain"),
    ]


@pytest.mark.parametrize("data", [2**64, "\ud800", object()], ids=short_id)
def test_reporter_raises_what_msgpack_raises_for_values_it_cannot_send(data: Any) -> None:
    errors = (TypeError, OverflowError, UnicodeEncodeError)
    with pytest.raises(errors) as before:  # what the reporter raised when it used msgpack only
        msgpack.Packer(use_bin_type=True, default=_to_wire).pack(data)
    report = Reporter(MemorySink().sink(), run_id="r")
    with pytest.raises(type(before.value), match=re.escape(str(before.value))):
        report.emit("bad", data)


@pytest.mark.parametrize("nan_at", [None, 3], ids=["plain-only", "nan-at-3"])
def test_reporter_stream_is_msgpack_canonical_before_and_after_switching_packers(
    nan_at: int | None,
) -> None:
    sent = MemorySink()
    report = Reporter(sent.sink(), run_id="r")
    values = [None, 1, -200, 0.25, "é", b"\x00", [1, (2,)], {"k": {"n": 2**40}}]
    for i in range(3 * _PLAIN_MESSAGES):
        report.emit("v", math.nan if i == nan_at else values[i % len(values)])
    report.close()
    frames = decode(sent.data)
    assert [f["seq"] for f in frames] == list(range(1, 3 * _PLAIN_MESSAGES + 1))
    assert b"".join(msgpack_bytes(f) for f in frames) == sent.data


# -- a real task process -------------------------------------------------------------------------


#: 5000 messages: plain ones, then a set (which only msgpack's packer, through the reporter's
#: default, can send) every 7th, so the reporter switches packers in the middle of a burst.
BULK_TASK = """
    from lute_async.task import Reporter
    with Reporter.connect() as report:
        report.started({"n": 5000})
        for i in range(5000):
            report.emit("item", {"i": i} if i % 7 else {"i": i, "set": {i}})
        report.result("sent")
"""

#: A short task's whole life: it stays below the reporter's switch to msgpack.
SHORT_TASK = """
    import sys
    from lute_async.task import Reporter
    with Reporter.connect() as report:
        report.started({"threshold": 3})
        report.log("loaded 3 files")
        for i in range(5):
            report.progress((i + 1) / 5, f"frame {i}")
        heavy = {"msgpack", "datetime", "struct", "json", "socket"}
        report.result(sorted(heavy & set(sys.modules)))
"""


async def test_task_process_delivers_started_a_bulk_and_result_in_order(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    events: list[Event] = []
    for name in ("started", "item", "result", "done"):
        executor.on(name, events.append)
    record = await executor.run(script(BULK_TASK), name="bulk")
    assert record.status == "COMPLETED" and "protocol_errors" not in record.extra
    assert [e.name for e in events] == ["started", *["item"] * 5000, "result", "done"]
    assert [e.data for e in events[1:-2]] == [
        {"i": i} if i % 7 else {"i": i, "set": [i]} for i in range(5000)
    ]


async def test_short_task_never_imports_msgpack_or_other_heavy_modules(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    record = await executor.run(script(SHORT_TASK), name="short")
    assert record.status == "COMPLETED"
    assert record.result == {"payload": [], "summary": None}
