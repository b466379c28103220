"""A pure-Python msgpack encoder for plain data, so a task's first messages need no ``msgpack``.

Why hand-write an encoder: every task start pays for what the task side imports, and
``import msgpack`` was most of it (its ``__init__`` imports ``msgpack.ext``, which imports
``datetime``, ``struct`` and ``collections``, then loads a 1.6 MB C extension). Measured on
CPython 3.11 with compiled .pyc files, spawning and reaping ``python -c 'import
lute_async.task'`` took 8.4 ms longer than ``python -c pass`` (~14.8 ms) with msgpack and 1.5 ms
longer without it (medians of 80 alternating spawns; ``-X importtime``: 7.9 ms down to 1.3 ms at
best); a task that reports started and result went from 1.71x to 1.26x the bare interpreter.
:class:`~lute_async.task.Reporter` packs a task's first few messages with :func:`pack_plain`
and then switches to msgpack's C packer, ~12x faster for bulk sends (0.4 us against 4.6 us for a
100-byte message).

:func:`pack_plain` covers exactly ``None``, ``bool``, ``int`` (-2**63 .. 2**64-1), ``float``,
``str``, ``bytes``, ``list``, ``tuple`` and ``dict`` (exact types, not subclasses) and returns
the bytes ``msgpack.packb(value, use_bin_type=True)`` returns: the smallest format for each
value, float64 for floats, str8 and bin for ``str`` and ``bytes``. Anything else (other types,
ints out of range, strings that are not valid UTF-8, deep nesting) raises :class:`NotPlain`,
and the caller packs the value with msgpack itself; the byte-identity is a tested property
(``tests/test_plain_msgpack.py``).

It imports nothing: a float's IEEE 754 bits are read from ``float.hex()`` (exact) rather than
from the ``struct`` extension. NaN is the one float left to msgpack, because its sign and
payload bits do not show in ``float.hex()``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: every task start would pay for it
if TYPE_CHECKING:
    from typing import Any

#: Containers nested deeper than this are left to msgpack (which has its own limit, 511): it
#: keeps this encoder's recursion far from Python's.
MAX_DEPTH = 32


class NotPlain(Exception):
    """The value holds something :func:`pack_plain` does not encode; use msgpack for it."""


def pack_plain(value: object) -> bytes:
    """``value`` as msgpack, byte for byte what ``msgpack.packb(value, use_bin_type=True)``
    gives, or :class:`NotPlain` when it holds anything but plain data."""
    out = bytearray()
    _pack_into(out, value, MAX_DEPTH)
    return bytes(out)


def _pack_into(out: bytearray, value: Any, depth: int) -> None:
    kind = type(value)
    if kind is str:
        try:
            data = value.encode()
        except UnicodeEncodeError:  # lone surrogates: msgpack raises the error itself
            raise NotPlain from None
        _header(out, len(data), 0xA0, 32, b"\xd9", b"\xda", b"\xdb")
        out += data
    elif value is None:
        out.append(0xC0)
    elif kind is bool:
        out.append(0xC3 if value else 0xC2)
    elif kind is int:
        _pack_int(out, value)
    elif kind is float:
        out.append(0xCB)
        out += _float64(value)
    elif kind is bytes:
        _header(out, len(value), 0, 0, b"\xc4", b"\xc5", b"\xc6")
        out += value
    elif kind is list or kind is tuple:
        if not depth:
            raise NotPlain
        _header(out, len(value), 0x90, 16, b"", b"\xdc", b"\xdd")
        for item in value:
            _pack_into(out, item, depth - 1)
    elif kind is dict:
        if not depth:
            raise NotPlain
        _header(out, len(value), 0x80, 16, b"", b"\xde", b"\xdf")
        for key, item in value.items():
            _pack_into(out, key, depth - 1)
            _pack_into(out, item, depth - 1)
    else:
        raise NotPlain


def _header(
    out: bytearray, n: int, fix: int, fix_limit: int, size8: bytes, size16: bytes, size32: bytes
) -> None:
    """A length header: ``fix | n`` below ``fix_limit``, else the 8-, 16- or 32-bit form (an
    empty ``size8`` means the type has none, as arrays and maps)."""
    if n < fix_limit:
        out.append(fix | n)
    elif n < 0x100 and size8:
        out += size8
        out.append(n)
    elif n < 0x10000:
        out += size16
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out += size32
        out += n.to_bytes(4, "big")
    else:
        raise NotPlain  # too large for msgpack: it raises the error itself


def _pack_int(out: bytearray, n: int) -> None:
    if n >= 0:
        if n < 0x80:
            out.append(n)
        elif n < 0x100:
            out.append(0xCC)
            out.append(n)
        elif n < 0x10000:
            out.append(0xCD)
            out += n.to_bytes(2, "big")
        elif n < 0x100000000:
            out.append(0xCE)
            out += n.to_bytes(4, "big")
        elif n < 0x10000000000000000:
            out.append(0xCF)
            out += n.to_bytes(8, "big")
        else:
            raise NotPlain
    elif n >= -0x20:
        out.append(n & 0xFF)  # negative fixint
    elif n >= -0x80:
        out.append(0xD0)
        out.append(n & 0xFF)
    elif n >= -0x8000:
        out.append(0xD1)
        out += n.to_bytes(2, "big", signed=True)
    elif n >= -0x80000000:
        out.append(0xD2)
        out += n.to_bytes(4, "big", signed=True)
    elif n >= -0x8000000000000000:
        out.append(0xD3)
        out += n.to_bytes(8, "big", signed=True)
    else:
        raise NotPlain


def _float64(value: float) -> bytes:
    """The 8 big-endian IEEE 754 bytes of ``value``, read from its exact hex form."""
    text = value.hex()  # "-0x1.8000000000000p+1"; subnormals "0x0.<13 digits>p-1022"
    sign = 0
    if text[0] == "-":
        sign, text = 1 << 63, text[1:]
    if text[0] != "0":  # "inf" or "nan"
        if text != "inf":
            raise NotPlain
        return (sign | 0x7FF << 52).to_bytes(8, "big")
    significand, _, exponent = text[2:].partition("p")
    lead, _, fraction = significand.partition(".")
    bits = int(fraction, 16) << 4 * (13 - len(fraction))  # zero is "0x0.0p+0": one digit
    if lead == "1":  # normal; "0" is zero or subnormal, whose biased exponent is 0
        bits |= (int(exponent) + 1023) << 52
    return (sign | bits).to_bytes(8, "big")
