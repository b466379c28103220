"""Attacks on the records at rest (issue 21): planted journals, world-readable databases,
unsavable nested values, a squatted fallback journal directory. Each test plays the attack on
real files; "another user" is uid/gid 65534 (nobody), files chowned to it (those tests need
root, and skip otherwise)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import log_events, remount

from lute_async import AnalysisRecord, Executor, RecordStore
from lute_async.errors import RecordStoreError
from lute_async.private_paths import (
    NotPrivateError,
    check_private_dir,
    check_private_file,
    ensure_private_dir,
    open_private_file,
)
from lute_async.records import RecordJournal
from lute_async.records import journal as journal_module

NOBODY = 65534

ME = os.geteuid()
needs_root = pytest.mark.skipif(ME != 0, reason="chowning to another user (or mount) needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def events(logs: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [e for e in log_events(logs.getvalue()) if e["event"] == name]


def forged_calibration() -> AnalysisRecord:
    """What an attacker wants a later task's ``{{ latest.calibrate.result.threshold }}`` to be."""
    return AnalysisRecord(
        name="calibrate",
        status="COMPLETED",
        result={"payload": {"threshold": "3; id > pwned; echo"}, "summary": None},
    )


def plant(path: Path, *records: AnalysisRecord, owner: int = NOBODY, mode: int = 0o644) -> None:
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    os.chown(path, owner, owner)
    os.chmod(path, mode)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "runs.db"
    RecordStore(path).close()
    return path


@pytest.fixture
def no_env_journal_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUTE_ASYNC_JOURNAL_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(journal_module, "_REFUGES", {}, raising=False)


@pytest.fixture
def shared_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env_journal_dir: None) -> Path:
    """A temp dir like /tmp (1777, anyone may create names in it), as tempfile's default."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    directory.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", os.fspath(directory))
    return directory


# --- 1. journals are replayed only when they are the user's own ------------------------------


@needs_root
def test_a_journal_planted_beside_the_database_by_another_user_is_never_replayed(
    db: Path, tmp_path: Path, json_logs: io.StringIO
) -> None:
    planted = RecordJournal(db, tmp_path / "j").primary
    plant(planted, forged_calibration())
    for _ in range(2):
        with RecordStore(db, journal_dir=tmp_path / "j") as store:
            assert store.replayed_on_open == []
            assert store.latest("calibrate") is None
    assert planted.exists()
    warnings = events(json_logs, "journal_not_replayed")
    assert len(warnings) == 2 and all(w["level"] == "warning" for w in warnings)
    assert warnings[0]["path"] == str(planted)
    assert warnings[0]["owner"].startswith(f"uid {NOBODY}") and warnings[0]["mode"] == "0644"


@needs_root
def test_a_planted_journal_never_reaches_a_later_tasks_command(tmp_path: Path) -> None:
    config = """\
        [tasks.apply]
        command = ["sh", "-c", "echo {{ latest.calibrate.result.threshold }}"]
        """
    (tmp_path / "lute-async.toml").write_text(textwrap.dedent(config))
    db = tmp_path / "data" / "runs.db"
    RecordStore(db).close()
    plant(RecordJournal(db).primary, forged_calibration())
    env = {**os.environ, "LUTE_ASYNC_DB": os.fspath(db)}
    done = subprocess.run(
        [sys.executable, "-m", "lute_async.cli", "run", "apply", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "calibrate" in done.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("how", ["other-writable", "group-writable", "symlink", "fifo"])
def test_a_journal_of_ours_that_others_could_have_written_is_never_replayed(
    db: Path, tmp_path: Path, json_logs: io.StringIO, how: str
) -> None:
    primary = RecordJournal(db, tmp_path / "j").primary
    if how == "symlink":  # O_NOFOLLOW: the link is not followed to a journal-looking file
        target = tmp_path / "elsewhere.jsonl"
        plant(target, forged_calibration(), owner=ME, mode=0o600)
        primary.symlink_to(target)
    elif how == "fifo":  # a FIFO would block the open forever
        os.mkfifo(primary, 0o600)
    else:
        plant(primary, forged_calibration(), owner=ME, mode=0o666 if how[0] == "o" else 0o620)
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.replayed_on_open == []
        assert store.latest("calibrate") is None
    assert primary.is_symlink() or primary.exists()
    [warning] = events(json_logs, "journal_not_replayed")
    assert warning["path"] == str(primary) and warning["owner"].startswith(f"uid {ME}")


@needs_root
def test_a_foreign_replay_file_in_the_fallback_dir_is_never_replayed(
    db: Path, tmp_path: Path, json_logs: io.StringIO
) -> None:
    fallback = RecordJournal(db, tmp_path / "j").fallback
    ensure_private_dir(fallback.parent)
    leftover = fallback.with_name(fallback.name + ".replay-1-1")
    plant(leftover, forged_calibration())
    for _ in range(3):  # not once, not at every open
        with RecordStore(db, journal_dir=tmp_path / "j") as store:
            assert store.replayed_on_open == []
            assert store.latest("calibrate") is None
    assert leftover.exists()
    assert [w["path"] for w in events(json_logs, "journal_not_replayed")] == [str(leftover)] * 3


@needs_root
def test_a_replay_file_that_cannot_be_removed_is_not_replayed_again(
    db: Path, tiny_tmpfs: Path, json_logs: io.StringIO
) -> None:
    spilled = AnalysisRecord(name="spilled", status="COMPLETED", result={"payload": 1})
    fallback = RecordJournal(db, tiny_tmpfs).fallback
    leftover = fallback.with_name(fallback.name + ".replay-1-1")  # as a crashed replay leaves it
    plant(leftover, spilled, owner=ME, mode=0o600)
    remount(tiny_tmpfs, "ro")
    with RecordStore(db, journal_dir=tiny_tmpfs) as store:
        assert store.replayed_on_open == [spilled.id]
        newer = store.get(spilled.id)
        newer.result = {"payload": 2}  # saved again since, at the same status
        store.save(newer)
    assert leftover.exists() and events(json_logs, "journal_not_removed")
    with RecordStore(db, journal_dir=tiny_tmpfs) as store:
        assert store.replayed_on_open == []
        assert store.get(spilled.id).result == {"payload": 2}
    assert events(json_logs, "journal_already_replayed")

    remount(tiny_tmpfs, "rw")
    with RecordStore(db, journal_dir=tiny_tmpfs) as store:
        assert store.replayed_on_open == []
        assert store.get(spilled.id).result == {"payload": 2}
    assert not leftover.exists()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM replayed_journals").fetchone()[0] == 0
    conn.close()


@needs_root
def test_a_spill_never_appends_to_a_journal_file_another_user_planted(
    db: Path, tmp_path: Path
) -> None:
    journal = RecordJournal(db, tmp_path / "j")
    plant(journal.primary, owner=NOBODY, mode=0o666)  # would read every record we spill
    record = AnalysisRecord(name="secret-params", params={"sample": "confidential"})
    assert journal.append(record) == journal.fallback
    assert journal.primary.read_text() == ""


# --- 2. the database and its journals are private -------------------------------------------


@pytest.fixture
def no_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_database_its_directories_wal_shm_and_journal_are_private(
    tmp_path: Path, no_umask: None
) -> None:
    db = tmp_path / "new" / "deeper" / "runs.db"
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        store.save(AnalysisRecord(name="first"))
        assert mode_of(db.parent) == 0o700 and mode_of(db.parent.parent) == 0o700
        assert mode_of(db) == 0o600
        assert mode_of(Path(f"{db}-wal")) == 0o600 and mode_of(Path(f"{db}-shm")) == 0o600
        assert store.journal is not None
        assert mode_of(store.journal.append(AnalysisRecord(name="spilled"))) == 0o600


def test_an_existing_world_readable_database_of_ours_is_tightened_not_refused(
    tmp_path: Path, json_logs: io.StringIO
) -> None:
    db = tmp_path / "runs.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    with RecordStore(db) as store:
        store.save(AnalysisRecord(name="kept"))
    assert mode_of(db) == 0o600
    [tightened] = events(json_logs, "records_file_mode_tightened")
    assert tightened["path"] == str(db) and tightened["mode"] == "0644"


@needs_root
@pytest.mark.parametrize(
    ("target", "owner", "mode", "problem"),
    [
        ("directory", NOBODY, 0o755, "owned by another user"),
        ("directory", ME, 0o777, "writable by others"),
        ("file", NOBODY, 0o600, "owned by another user"),
        ("file", ME, 0o666, "writable by others"),
        ("wal", NOBODY, 0o600, "owned by another user"),
    ],
)
def test_a_database_another_user_controls_is_refused_naming_path_owner_and_mode(
    tmp_path: Path, target: str, owner: int, mode: int, problem: str
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    db = directory / "runs.db"
    sqlite3.connect(db).close()
    planted = {"directory": directory, "file": db, "wal": Path(f"{db}-wal")}[target]
    planted.touch()
    os.chown(planted, owner, owner)
    os.chmod(planted, mode)
    with pytest.raises(RecordStoreError) as refused:
        RecordStore(db)
    message = str(refused.value)
    assert str(planted) in message and problem in message
    assert f"uid {owner}" in message and f"mode {mode:04o}" in message


# --- 3. values no record can hold are summarised, never fatal -------------------------------


def nested_lists(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


class Unconvertible:
    def tolist(self) -> Any:
        raise RuntimeError("cannot convert")


def hostile_record() -> AnalysisRecord:
    deep = nested_lists(100_000)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    return AnalysisRecord(
        name="deep",
        status="COMPLETED",
        params={"deep": deep, "threshold": 3},
        result={"payload": deep, "summary": "a deep one"},
        extra={"reported_params": cyclic, "odd": Unconvertible(), "node_list": "n1"},
    )


def assert_summarised(record: AnalysisRecord) -> None:
    assert record.status == "COMPLETED"
    assert record.result is not None and record.result["payload"] is None
    assert record.result["summary"] == "a deep one"
    omitted = record.result["omitted"]
    assert omitted["type"] == "list" and omitted["size"] == 1
    assert "nested deeper than" in omitted["reason"]
    assert record.params["threshold"] == 3
    assert record.params["deep"]["omitted"]["type"] == "list"
    assert record.extra["node_list"] == "n1"
    assert "nested deeper" in record.extra["reported_params"]["omitted"]["reason"]
    assert "cannot convert" in record.extra["odd"]["omitted"]["reason"]


def test_a_deeply_nested_result_params_and_extra_are_saved_as_summaries(
    tmp_path: Path, json_logs: io.StringIO
) -> None:
    hostile = hostile_record()
    with RecordStore(tmp_path / "runs.db") as store:
        store.save(hostile)
        assert_summarised(store.get(hostile.id))
        assert store.latest("deep") is not None
    assert hostile.to_dict()["params"]["threshold"] == 3  # to_dict does not raise either
    [warning] = events(json_logs, "result_not_recorded")
    assert warning["run_id"] == hostile.id and "nested deeper" in warning["reason"]


DEEP_PARAMS_TASK = """
    from lute_async.task import Reporter
    with Reporter.connect() as report:
        report.result({"answer": 42}, summary="42")
"""


async def test_a_run_given_deeply_nested_params_ends_completed_in_the_database(
    executor: Executor, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    # (What a task reports is bounded on the wire: frames nest at most MAX_DEPTH levels.)
    record = await executor.run(
        script(DEEP_PARAMS_TASK), name="deep-params", params={"deep": nested_lists(505)}
    )
    assert record.status == "COMPLETED"
    await executor.aclose()
    with RecordStore(tmp_path / "runs.db") as store:
        stored = store.get(record.id)
    assert stored.status == "COMPLETED" and stored.result == record.result
    depth, value = 0, stored.params["deep"]
    while isinstance(value, list) and value:
        depth, value = depth + 1, value[0]
    assert depth < 128  # cut where the record keeps it (masked or summarised), not 505 deep


def test_a_deeply_nested_record_goes_through_the_journal(tmp_path: Path) -> None:
    hostile = hostile_record()
    db = tmp_path / "runs.db"
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.journal is not None
        store.journal.append(hostile)
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.replayed_on_open == [hostile.id]
        assert_summarised(store.get(hostile.id))


def test_a_deeply_nested_journal_line_is_skipped_not_fatal(db: Path, tmp_path: Path) -> None:
    journal = RecordJournal(db, tmp_path / "j")
    good = AnalysisRecord(name="good", status="COMPLETED")
    journal.primary.write_text("[" * 100_000 + "]" * 100_000 + "\n" + json.dumps(good.to_dict()))
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.replayed_on_open == [good.id]


# --- 4. the fallback journal directory cannot be taken from us ------------------------------


@needs_root
def test_a_squatted_fallback_journal_dir_is_replaced_by_a_fresh_private_one(
    db: Path, shared_tmp: Path, json_logs: io.StringIO
) -> None:
    squatted = shared_tmp / f"lute-async-journal-{os.geteuid()}"
    squatted.mkdir()
    os.chown(squatted, NOBODY, NOBODY)
    squatted.chmod(0o777)
    journal = RecordJournal(db)
    assert journal.fallback.parent == squatted
    journal.primary.mkdir()  # the journal beside the database cannot be written either
    spilled = AnalysisRecord(name="spilled", status="COMPLETED")

    where = journal.append(spilled)
    refuge = where.parent
    assert refuge != squatted and refuge.parent == shared_tmp
    assert mode_of(refuge) == 0o700 and refuge.stat().st_uid == os.geteuid()
    assert list(squatted.iterdir()) == []
    [taken] = events(json_logs, "journal_dir_taken")
    assert taken["path"] == str(squatted) and taken["using"] == str(refuge)
    assert taken["owner"].startswith(f"uid {NOBODY}") and taken["mode"] == "0777"
    assert RecordJournal(db).append(spilled) == where  # the same refuge for this process

    journal.primary.rmdir()
    with RecordStore(db) as store:
        assert store.replayed_on_open == [spilled.id, spilled.id]  # both spills
        assert store.get(spilled.id).status == "COMPLETED"
    assert not where.exists()


def test_the_fallback_journal_dir_is_in_a_private_xdg_runtime_dir(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env_journal_dir: None
) -> None:
    runtime = ensure_private_dir(tmp_path / "run")
    monkeypatch.setenv("XDG_RUNTIME_DIR", os.fspath(runtime))
    assert RecordJournal(db).fallback.parent == runtime / "lute-async-journal"
    runtime.chmod(0o755)  # not private: the temp dir is used instead
    assert RecordJournal(db).fallback.parent.parent == Path(tempfile.gettempdir())
    monkeypatch.setenv("LUTE_ASYNC_JOURNAL_DIR", os.fspath(tmp_path / "chosen"))
    assert RecordJournal(db).fallback.parent == tmp_path / "chosen"


# --- the reusable checks --------------------------------------------------------------------


@needs_root
def test_private_path_checks(tmp_path: Path) -> None:
    created = ensure_private_dir(tmp_path / "a" / "b")
    assert mode_of(created) == 0o700 and mode_of(created.parent) == 0o700
    assert ensure_private_dir(created) == created
    readable = tmp_path / "readable"
    readable.mkdir(mode=0o755)
    with pytest.raises(NotPrivateError, match="readable by others"):
        check_private_dir(readable)
    check_private_dir(readable, shared_read=True)
    link = tmp_path / "link"
    link.symlink_to(created)
    with pytest.raises(NotPrivateError, match="not a directory"):
        ensure_private_dir(link)
    file = created / "f"
    fd = open_private_file(file, os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    assert mode_of(file) == 0o600 and check_private_file(file).st_size == 0
    os.chown(file, NOBODY, NOBODY)
    with pytest.raises(NotPrivateError) as refused:
        open_private_file(file)
    assert refused.value.owner == NOBODY and refused.value.mode == 0o600


# --- run directories: never in a directory another user controls -----------------------------

BIG_PARAMS = {"blob": "x" * (100 * 1024)}  # past what the environment carries: a params file
ECHO_PARAMS = """
    from lute_async.task import read_params
    print(len(read_params()["blob"]))
"""


def test_a_database_in_a_sticky_shared_directory_opens_and_a_squatted_name_is_refused(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    with RecordStore(shared / "runs.db") as store:
        assert store.query() == []
    assert mode_of(shared / "runs.db") == 0o600
    squatted = shared / "theirs.db"
    squatted.touch()
    os.chown(squatted, NOBODY, NOBODY)
    with pytest.raises(RecordStoreError, match="is owned by another user"):
        RecordStore(squatted)


async def test_a_params_file_goes_in_a_private_run_directory(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    seen: list[str] = []
    async with Executor(db=tmp_path / "runs.db", workdir=tmp_path / "runs") as executor:

        def remember(event: Any) -> None:
            seen.append(event.data["message"])
            params_file = tmp_path / "runs" / event.run.id / "params.json"
            seen.append(f"{mode_of(params_file.parent):o} {mode_of(params_file):o}")

        record = await executor.run(script(ECHO_PARAMS), params=BIG_PARAMS, hooks={"log": remember})
    assert record.status == "COMPLETED"
    assert seen == [str(100 * 1024), "700 600"]
    assert mode_of(tmp_path / "runs") == 0o700


async def test_a_run_directory_another_user_prepared_is_refused_not_used(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    planted = shared / "runs"  # what another user makes first, to swap run directories in
    planted.mkdir()
    os.chown(planted, NOBODY, NOBODY)
    os.chmod(planted, 0o777)
    async with Executor(db=shared / "runs.db") as executor:
        record = await executor.run(script(ECHO_PARAMS), params=BIG_PARAMS)
    assert record.status == "FAILED"
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert str(planted) in record.error["message"]
    assert "uid 65534" in record.error["message"]
    assert list(planted.iterdir()) == []  # nothing of the run was written there
    with RecordStore(shared / "runs.db") as store:
        assert store.get(record.id).status == "FAILED"
