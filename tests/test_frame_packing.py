"""MessagePacker.frame gives the bytes msgpack gives the frame dict, before and after the C
packer takes over, for any sig, seq, ts and data, cached frame heads included."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import int64, plain

from lute_async.task.packing import PLAIN_MESSAGES, MessagePacker, to_wire

sigs = st.sampled_from(["data", "tick", "progress", ""]) | st.text(max_size=40)
frames = st.tuples(sigs, int64, st.floats(allow_nan=False), plain)


def expected(sig: Any, seq: int, ts: float, data: Any) -> bytes:
    message = {"sig": sig, "seq": seq, "ts": ts, "data": data}
    return msgpack.packb(message, use_bin_type=True, default=to_wire)


@settings(max_examples=40, deadline=None)
@given(st.lists(frames, min_size=PLAIN_MESSAGES + 5, max_size=60))
def test_frames_pack_as_the_dict_does(messages: list[tuple[str, int, float, Any]]) -> None:
    packer = MessagePacker()
    for message in messages + messages:  # the second time round, from cached heads
        assert packer.frame(*message) == expected(*message)


def test_a_sig_that_is_no_string_and_data_msgpack_refuses_behave_as_before() -> None:
    packer = MessagePacker()
    for seq in range(PLAIN_MESSAGES + 3):
        assert packer.frame(7, seq, 1.5, None) == expected(7, seq, 1.5, None)
        assert packer.frame("tick", seq, 1.5, {1, 2}) == expected("tick", seq, 1.5, [1, 2])
    with pytest.raises(TypeError, match="object"):
        packer.frame("tick", 99, 1.5, object())
