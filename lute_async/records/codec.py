"""A record's stored form: the JSON document plus its result as msgpack, and back.

The result is kept apart as msgpack, so a ``bytes`` payload stays bytes (JSON would escape and
inflate it). A result larger than ``max_result_bytes`` is recorded as a description of its
payload (type, size, sha256) instead; so is one that cannot be converted at all (nested too
deep, a failing conversion), and any other field that cannot is replaced by a summary (see
:func:`~lute_async.records.model.to_jsonable_or_summary`): saving never fails on a value a task
sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import msgpack
import msgspec

from lute_async.logs import get_logger
from lute_async.records.model import (
    PLAIN_TYPES,
    AnalysisRecord,
    to_jsonable,
    to_jsonable_or_summary,
    unserialisable_summary,
)
from lute_async.redaction import redact_env

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "StoredRecord",
    "check_storable",
    "describe_payload",
    "document_json",
    "pack_result",
    "record_from_stored",
    "stored_record",
]

DEFAULT_MAX_RESULT_BYTES: Final = 64 * 1024 * 1024
"""Results whose msgpack encoding is larger are recorded as a summary (see RecordStore)."""


class StoredRecord(NamedTuple):
    """A record as the database and the journal keep it."""

    document: dict[str, Any]
    """Every field as JSON types, env redacted; ``result`` is None when it is in *result*."""
    result: bytes | None
    """The result as msgpack (bytes stay bytes), or None when there is none or it is in
    *document* (it holds an int beyond msgpack's 64 bits)."""


_DOCUMENT_FIELDS: Final = tuple(
    f.name for f in dataclasses.fields(AnalysisRecord) if f.name != "result"
)
#: The values of a record's _DOCUMENT_FIELDS, as a tuple, in one call.
_document_values: Final = operator.attrgetter(*_DOCUMENT_FIELDS)


def stored_record(record: AnalysisRecord, max_result_bytes: int) -> StoredRecord:
    """*record* in its stored form, env redacted again, its result packed or summarised."""
    # Most fields of a record are None or plain scalars: those need no conversion (and no
    # call: a save runs this for every field, three times a run).
    document = {
        name: value if type(value) in PLAIN_TYPES else convert(value)
        for name, convert, value in zip(
            _DOCUMENT_FIELDS, _CONVERTERS, _document_values(record), strict=True
        )
    }
    document["env"] = redact_env({str(k): str(v) for k, v in record.env.items()})
    packed = pack_result(record.id, record.result, max_result_bytes)
    document["result"] = to_jsonable_or_summary(record.result) if packed is None else None
    return StoredRecord(document, packed)


def pack_result(run_id: str, result: Any, max_result_bytes: int) -> bytes | None:
    """*result* as msgpack, or a summary of it when the encoding exceeds *max_result_bytes*.

    None when there is no result or it cannot be msgpack (an int beyond 64 bits): the JSON
    document keeps it then, as before results had a column of their own.
    """
    if result is None:
        return None
    payload, summary = result, None
    if isinstance(result, Mapping) and "payload" in result:
        payload, summary = result["payload"], result.get("summary")
    try:
        plain = to_jsonable(result, keep_bytes=True)
    except Exception as exc:  # nested too deep, a failing conversion...
        omitted = unserialisable_summary(payload, exc)["omitted"]
        omitted.update(sha256=None, digest_of=None)
        omitted["reason"] = f"the result cannot be recorded: {omitted['reason']}"
        return _described(run_id, omitted, summary, max_result_bytes, reason=omitted["reason"])
    plain_payload = plain["payload"] if payload is not result else plain
    # A payload that alone is too large (the usual case) is not packed just to be measured.
    if not (isinstance(plain_payload, bytes | str) and len(plain_payload) > max_result_bytes):
        try:
            packed: bytes = msgpack.packb(plain, use_bin_type=True)
        except OverflowError:
            return None
        except ValueError:  # a bytes or str value beyond msgpack's 4 GiB
            pass
        else:
            if len(packed) <= max_result_bytes:
                return packed
    omitted = describe_payload(payload, plain_payload)
    omitted["reason"] = (
        f"the result's msgpack encoding is larger than max_result_bytes ({max_result_bytes}); "
        "only this description of its payload was recorded"
    )
    return _described(run_id, omitted, summary, max_result_bytes)


def _described(
    run_id: str, omitted: dict[str, Any], summary: Any, max_result_bytes: int, **why: str
) -> bytes:
    """The stored form of a result recorded only as *omitted* (its description), logged with
    *why* (the reason, unless the result was only too large)."""
    get_logger().warning(
        "result_not_recorded",
        run_id=run_id,
        payload_type=omitted["type"],
        size=omitted["size"],
        sha256=omitted["sha256"],
        max_result_bytes=max_result_bytes,
        **why,
    )
    brief = summary[:1024] if isinstance(summary, str) else None
    described: bytes = msgpack.packb({"payload": None, "summary": brief, "omitted": omitted})
    return described


def describe_payload(payload: Any, plain: Any) -> dict[str, Any]:
    """Type, size and sha256 of a payload too large to record, so a copy can be checked.

    Size and digest are of the bytes themselves, of a string's UTF-8, or else of the
    payload's msgpack encoding (``digest_of`` says which).
    """
    if isinstance(plain, bytes):
        data, digest_of = plain, "bytes"
    elif isinstance(plain, str):
        data, digest_of = plain.encode("utf-8", errors="surrogatepass"), "utf-8"
    else:
        try:
            data, digest_of = msgpack.packb(plain, use_bin_type=True), "msgpack"
        except (OverflowError, ValueError):
            data, digest_of = None, None
    return {
        "type": type(payload).__name__,
        "size": None if data is None else len(data),
        "sha256": None if data is None else hashlib.sha256(data).hexdigest(),
        "digest_of": digest_of,
    }


def record_from_stored(document: Any, packed: bytes | None) -> AnalysisRecord:
    """Rebuild a record from its stored form; ValueError or TypeError when it is damaged."""
    if not isinstance(document, dict):
        raise TypeError(f"expected a JSON object, got {type(document).__name__}")
    if packed is not None:
        document["result"] = msgpack.unpackb(packed, raw=False, strict_map_key=False)
    return AnalysisRecord.from_dict(document)


_ROW_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "id": (str,),
    "name": (str,),
    "status": (str,),
    "submitted_at": (int, float),
    "ended_at": (int, float, type(None)),
    "executor_pid": (int, type(None)),
    "executor_host": (str, type(None)),
    "env": (dict,),
    "tags": (list,),
}
"""What a document's fields must hold to be written as a row: the columns, env and tags."""

#: How each of _DOCUMENT_FIELDS is converted: the row's columns are the executor's own values;
#: every other field may hold what a task sent, so it is converted without ever raising.
_CONVERTERS: Final[tuple[Callable[[Any], Any], ...]] = tuple(
    to_jsonable if name in _ROW_FIELD_TYPES else to_jsonable_or_summary
    for name in _DOCUMENT_FIELDS
)


def check_storable(document: Mapping[str, Any]) -> None:
    """Raise TypeError when *document* holds a field no row can take (``"env": null``)."""
    for name, allowed in _ROW_FIELD_TYPES.items():
        if name in document and not isinstance(document[name], allowed):
            raise TypeError(f"field {name!r} holds a {type(document[name]).__name__}")


def document_json(document: Mapping[str, Any]) -> str:
    """A stored document as compact JSON text (the database column and the journal line).

    Written by msgspec (~4x faster than :func:`json.dumps` for a run's document, three times
    a run), except when the document may hold a NaN or an infinity, which msgspec would
    write as ``null``, or a character beyond ASCII, which msgspec writes as it is (a
    database whose encoding is not UTF-8 may refuse it): then, and whenever msgspec refuses
    a value (a lone surrogate), by :func:`json.dumps` as before (``NaN``, ``\\u00e9``). The
    text may differ (``1e16`` for ``1e+16``); what it decodes to does not: a document holds
    plain JSON types only (see :func:`stored_record`).
    """
    try:
        if _NON_FINITE.search(_MSGPACK.encode(document)) is None:
            text = _JSON.encode(document)
            if text.isascii():
                return text.decode("ascii")
    except Exception:  # json.dumps writes it, or raises its own error
        pass
    return json.dumps(document, separators=(",", ":"))


_MSGPACK: Final = msgspec.msgpack.Encoder()
_JSON: Final = msgspec.json.Encoder()
#: A non-finite float as msgspec's msgpack writes every float: 0xcb and a big-endian double
#: whose exponent bits are all set. The same bytes inside a string only cost a json.dumps.
_NON_FINITE: Final = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
