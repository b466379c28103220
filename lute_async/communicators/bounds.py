"""Bounds on what a peer can make the executor decode: a small decoder for the hello every
connection opens with, and the nesting depth every message's data may reach.

``max_frame`` bounds a frame's bytes, not what they decode to: one byte (an empty array) becomes
a Python list of ~60 bytes, so a 16 MiB frame can cost a GiB and seconds of the event loop.
Before the hello nobody is known, so the first frame is decoded with tight limits; after it,
frames are bounded by ``max_frame`` and their data by :data:`MAX_DEPTH`.
"""

from __future__ import annotations

from typing import Any

import msgpack

from lute_async.errors import FrameTooLarge, ProtocolError
from lute_async.messages import _refuse_ext

#: Bytes a connection may send before its hello is complete. A real hello (five fields, a run
#: id, a 32-character secret or a 32-byte MAC) is about 120 bytes.
HELLO_BUFFER = 4096
#: Longest string or bytes value in a hello, and most items in one of its maps or arrays.
HELLO_MAX_STR = 512
HELLO_MAX_ITEMS = 16
#: Deepest nesting of maps and arrays a message's data may have (the data itself is level 1).
#: Far beyond real results, far below the recursion limits that copying, JSON encoding or
#: printing the data in hooks and records would hit (msgpack alone allows 1024).
MAX_DEPTH = 100


class HelloDecoder:
    """Decodes a connection's first frame within :data:`HELLO_BUFFER` bytes and small
    lengths; :meth:`feed` returns it with the bytes that came after it."""

    __slots__ = ("_held", "_unpacker", "limit")

    def __init__(self, limit: int = HELLO_BUFFER) -> None:
        self.limit = limit
        self._held = bytearray()
        # Made at the first feed: every run has a decoder on its frame pipe, most short
        # commands never write to it.
        self._unpacker: msgpack.Unpacker | None = None

    def _make_unpacker(self) -> msgpack.Unpacker:
        return msgpack.Unpacker(
            raw=False,
            use_list=True,
            max_buffer_size=self.limit,
            max_str_len=HELLO_MAX_STR,
            max_bin_len=HELLO_MAX_STR,
            max_array_len=HELLO_MAX_ITEMS,
            max_map_len=HELLO_MAX_ITEMS,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )

    @property
    def pending(self) -> int:
        """Bytes received so far (none of them a complete frame yet)."""
        return len(self._held)

    def feed(self, chunk: bytes | memoryview) -> tuple[Any, bytes, bytes] | None:
        """``(frame, its bytes, the bytes after it)`` once the first frame is complete, None
        while it is not; a frame over the limits raises :class:`ProtocolError`."""
        room = self.limit - len(self._held)
        part = chunk[:room]
        self._held += part
        unpacker = self._unpacker
        if unpacker is None:
            unpacker = self._unpacker = self._make_unpacker()
        unpacker.feed(part)
        try:
            frame = unpacker.unpack()
        except msgpack.OutOfData:
            if len(self._held) >= self.limit:
                raise FrameTooLarge(
                    f"frame larger than the {self.limit}-byte limit before a hello", offset=0
                ) from None
            return None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # Lengths over the hello's limits, nesting over msgpack's stack, bad bytes.
            raise ProtocolError(
                f"first frame is no hello ({type(exc).__name__}: {exc})", offset=0
            ) from None
        used = unpacker.tell()
        held = bytes(self._held)
        return frame, held[:used], held[used:] + bytes(chunk[room:])


#: The types that nest.
CONTAINERS = frozenset({dict, list})


def nesting_exceeds(data: dict[Any, Any] | list[Any], limit: int = MAX_DEPTH) -> bool:
    """True when maps and arrays in ``data`` nest more than ``limit`` levels deep.

    Walks level by level (no recursion, so no recursion limit), keeping only the containers
    of each level; messages go through :func:`data_too_deep`.
    """
    level: list[Any] = [data]
    for _ in range(limit):
        level = [
            item
            for container in level
            for item in (container.values() if type(container) is dict else container)
            if type(item) in CONTAINERS
        ]
        if not level:
            return False
    return True


def data_too_deep(data: dict[Any, Any] | list[Any]) -> bool:
    """True when ``data`` nests more than :data:`MAX_DEPTH` levels deep. Flat data, the usual
    message, is ruled out at C speed (the types of its items against :data:`CONTAINERS`)."""
    items = data.values() if type(data) is dict else data
    return not CONTAINERS.isdisjoint(map(type, items)) and nesting_exceeds(data)
