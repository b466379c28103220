"""The record save path's shortcuts keep what was stored before them: the JSON document reads
back as :func:`json.dumps` wrote it (NaN and infinities included), plain fields are copied as
the full conversion would, and the sqlite connection is back to its usual settings for every
use but the event loop's own commits; record keepers share one table of handlers."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from lute_async.messages import EventName, Message
from lute_async.records import AnalysisRecord, RecordStore
from lute_async.records.codec import document_json, stored_record
from lute_async.records.database import WAL_AUTOCHECKPOINT, RecordDatabase
from lute_async.records.keeper import RecordKeeper
from lute_async.records.model import (
    MAX_NESTING,
    UnserialisableValue,
    to_jsonable,
    to_jsonable_or_summary,
)
from lute_async.records.store import save_at_once


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (repr tells NaN, infinities and -0.0 apart exactly)."""
    return repr(a) == repr(b)


@pytest.mark.parametrize(
    "document",
    [
        {"x": math.nan},
        {"x": [math.inf, -math.inf, 1.5]},
        {"nested": {"deep": [{"x": math.nan}]}},
        {"text": "\ud800 lone surrogate"},
        {"text": "é ü \u2028 \x00 \x7f \x1b[0m"},
        {"big": 2**70, "small": -(2**70)},
        {"floats": [1e16, 0.1, -0.0, 5e-324, 1.7976931348623157e308]},
        {"text": "\xcb\x7f\xf0 looks like a NaN in msgpack"},
        {"empty": {}, "list": [], "none": None, "yes": True, "no": False},
    ],
)
def test_a_document_reads_back_as_json_dumps_wrote_it(document: dict[str, Any]) -> None:
    text = document_json(document)
    assert _same(json.loads(text), json.loads(json.dumps(document)))
    assert "\n" not in text  # one journal line


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_float_is_written_as_json_dumps_writes_it(value: float) -> None:
    assert document_json({"x": value}) == json.dumps({"x": value}, separators=(",", ":"))


def test_a_document_json_cannot_write_still_raises() -> None:
    with pytest.raises(TypeError):
        document_json({"x": object()})


def test_a_record_with_nan_params_and_unicode_reads_back_from_the_database(
    tmp_path: Path,
) -> None:
    store = RecordStore(tmp_path / "runs.db")
    record = AnalysisRecord(
        name="ünïcode \u2028",
        params={"threshold": math.nan, "limit": math.inf, "label": "café 😀"},
        extra={"weights": [math.nan, -math.inf, 0.5]},
    )
    assert save_at_once(store, [record])  # the event loop's path
    again = store.get(record.id)
    assert _same(again.params, record.params)
    assert _same(again.extra, record.extra)
    assert again.name == record.name
    store.close()


_S = type("S", (str,), {})  # a str subclass: stored as a plain str


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": "x", "c": None, "d": 1.5, "e": True},
        ["a", 1, None, 2.5],
        [{"kind": "pipe", "fd": 3}, {"kind": "socket", "shared": True}],
        [{"a": 1}, {"b": [1, (2,)]}],
        [{"a": Path("/tmp")}],
        [{1: "int key"}],
        [{"a": _S("sub")}],
        [{}, []],
        {"nested": {"a": 1}},
        {1: "int key"},
        [("tuple",), {"x"}],
        {"path": Path("/tmp")},
        _S("str subclass"),
        {"sub": _S("str subclass")},
        [_S("str subclass")],
        None,
        2.5,
    ],
)
def test_the_plain_shortcuts_convert_as_the_full_conversion(value: Any) -> None:
    for converted in (to_jsonable_or_summary(value), to_jsonable(value)):
        assert json.dumps(converted) == json.dumps(_one_by_one(value))
        _assert_plain(converted)
        if isinstance(value, dict | list):
            assert converted is not value  # a copy: the record may change after the save


def _one_by_one(value: Any) -> Any:
    """The conversion, written out without any shortcut: one item at a time."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, dict):
        return {
            (key if isinstance(key, str) else str(_one_by_one(key))): _one_by_one(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_one_by_one(item) for item in value]
    if isinstance(value, set):
        return sorted((_one_by_one(item) for item in value), key=repr)
    assert isinstance(value, Path)
    return str(value)


def _assert_plain(value: Any) -> None:
    assert type(value) in (dict, list, str, int, float, bool, type(None))
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain(item)


def test_a_list_of_tables_nested_to_the_limit_is_summarised_not_copied() -> None:
    value: Any = [{"a": 1}]
    for _ in range(MAX_NESTING - 1):
        value = [value]
    with pytest.raises(UnserialisableValue):
        to_jsonable(value)
    assert "omitted" in to_jsonable_or_summary(value)


def test_stored_record_keeps_every_field() -> None:
    record = AnalysisRecord(name="all", params={"p": 1}, tags=["t"], exit_code=3, pid=42)
    document = stored_record(record, 1 << 20).document
    assert document == {**record.to_dict(), "result": None}


def _settings(conn: sqlite3.Connection) -> tuple[int, int]:
    busy = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    pages = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    return int(busy), int(pages)


def test_the_loop_s_commits_wait_for_nothing_and_every_other_use_waits_as_usual(
    tmp_path: Path,
) -> None:
    store = RecordStore(tmp_path / "runs.db", busy_timeout=7.0)
    database = store._database
    assert isinstance(database, RecordDatabase)
    usual = (7000, WAL_AUTOCHECKPOINT)
    for _ in range(2):  # the loop's settings kept from one of its commits to the next
        with database.write_at_once("test") as conn:
            assert _settings(conn) == (0, 0)
    with database.write("test") as conn:  # the writer's thread, a lease renewal...
        assert _settings(conn) == usual
    with database.write_at_once("test") as conn:
        assert _settings(conn) == (0, 0)
    assert database.read("PRAGMA busy_timeout", (), "test") == [(usual[0],)]
    with database.write_at_once("test") as conn:
        pass
    assert database.checkpoint() is not None
    with database.write("test") as conn:
        assert _settings(conn) == usual
    store.close()


def test_a_write_after_the_loop_s_commits_waits_for_another_process_s_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = RecordStore(path, busy_timeout=30.0)
    first = AnalysisRecord(name="first")
    assert save_at_once(store, [first])  # the connection now has the loop's settings
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    second = AnalysisRecord(name="second")
    assert not save_at_once(store, [second])  # the loop never waits: nothing written
    entered = threading.Event()
    errors: list[BaseException] = []

    def save() -> None:
        entered.set()
        try:
            store.save(second)  # the thread's way: waits for the lock (no busy timeout: fails)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=save)
    thread.start()
    entered.wait()
    other.execute("COMMIT")
    thread.join()
    other.close()
    assert errors == []
    assert store.get(second.id).name == "second"
    store.close()


def test_keepers_share_their_handlers_and_each_updates_its_own_record() -> None:
    plain, judged = AnalysisRecord(name="plain"), AnalysisRecord(name="judged")
    keepers = RecordKeeper(plain), RecordKeeper(judged, limits={"memory": 1 << 20})
    assert EventName.LOG not in keepers[0].handled
    assert EventName.LOG in keepers[1].handled  # its verdict may depend on its stderr
    assert keepers[0].handled | {EventName.LOG} == keepers[1].handled
    started = Message(EventName.STARTED, {"pid": 7}, ts=1.0)
    assert keepers[0].apply(started)
    assert (plain.status, plain.pid, judged.status) == ("RUNNING", 7, "PENDING")
    line = Message(EventName.LOG, {"stream": "stderr", "message": "MemoryError"})
    assert not keepers[1].apply(line) and not keepers[0].apply(line)
    assert list(keepers[1].judge._stderr) == ["MemoryError"]
    assert list(keepers[0].judge._stderr) == []
    done = Message(EventName.DONE, {"exit_code": 0}, ts=2.0)
    assert keepers[1].apply(done)
    assert (judged.status, judged.exit_code, plain.status) == ("COMPLETED", 0, "RUNNING")


@pytest.mark.parametrize("text", ["café", "😀", "\u2028", "\x7f", "\x9f", "plain"])
def test_a_document_is_ascii_text_as_json_dumps_writes_it(text: str) -> None:
    written = document_json({"name": text, "n": 1})
    assert written.isascii()  # a database whose encoding is not UTF-8 takes it
    assert json.loads(written) == {"name": text, "n": 1}
