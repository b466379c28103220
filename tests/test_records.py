"""Specification of run records and their store: the store's tests run on sqlite and on
PostgreSQL (the ``record_db`` fixture), the file-level ones on sqlite only."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from pg_support import raw_execute, raw_query

from lute_async import Executor
from lute_async import records as records_module
from lute_async.errors import RecordNotFound, RecordStoreError
from lute_async.records import (
    SCHEMA_VERSION,
    AnalysisRecord,
    RecordStore,
    RunFilter,
    default_db_path,
    pid_is_alive,
)
from lute_async.redaction import REDACTED

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "records" / "runs.db"


@pytest.fixture
def store(record_db: Path | str) -> Iterator[RecordStore]:
    with RecordStore(record_db) as opened:
        yield opened


def dead_pid() -> int:
    """Return the pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def full_record() -> AnalysisRecord:
    """A record with every field set to something other than its default."""
    return AnalysisRecord(
        id="0123456789abcdef0123456789abcdef",
        name="find_peaks",
        command=["python", "peaks.py", "--thr", "3"],
        params={"threshold": 3, "files": ["a.h5", "b.h5"], "nested": {"x": 1.5}},
        env={"OMP_NUM_THREADS": "4"},
        communicators=[{"kind": "pipe", "fd": 3}, {"kind": "socket", "path": "/tmp/s"}],
        launcher={"kind": "slurm", "ntasks": 8},
        status="FAILED",
        result={"payload": {"peaks": 42}, "summary": "42 peaks"},
        exit_code=1,
        signal=15,
        error={"type": "ValueError", "message": "bad", "traceback": "Traceback..."},
        submitted_at=1000.0,
        started_at=1001.0,
        ended_at=1011.5,
        host="node01",
        pid=4242,
        executor_pid=1,
        executor_host="login01",
        slurm_job_id="123456",
        ranks=8,
        hook_errors=[
            {"event": "done", "hook": "m:h", "type": "KeyError", "message": "x", "traceback": "t"}
        ],
        tags=["beamtime", "run42"],
        usage={"cpu_user": 1.5, "max_rss": 1024},
        verdict={"kind": "exit_code", "detail": "exited with 1"},
        extra={"slurm_state": "FAILED", "node_list": "node[01-02]"},
        cwd="/data/run42",
        attempts=[{"attempt": 1, "status": "FAILED", "exit_code": 1, "next_at": 1012.5}],
    )


def record(name: str = "job", **fields: object) -> AnalysisRecord:
    fields.setdefault("status", "COMPLETED")
    return AnalysisRecord(name=name, **fields)  # type: ignore[arg-type]


# --- AnalysisRecord ---------------------------------------------------------------------------


def test_full_record_fixture_sets_every_field() -> None:
    defaults = AnalysisRecord(name="")
    unset = [
        f.name
        for f in dataclasses.fields(AnalysisRecord)
        if getattr(full_record(), f.name) == getattr(defaults, f.name)
    ]
    assert unset == []


def test_new_records_get_distinct_hex_ids_and_this_process_as_executor() -> None:
    first, second = AnalysisRecord(name="a"), AnalysisRecord(name="a")
    assert first.id != second.id
    assert len(first.id) == 32
    int(first.id, 16)
    assert first.executor_pid == os.getpid()
    assert first.executor_host == socket.gethostname()
    assert first.status == "PENDING"


def test_records_do_not_share_mutable_defaults() -> None:
    first, second = AnalysisRecord(name="a"), AnalysisRecord(name="b")
    first.tags.append("x")
    first.params["k"] = 1
    assert second.tags == []
    assert second.params == {}


def test_to_dict_from_dict_roundtrips() -> None:
    original = full_record()
    assert AnalysisRecord.from_dict(original.to_dict()) == original


def test_to_dict_is_json_safe_for_non_json_params() -> None:
    class Colour(enum.Enum):
        RED = "red"

    rec = AnalysisRecord(
        name="x",
        params={"path": Path("/a/b"), "pair": (1, 2), "set": {3, 1}, "raw": b"hi", "c": Colour.RED},
    )
    document = json.loads(json.dumps(rec.to_dict()))
    assert document["params"] == {
        "path": "/a/b",
        "pair": [1, 2],
        "set": [1, 3],
        "raw": "hi",
        "c": "red",
    }


def test_from_dict_ignores_unknown_keys_and_defaults_missing_ones() -> None:
    rec = AnalysisRecord.from_dict({"name": "x", "status": "RUNNING", "from_the_future": 1})
    assert rec.name == "x"
    assert rec.status == "RUNNING"
    assert rec.tags == []


def test_status_given_as_an_enum_member_is_stored_as_its_name() -> None:
    class Status(enum.StrEnum):
        RUNNING = "RUNNING"

    rec = AnalysisRecord(name="x", status=Status.RUNNING)
    assert type(rec.status) is str
    assert rec.status == "RUNNING"


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("PENDING", False),
        ("QUEUED", False),
        ("RUNNING", False),
        ("STOPPED", False),
        ("COMPLETED", True),
        ("FAILED", True),
        ("CANCELLED", True),
        ("TIMEDOUT", True),
        ("LOST", True),
    ],
)
def test_is_terminal_for_each_status(status: str, terminal: bool) -> None:
    assert AnalysisRecord(name="x", status=status).is_terminal is terminal


def test_duration_is_end_minus_start_once_both_are_known() -> None:
    rec = AnalysisRecord(name="x", started_at=10.0)
    assert rec.duration is None
    rec.ended_at = 12.5
    assert rec.duration == 2.5


# --- opening ----------------------------------------------------------------------------------


def test_opening_creates_parent_directory_and_schema(db: Path) -> None:
    with RecordStore(db) as store:
        assert store.path == db
    assert db.exists()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_database_with_newer_schema_is_refused(record_db: Path | str) -> None:
    if isinstance(record_db, Path):
        raw_execute(record_db, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    else:
        with RecordStore(record_db):
            pass
        raw_execute(record_db, f"UPDATE lute_async_schema SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RecordStoreError, match=rf"schema v{SCHEMA_VERSION + 1}.*upgrade") as caught:
        RecordStore(record_db)
    assert "records database" in str(caught.value)


def test_file_that_is_not_sqlite_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(RecordStoreError) as caught:
        RecordStore(path)
    assert str(path) in str(caught.value)


def test_another_programs_database_is_refused(record_db: Path | str) -> None:
    raw_execute(record_db, "CREATE TABLE runs (x INTEGER)")
    with pytest.raises(RecordStoreError, match="cannot migrate"):
        RecordStore(record_db)


def test_directory_as_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordStoreError, match=re.escape(str(tmp_path))):
        RecordStore(tmp_path)


def test_closed_store_refuses_calls(record_db: Path | str) -> None:
    db = record_db
    store = RecordStore(db)
    store.close()
    store.close()  # idempotent
    with pytest.raises(RecordStoreError, match="closed"):
        store.get("x")


def test_default_db_path_follows_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LUTE_ASYNC_DB", str(tmp_path / "mine.db"))
    assert default_db_path() == tmp_path / "mine.db"
    monkeypatch.delenv("LUTE_ASYNC_DB")
    assert default_db_path().parts[-2:] == ("lute-async", "runs.db")


# --- save / get -------------------------------------------------------------------------------


def test_save_then_get_returns_an_equal_record(store: RecordStore) -> None:
    original = full_record()
    store.save(original)
    assert store.get(original.id) == original


def test_saving_again_updates_the_record(store: RecordStore) -> None:
    rec = record(status="RUNNING", tags=["a", "b"])
    store.save(rec)
    rec.status = "COMPLETED"
    rec.ended_at = rec.submitted_at + 1
    rec.tags = ["c"]
    store.save(rec)
    assert store.get(rec.id).status == "COMPLETED"
    assert store.query(tags=["a"]) == []
    assert [r.id for r in store.query(tags=["c"])] == [rec.id]
    assert len(store.query()) == 1


def test_records_persist_across_reopening(record_db: Path | str) -> None:
    db = record_db
    original = full_record()
    with RecordStore(db) as store:
        store.save(original)
    with RecordStore(db) as store:
        assert store.get(original.id) == original


def test_get_of_unknown_id_raises_record_not_found(store: RecordStore) -> None:
    with pytest.raises(RecordNotFound, match="nope") as caught:
        store.get("nope")
    assert isinstance(caught.value, KeyError)
    assert caught.value.run_id == "nope"


def test_save_redacts_secrets_in_env(store: RecordStore, record_db: Path | str) -> None:
    rec = record(env={"API_TOKEN": "tok-very-secret", "HOME": "/home/me"})
    store.save(rec)
    assert store.get(rec.id).env == {"API_TOKEN": REDACTED, "HOME": "/home/me"}
    assert rec.env["API_TOKEN"] == "tok-very-secret"  # the caller's record is left alone
    docs = [row[0] for row in raw_query(record_db, "SELECT doc FROM runs")]
    assert not any("tok-very-secret" in doc for doc in docs)


def test_save_refuses_an_unknown_status(store: RecordStore) -> None:
    with pytest.raises(ValueError, match="BOGUS"):
        store.save(record(status="BOGUS"))


def test_threads_can_share_one_store(store: RecordStore) -> None:
    def write(worker: int) -> None:
        for i in range(50):
            store.save(record(f"w{worker}", submitted_at=float(i)))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.query()) == 200


# --- query / latest ---------------------------------------------------------------------------


@pytest.fixture
def populated(store: RecordStore) -> RecordStore:
    store.save(record("a", id="a1", status="COMPLETED", submitted_at=100.0, tags=["x", "y"]))
    store.save(record("a", id="a2", status="FAILED", submitted_at=200.0, tags=["x"]))
    store.save(record("a", id="a3", status="COMPLETED", submitted_at=300.0))
    store.save(record("b", id="b1", status="RUNNING", submitted_at=150.0, tags=["y"]))
    return store


def ids(records: list[AnalysisRecord]) -> list[str]:
    return [r.id for r in records]


def test_query_without_filters_returns_all_newest_first(populated: RecordStore) -> None:
    assert ids(populated.query()) == ["a3", "a2", "b1", "a1"]


def test_query_oldest_first(populated: RecordStore) -> None:
    assert ids(populated.query(newest_first=False)) == ["a1", "b1", "a2", "a3"]


def test_query_by_name(populated: RecordStore) -> None:
    assert ids(populated.query(name="b")) == ["b1"]


def test_query_by_one_status_or_several(populated: RecordStore) -> None:
    assert ids(populated.query(status="COMPLETED")) == ["a3", "a1"]
    assert ids(populated.query(status=["FAILED", "RUNNING"])) == ["a2", "b1"]


def test_query_since_is_inclusive_and_until_exclusive(populated: RecordStore) -> None:
    assert ids(populated.query(since=150.0)) == ["a3", "a2", "b1"]
    assert ids(populated.query(until=200.0)) == ["b1", "a1"]
    assert ids(populated.query(since=150.0, until=300.0)) == ["a2", "b1"]


def test_query_by_tags_requires_all_of_them(populated: RecordStore) -> None:
    assert ids(populated.query(tags=["x"])) == ["a2", "a1"]
    assert ids(populated.query(tags=["x", "y"])) == ["a1"]
    assert ids(populated.query(tags="y")) == ["b1", "a1"]
    assert populated.query(tags=["x", "nope"]) == []


def test_query_with_limit(populated: RecordStore) -> None:
    assert ids(populated.query(limit=2)) == ["a3", "a2"]
    assert populated.query(limit=0) == []


def test_query_combines_filters(populated: RecordStore) -> None:
    assert ids(populated.query(name="a", status="COMPLETED", tags=["y"])) == ["a1"]


@pytest.mark.parametrize("page", [1, 2, 3, 256])
def test_iterate_pages_through_the_same_runs_in_the_same_order_as_query(
    store: RecordStore, page: int
) -> None:
    # Runs submitted at the same instant are ordered by insertion, across page boundaries too.
    for n in range(9):
        store.save(record("t", id=f"r{n}", submitted_at=100.0 + n // 3, tags=["odd"] * (n % 2)))
    for filters in ({}, {"tags": "odd"}, {"since": 101.0}, {"name": "none"}):
        for newest_first in (True, False):
            expected = ids(store.query(**filters, newest_first=newest_first))
            runs = RunFilter(**filters)
            got = ids(list(store.iterate(runs, newest_first=newest_first, page=page)))
            assert got == expected, (filters, newest_first)
    assert ids(list(store.iterate(newest_first=False, page=page)))[:4] == ["r0", "r1", "r2", "r3"]
    with pytest.raises(ValueError, match="page must be >= 1"):
        next(store.iterate(page=0))


def test_latest_is_the_newest_completed_run_by_default(populated: RecordStore) -> None:
    latest = populated.latest("a")
    assert latest is not None
    assert latest.id == "a3"


def test_latest_with_another_status_or_any(populated: RecordStore) -> None:
    failed = populated.latest("a", status="FAILED")
    assert failed is not None
    assert failed.id == "a2"
    anything = populated.latest("b", status=None)
    assert anything is not None
    assert anything.id == "b1"
    assert populated.latest("b") is None
    assert populated.latest("unknown") is None


# --- mark_lost --------------------------------------------------------------------------------


def test_pid_is_alive_tells_live_from_dead_processes() -> None:
    assert pid_is_alive(os.getpid())
    assert not pid_is_alive(dead_pid())
    assert not pid_is_alive(0)


def test_run_of_a_dead_executor_is_marked_lost(store: RecordStore) -> None:
    pid = dead_pid()
    rec = record(status="RUNNING", executor_pid=pid, started_at=5.0)
    store.save(rec)
    assert store.mark_lost() == [rec.id]
    lost = store.get(rec.id)
    assert lost.status == "LOST"
    assert lost.ended_at is not None
    assert lost.error == {
        "type": "ExecutorLost",
        "message": f"executor process {pid} on {socket.gethostname()} exited while the run "
        "was RUNNING",
        "traceback": None,
    }


@pytest.mark.parametrize("status", ["PENDING", "QUEUED", "RUNNING", "STOPPED"])
def test_every_active_status_of_a_dead_executor_is_marked_lost(
    store: RecordStore, status: str
) -> None:
    rec = record(status=status, executor_pid=dead_pid())
    store.save(rec)
    assert store.mark_lost() == [rec.id]
    assert status in store.get(rec.id).error["message"]  # type: ignore[index]


def test_run_of_a_live_executor_is_not_marked_lost(store: RecordStore) -> None:
    rec = record(status="RUNNING", executor_pid=os.getpid())
    store.save(rec)
    assert store.mark_lost() == []
    assert store.get(rec.id).status == "RUNNING"


def test_ended_runs_and_other_hosts_runs_are_left_alone(store: RecordStore) -> None:
    pid = dead_pid()
    ended = record(status="COMPLETED", executor_pid=pid)
    elsewhere = record(
        status="RUNNING", executor_pid=pid, executor_host="not-" + socket.gethostname()
    )
    store.save(ended)
    store.save(elsewhere)
    assert store.mark_lost() == []
    assert store.get(ended.id).status == "COMPLETED"
    assert store.get(elsewhere.id).status == "RUNNING"


def test_mark_lost_asks_the_given_liveness_check(store: RecordStore) -> None:
    rec = record(status="RUNNING", executor_pid=os.getpid())
    store.save(rec)
    asked: list[tuple[str, int]] = []

    def is_alive(host: str, pid: int) -> bool:
        asked.append((host, pid))
        return False

    assert store.mark_lost(is_alive) == [rec.id]
    assert asked == [(socket.gethostname(), os.getpid())]


def test_opening_marks_runs_of_dead_executors_lost(record_db: Path | str) -> None:
    db = record_db
    rec = record(status="RUNNING", executor_pid=dead_pid())
    with RecordStore(db, mark_lost=False) as store:
        store.save(rec)
    with RecordStore(db, mark_lost=False) as store:
        assert store.lost_on_open == []
        assert store.get(rec.id).status == "RUNNING"
    with RecordStore(db) as store:
        assert store.lost_on_open == [rec.id]
        assert store.get(rec.id).status == "LOST"


def test_unreadable_run_is_reported_and_does_not_block_opening(db: Path) -> None:
    good = record(status="RUNNING", executor_pid=dead_pid())
    with RecordStore(db, mark_lost=False) as store:
        store.save(good)
    raw = sqlite3.connect(db)
    raw.execute(
        "INSERT INTO runs (id, name, status, submitted_at, executor_pid, executor_host, doc) "
        "VALUES ('bad', 'x', 'RUNNING', 0, ?, ?, 'not json')",
        (dead_pid(), socket.gethostname()),
    )
    raw.commit()
    raw.close()
    with RecordStore(db) as store:
        assert store.lost_on_open == [good.id]
        with pytest.raises(RecordStoreError, match=r"run bad .* unreadable"):
            store.get("bad")


# --- several processes ------------------------------------------------------------------------

# Each child waits for a line on stdin before opening, so all of them open at nearly the same
# moment without the test sleeping.
WRITER = textwrap.dedent(
    """
    import sys
    from lute_async.records import AnalysisRecord, RecordStore

    path, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.stdin.readline()
    with RecordStore(path, mark_lost=False) as store:
        for i in range(count):
            store.save(AnalysisRecord(name=f"w{worker}", status="COMPLETED", tags=[f"i{i}"]))
    """
)


def run_writers(db: Path | str, workers: int, count: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(n), str(count)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for n in range(workers)
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
    failures = []
    for child in children:
        assert child.stderr is not None
        with child.stderr:
            stderr = child.stderr.read().decode()
        if child.wait() != 0:
            failures.append(stderr)
    assert failures == []


def test_concurrent_writers_in_several_processes_lose_nothing(record_db: Path | str) -> None:
    db = record_db
    run_writers(db, workers=4, count=200)
    with RecordStore(db) as store:
        assert len(store.query()) == 800
        for n in range(4):
            assert len(store.query(name=f"w{n}")) == 200
        assert len(store.query(tags=["i199"])) == 4


@pytest.mark.parametrize("attempt", range(3))
def test_processes_opening_a_fresh_database_at_once_all_succeed(
    record_db: Path | str, attempt: int
) -> None:
    db = record_db
    run_writers(db, workers=6, count=1)
    with RecordStore(db) as store:
        assert len(store.query()) == 6


# --- binary and large results ---------------------------------------------------------------

BINARY_PAYLOADS = {
    "zero bytes": bytes(4096),
    "not utf-8": b"\xff\xfe\x80\xc3(\xa0\xa1",
    "every byte value": bytes(range(256)) * 4,
    "empty": b"",
    "nested": {"image": b"\x00\x89PNG\r\n\x1a\n", "frames": [b"\xff", b"", "text"], "n": 3},
}


@pytest.mark.parametrize("payload", BINARY_PAYLOADS.values(), ids=BINARY_PAYLOADS.keys())
def test_a_bytes_result_reads_back_exactly(record_db: Path | str, payload: object) -> None:
    db = record_db
    rec = record(result={"payload": payload, "summary": "binary"})
    with RecordStore(db) as store:
        store.save(rec)
    with RecordStore(db) as store:
        assert store.get(rec.id).result == {"payload": payload, "summary": "binary"}
        assert store.query()[0].result == rec.result


def test_a_str_result_that_looks_like_escaped_bytes_stays_a_str(store: RecordStore) -> None:
    rec = record(result={"payload": "\\x00\\xff", "summary": None})
    store.save(rec)
    assert store.get(rec.id).result == {"payload": "\\x00\\xff", "summary": None}


def test_a_bytes_result_is_stored_as_a_blob_of_its_own_size(
    store: RecordStore, record_db: Path | str
) -> None:
    payload = bytes(1024 * 1024)
    store.save(record(result={"payload": payload, "summary": None}))
    ((doc, blob),) = raw_query(record_db, "SELECT doc, result FROM runs")
    assert isinstance(doc, str)
    assert isinstance(blob, bytes) and len(payload) < len(blob) < len(payload) + 64
    assert json.loads(doc)["result"] is None


def test_a_result_with_an_int_beyond_64_bits_is_kept_in_the_json_document(
    store: RecordStore,
) -> None:
    rec = record(result={"payload": {"big": 2**70}, "summary": None})
    store.save(rec)
    assert store.get(rec.id).result == {"payload": {"big": 2**70}, "summary": None}


class LogRecorder:
    """Stands in for the structlog logger; keeps every warning."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.warnings.append((event, fields))


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> LogRecorder:
    recorder = LogRecorder()
    monkeypatch.setattr(records_module.codec, "get_logger", lambda: recorder)
    return recorder


def test_a_result_larger_than_max_result_bytes_is_summarised_with_a_warning(
    record_db: Path | str, logged: LogRecorder
) -> None:
    db = record_db
    payload = b"\xff" * 5000
    rec = record(result={"payload": payload, "summary": "5000 bytes of frames"})
    with RecordStore(db, max_result_bytes=4096) as store:
        store.save(rec)
        stored = store.get(rec.id)
    digest = hashlib.sha256(payload).hexdigest()
    assert stored.result is not None
    assert stored.result["payload"] is None
    assert stored.result["summary"] == "5000 bytes of frames"
    omitted = stored.result["omitted"]
    assert (omitted["type"], omitted["size"], omitted["sha256"]) == ("bytes", 5000, digest)
    assert "max_result_bytes (4096)" in omitted["reason"]
    assert rec.result == {"payload": payload, "summary": "5000 bytes of frames"}  # caller's own
    assert logged.warnings == [
        (
            "result_not_recorded",
            {
                "run_id": rec.id,
                "payload_type": "bytes",
                "size": 5000,
                "sha256": digest,
                "max_result_bytes": 4096,
            },
        )
    ]


def test_a_large_result_of_plain_data_is_summarised_by_its_msgpack_encoding(
    store: RecordStore, record_db: Path | str, logged: LogRecorder
) -> None:
    payload = {"values": list(range(100))}
    limited = RecordStore(record_db, max_result_bytes=64)
    rec = record(result={"payload": payload, "summary": None})
    with limited:
        limited.save(rec)
    omitted = store.get(rec.id).result["omitted"]  # type: ignore[index]
    packed = msgpack.packb(payload, use_bin_type=True)
    assert omitted["type"] == "dict" and omitted["digest_of"] == "msgpack"
    assert omitted["size"] == len(packed)
    assert omitted["sha256"] == hashlib.sha256(packed).hexdigest()
    assert [event for event, _ in logged.warnings] == ["result_not_recorded"]


def test_a_result_within_max_result_bytes_is_kept_whole(
    record_db: Path | str, logged: LogRecorder
) -> None:
    db = record_db
    rec = record(result={"payload": bytes(4000), "summary": None})
    with RecordStore(db, max_result_bytes=4096) as store:
        store.save(rec)
        assert store.get(rec.id).result == rec.result
    assert logged.warnings == []


def test_max_result_bytes_must_be_positive(db: Path) -> None:
    with pytest.raises(ValueError, match="max_result_bytes"):
        RecordStore(db, max_result_bytes=0)


async def test_a_run_with_a_result_too_large_to_record_completes_and_hooks_get_it_whole(
    tmp_path: Path, script: Callable[[str], list[str]], logged: LogRecorder
) -> None:
    argv = script(
        """
        from lute_async.task import Reporter
        with Reporter.connect() as report:
            report.result(bytes(range(256)) * 64, summary="16 KiB")
        """
    )
    delivered: list[object] = []
    async with Executor(
        db=tmp_path / "runs.db", workdir=tmp_path / "work", log_events=False, max_result_bytes=4096
    ) as executor:
        executor.on("result", lambda event: delivered.append(event.data["payload"]))
        finished = await executor.run(argv, name="big")
    assert finished.status == "COMPLETED"
    assert delivered == [bytes(range(256)) * 64]
    assert finished.result == {"payload": bytes(range(256)) * 64, "summary": "16 KiB"}
    with RecordStore(tmp_path / "runs.db") as reopened:
        stored = reopened.get(finished.id)
    assert stored.status == "COMPLETED"
    assert stored.result is not None and stored.result["payload"] is None
    assert stored.result["omitted"]["size"] == 256 * 64
    assert [fields["run_id"] for _, fields in logged.warnings] == [finished.id]


# --- migration from schema v1 ---------------------------------------------------------------


def v1_database(db: Path, *documents: dict[str, object]) -> None:
    """Write a schema-v1 database holding *documents*, as the previous version would have.

    Migrations are append-only, so the first one is exactly the DDL that version ran.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    records_module._migrate_to_v1(conn)
    conn.execute("PRAGMA user_version = 1")
    for doc in documents:
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                doc["id"],
                doc["name"],
                doc["status"],
                doc["submitted_at"],
                doc["ended_at"],
                doc["executor_pid"],
                doc["executor_host"],
                json.dumps(doc, separators=(",", ":")),
            ),
        )
        conn.executemany(
            "INSERT INTO run_tags VALUES (?, ?)",
            [(doc["id"], tag) for tag in doc["tags"]],  # type: ignore[attr-defined]
        )
    conn.commit()
    conn.close()


def test_a_v1_database_is_migrated_and_its_records_read_back_identically(db: Path) -> None:
    old = full_record()
    # v1 wrote a bytes payload as backslash-escaped text: that text is what it reads back as.
    escaped = record(
        "old-binary", id="b" * 32, result={"payload": b"\x00\xff", "summary": None}
    ).to_dict()
    assert escaped["result"]["payload"] == "\x00\\xff"
    v1_database(db, old.to_dict(), escaped)

    with RecordStore(db) as store:
        assert store.get(old.id) == old
        assert store.get(escaped["id"]) == AnalysisRecord.from_dict(escaped)
        assert ids(store.query(tags=["beamtime"])) == [old.id]
        assert store.latest("old-binary") == AnalysisRecord.from_dict(escaped)
        new = record("new-binary", result={"payload": b"\x00\xff", "summary": None})
        store.save(new)
        assert store.get(new.id).result == {"payload": b"\x00\xff", "summary": None}
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_v1_run_of_a_dead_executor_is_marked_lost_keeping_its_result(db: Path) -> None:
    old = record(
        status="RUNNING", executor_pid=dead_pid(), result={"payload": [1, "a"], "summary": "s"}
    )
    v1_database(db, old.to_dict())
    with RecordStore(db) as store:
        assert store.lost_on_open == [old.id]
        lost = store.get(old.id)
    assert lost.status == "LOST" and lost.result == {"payload": [1, "a"], "summary": "s"}


# --- journal --------------------------------------------------------------------------------


def test_a_bytes_result_spilled_to_the_journal_is_replayed_exactly(
    db: Path, tmp_path: Path
) -> None:
    payload = bytes(range(256)) + bytes(1000)
    rec = record(result={"payload": payload, "summary": "raw"})
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.journal is not None
        where = store.journal.append(rec)
    line = json.loads(where.read_text())  # still one JSON object per line
    assert line["id"] == rec.id
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.replayed_on_open == [rec.id]
        assert store.get(rec.id).result == {"payload": payload, "summary": "raw"}
    assert not where.exists()


def test_a_journal_line_with_a_field_no_row_can_take_is_skipped_not_fatal(
    db: Path, tmp_path: Path
) -> None:
    good, damaged = record(), record()
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.journal is not None
        journal = store.journal.primary
    lines = [{**damaged.to_dict(), "env": None}, good.to_dict()]
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.replayed_on_open == [good.id]
        assert store.get(good.id) == good
        with pytest.raises(RecordNotFound):
            store.get(damaged.id)
    assert list(journal.parent.glob(journal.name + "*")) == []


def test_a_journal_line_of_the_previous_version_is_still_replayed(db: Path, tmp_path: Path) -> None:
    old = full_record()
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.journal is not None
        journal = store.journal.primary
    journal.write_text(json.dumps(old.to_dict()) + "\n")
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.replayed_on_open == [old.id]
        assert store.get(old.id) == old


def test_run_ids_are_random_version_4_uuids() -> None:
    """A run id is a version-4 UUID's hex (made from random bytes without a UUID object)."""
    import uuid

    from lute_async.records.model import new_run_id

    ids = {new_run_id() for _ in range(2000)}
    assert len(ids) == 2000
    for run_id in ids:
        parsed = uuid.UUID(hex=run_id)
        assert parsed.hex == run_id and len(run_id) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
