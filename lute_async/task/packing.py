"""How a task packs its messages: ``MessagePacker`` (plain_msgpack for the first few, then
msgpack's C packer) and ``to_wire`` (common non-msgpack values as plain data)."""

from __future__ import annotations

import os

from lute_async.plain_msgpack import NotPlain, pack_plain

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: Messages (the hello included) a reporter packs with plain_msgpack before it imports msgpack
#: and uses its C packer: enough for a short task (hello, started, a few logs and progress,
#: result) to never load msgpack, few enough that bulk sends run at the C packer's speed.
PLAIN_MESSAGES = 16
#: A frame's fixed bytes: a map of 4, then its keys (fixstr) in the order a frame has them.
_FRAME_MAP, _SEQ_KEY, _TS_KEY, _DATA_KEY = b"\x84", b"\xa3seq", b"\xa2ts", b"\xa4data"
#: Sigs whose frame heads are kept (a task emitting ever new names packs the rest whole).
_HEADS = 64


def to_wire(obj: Any) -> Any:
    """Turn common non-msgpack values (numpy arrays and scalars, paths, sets, dataclasses) into
    plain data; anything else is an error naming its type."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot send a value of type {type(obj).__name__} to the executor")


def log_value(obj: Any) -> Any:
    """JSON for a value of a standalone log line: bytes as text (as a record's JSON shows
    them), anything else as it would go to the executor."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).decode("utf-8", "backslashreplace")
    return to_wire(obj)


class MessagePacker:
    """``pack(message)``: plain_msgpack for the first :data:`PLAIN_MESSAGES` messages; after
    them, or from the first value plain_msgpack does not cover, msgpack's C packer does it
    all (``pack`` is then the C packer's own method, so bulk sends pay nothing for this)."""

    __slots__ = ("_heads", "_plain_left", "pack")

    def __init__(self) -> None:
        self.pack: Callable[[Any], bytes] = self._pack_plain
        self._plain_left = PLAIN_MESSAGES
        self._heads: dict[str, bytes] = {}  # per sig: a frame's bytes up to its seq

    def frame(self, sig: str, seq: int, ts: float, data: Any) -> bytes:
        """``pack({"sig": sig, "seq": seq, "ts": ts, "data": data})``, the same bytes; once
        the C packer is in use, what a sig's frames share is packed once (~0.1 us a frame)."""
        head = self._heads.get(sig) if type(sig) is str else None
        if head is None:
            return self._first_frame(sig, seq, ts, data)
        pack = self.pack
        return b"".join((head, pack(seq), _TS_KEY, pack(ts), _DATA_KEY, pack(data)))

    def _first_frame(self, sig: str, seq: int, ts: float, data: Any) -> bytes:
        packed = self.pack({"sig": sig, "seq": seq, "ts": ts, "data": data})
        if self.pack != self._pack_plain and type(sig) is str and len(self._heads) < _HEADS:
            self._heads[sig] = _FRAME_MAP + self.pack("sig") + self.pack(sig) + _SEQ_KEY
        return packed

    def _pack_plain(self, message: Any) -> bytes:
        if self._plain_left > 0:
            self._plain_left -= 1
            try:
                return pack_plain(message)
            except NotPlain:
                pass
        import msgpack

        self.pack = msgpack.Packer(use_bin_type=True, default=to_wire).pack
        return self.pack(message)
