"""Fault injection: the records database full or read-only, the socket file deleted, the
executor out of file descriptors, a hook that hangs. Every run still ends, nothing is lost."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from conftest import PYTHON, log_events, process_exists, remount

from lute_async import AnalysisRecord, Event, Executor, RecordStore, logs
from lute_async.hooks.registry import Hook

RESULT_TASK = """
    from lute_async.task import Reporter
    with Reporter.connect() as report:
        report.progress(0.5, "half way")
        report.result({"answer": 42}, summary="42")
"""


def fill(directory: Path) -> Path:
    """Write a file until the filesystem holding ``directory`` is full."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError:
            pass
    return filler


def journal_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.journal.jsonl*")) if directory.exists() else []


async def test_full_disk_the_run_completes_and_its_record_is_spilled_then_replayed(
    tiny_tmpfs: Path,
    tmp_path: Path,
    script: Callable[[str], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    json_logs: io.StringIO,
) -> None:
    journal_dir = tmp_path / "journal"
    monkeypatch.setenv("LUTE_ASYNC_JOURNAL_DIR", os.fspath(journal_dir))
    db = tiny_tmpfs / "runs.db"
    argv = script(RESULT_TASK)
    async with Executor(db=db, workdir=tmp_path / "work") as executor:
        filler = fill(tiny_tmpfs)
        record = await executor.run(argv, name="on-a-full-disk")
    assert record.status == "COMPLETED"
    assert record.result == {"payload": {"answer": 42}, "summary": "42"}

    failures = [e for e in log_events(json_logs.getvalue()) if e["event"] == "record_save_failed"]
    assert failures and all(e["level"] == "error" and e["run_id"] == record.id for e in failures)
    assert any("full" in e["error"] for e in failures)
    assert all("spilled to the journal" in e["error"] for e in failures)
    # Beside the database there was no room either: the records went to the fallback dir.
    assert journal_files(journal_dir)

    filler.unlink()
    with RecordStore(db) as store:
        assert record.id in store.replayed_on_open
        stored = store.get(record.id)
    assert stored.status == "COMPLETED" and stored.result == record.result
    assert journal_files(journal_dir) == [] and journal_files(tiny_tmpfs) == []


async def test_read_only_database_the_run_completes_and_its_record_is_spilled_then_replayed(
    tiny_tmpfs: Path,
    tmp_path: Path,
    script: Callable[[str], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    json_logs: io.StringIO,
) -> None:
    journal_dir = tmp_path / "journal"
    monkeypatch.setenv("LUTE_ASYNC_JOURNAL_DIR", os.fspath(journal_dir))
    db = tiny_tmpfs / "runs.db"
    RecordStore(db).close()
    remount(tiny_tmpfs, "ro")

    executor = Executor(db=db, workdir=tmp_path / "work")
    record = await executor.run(script(RESULT_TASK), name="on-a-read-only-db")
    await executor.aclose()
    assert record.status == "COMPLETED" and record.result is not None

    failures = [e for e in log_events(json_logs.getvalue()) if e["event"] == "record_save_failed"]
    assert failures and all(e["level"] == "error" for e in failures)
    assert all("spilled to the journal" in e["error"] for e in failures)
    assert journal_files(journal_dir)

    remount(tiny_tmpfs, "rw")
    with RecordStore(db) as store:
        assert record.id in store.replayed_on_open
        stored = store.get(record.id)
    assert stored.status == "COMPLETED" and stored.result == record.result
    assert journal_files(journal_dir) == []


def test_journal_replay_never_moves_a_finished_run_backwards(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.journal is not None
        from lute_async import AnalysisRecord

        record = AnalysisRecord(name="r", status="RUNNING")
        store.journal.append(record)  # an old, failed save...
        record.status = "COMPLETED"
        store.save(record)  # ...then a newer one that got through
    with RecordStore(db, journal_dir=tmp_path / "j") as store:
        assert store.get(record.id).status == "COMPLETED"


async def test_socket_file_deleted_under_a_running_executor_the_run_completes_via_the_pipe(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os
        from lute_async.task import Reporter
        path = os.environ["LUTE_ASYNC_SOCKET"]
        os.unlink(path)
        refused = not Reporter.connect(prefer=("socket",)).connected
        with Reporter.connect(prefer=("pipe",)) as report:
            report.result({"socket": path, "socket_refused": refused})
        """
    )
    record = await executor.run(argv, communicators=("pipe", "socket"))
    assert record.status == "COMPLETED"
    assert record.result is not None
    payload = record.result["payload"]
    assert payload["socket_refused"] is True
    again = await executor.run(argv, communicators=("pipe", "socket"))  # the home still works
    assert again.status == "COMPLETED", again.error
    await executor.aclose()
    assert not Path(payload["socket"]).parent.exists()


async def _run_with_an_overrunning_hook(
    tmp_path: Path, argv: list[str], hook: Hook, hook_timeout: float
) -> list[AnalysisRecord]:
    """Run ``argv`` with ``hook`` and then another on ``result``: the record and its stored copy.

    The run completes and the later hook runs however ``hook`` overruns."""
    after: list[str] = []
    async with Executor(db=tmp_path / "runs.db", hook_timeout=hook_timeout) as executor:
        executor.on("result", hook)
        executor.on("result", lambda e: after.append(e.name))
        record = await executor.run(argv)
        stored = (await executor.store()).get(record.id)
    assert record.status == "COMPLETED" and after == ["result"]
    return [record, stored]


async def test_a_hanging_hook_is_cut_by_hook_timeout_and_the_run_completes(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    async def hang(event: Event) -> None:
        await anyio.sleep_forever()

    for rec in await _run_with_an_overrunning_hook(tmp_path, script(RESULT_TASK), hang, 0.5):
        assert len(rec.hook_errors) == 1
        error = rec.hook_errors[0]
        assert error["event"] == "result" and error["type"] == "TimeoutError"
        assert "hang" in error["hook"] and "longer than 0.5 s" in error["message"]


class _Tripwire(io.StringIO):
    """A log stream that says when a given event has been written to it."""

    def __init__(self, event: str) -> None:
        super().__init__()
        self.marker = f'"event": "{event}"'
        self.seen = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.marker in text:
            self.seen.set()
        return written


async def test_a_sync_hook_blocking_the_loop_is_reported_while_it_blocks_and_the_run_completes(
    tmp_path: Path, script: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = _Tripwire("hook_blocking")
    monkeypatch.setattr(sys, "stderr", logged)
    monkeypatch.setattr(logs, "_logger", logs._logger)
    logs.configure(renderer="json")

    def block_until_reported(event: Event) -> None:
        # Blocks the event loop's thread: only the watchdog thread can notice, and this
        # returns once it has (a sync hook cannot be cut).
        assert logged.seen.wait(timeout=60)

    argv = script(RESULT_TASK)
    record, stored = await _run_with_an_overrunning_hook(tmp_path, argv, block_until_reported, 0.2)
    for rec in (record, stored):
        assert [(e["type"], e["event"]) for e in rec.hook_errors] == [("TimeoutError", "result")]
        assert "block_until_reported" in rec.hook_errors[0]["hook"]
        assert "past hook_timeout 0.2 s" in rec.hook_errors[0]["message"]
    [blocking] = [e for e in log_events(logged.getvalue()) if e["event"] == "hook_blocking"]
    assert blocking["run_id"] == record.id and blocking["hook_timeout"] == 0.2
    assert "block_until_reported" in blocking["hook"] and "logged.seen.wait" in blocking["stack"]


EMFILE_EXECUTOR = """
import fcntl, json, resource, sys
import anyio
from lute_async import Executor

RUNS = 40
db, workdir, lock_path, python = sys.argv[1:5]
TASK = '''
import fcntl, sys
from lute_async.task import Reporter
with open(sys.argv[1]) as lock:
    fcntl.flock(lock, fcntl.LOCK_SH)  # hold on until every run has started or failed
with Reporter.connect() as report:
    report.result("finished")
'''

async def main():
    lock = open(lock_path, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    accounted = 0
    def account(event):
        nonlocal accounted
        accounted += 1
        if accounted == RUNS:
            fcntl.flock(lock, fcntl.LOCK_UN)
    async with Executor(db=db, workdir=workdir, communicators=("pipe", "socket")) as ex:
        ex.on("started", account)
        ex.on("failed", lambda e: account(e) if e.run.record.started_at is None else None)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        records = []
        async def one(i):
            records.append(await ex.run([python, "-c", TASK, lock_path], name=f"r{i}"))
        async with anyio.create_task_group() as tg:
            for i in range(RUNS):
                tg.start_soon(one, i)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        stored = (await ex.store()).query(limit=1000)
    print(json.dumps({
        "records": [
            {"status": r.status, "result": r.result, "error": r.error} for r in records
        ],
        "stored": sorted(r.status for r in stored),
    }))

anyio.run(main)
"""


def test_at_the_fd_limit_new_runs_fail_cleanly_and_running_ones_finish(tmp_path: Path) -> None:
    driver = tmp_path / "emfile_executor.py"
    driver.write_text(textwrap.dedent(EMFILE_EXECUTOR))
    lock = tmp_path / "lock"
    lock.touch()
    done = subprocess.run(
        [sys.executable, driver, tmp_path / "runs.db", tmp_path / "work", lock, PYTHON],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    records = out["records"]
    assert len(records) == 40
    completed = [r for r in records if r["status"] == "COMPLETED"]
    failed = [r for r in records if r["status"] == "FAILED"]
    assert len(completed) + len(failed) == 40
    assert completed and failed
    assert all(r["result"]["payload"] == "finished" for r in completed)
    for r in failed:
        assert r["error"]["type"] == "LaunchError"
        assert "Too many open files" in r["error"]["message"]
    assert out["stored"] == sorted(r["status"] for r in records)
    print(f"emfile: 40 runs at RLIMIT_NOFILE=64: {len(completed)} completed, {len(failed)} failed")


SIGNALLED_TASK = """\
import os, signal
print("ready", os.getpid(), os.path.dirname(os.environ["LUTE_ASYNC_SOCKET"]), flush=True)
signal.pause()
"""


def test_sigterm_to_the_executor_ends_its_tasks_records_cancelled_and_removes_sockets(
    tmp_path: Path,
) -> None:
    pytest.importorskip("lute_async.cli")
    (tmp_path / "paused.py").write_text(SIGNALLED_TASK)
    env = {**os.environ, "LUTE_ASYNC_DB": os.fspath(tmp_path / "runs.db"), "COLUMNS": "200"}
    cli = subprocess.Popen(
        [PYTHON, "-m", "lute_async.cli", "exec", "--name", "paused", "--", PYTHON, "paused.py"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert cli.stdout is not None
        ready = next(line for line in cli.stdout if "ready" in line)
        pid, socket_dir = ready.split("ready", 1)[1].split()[:2]
        cli.send_signal(signal.SIGTERM)
        cli.wait(timeout=30)
    finally:
        cli.kill()
        cli.wait()
    assert not process_exists(int(pid))
    assert not os.path.exists(socket_dir)
    with RecordStore(tmp_path / "runs.db") as store:
        [record] = store.query(name="paused")
    assert record.status == "CANCELLED"


async def test_a_pipe_held_open_by_an_escaped_grandchild_ends_the_run_after_drain_timeout(
    tmp_path: Path, script: Callable[[str], list[str]], json_logs: io.StringIO
) -> None:
    argv = script(
        """
        import subprocess, sys
        from lute_async.task import Reporter
        # A new session escapes the task's process group, and it keeps stdout open.
        sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
        with Reporter.connect(prefer=("socket",)) as report:
            report.result(sleeper.pid)
        """
    )
    async with Executor(db=tmp_path / "runs.db", drain_timeout=0.3) as executor:
        record = await executor.run(argv, communicators=("pipe", "socket"))
    sleeper = record.result["payload"] if record.result else None
    assert isinstance(sleeper, int)
    os.kill(sleeper, signal.SIGKILL)
    assert record.status == "COMPLETED"
    drains = [e for e in log_events(json_logs.getvalue()) if e["event"] == "drain_timeout"]
    assert [(e["run_id"], e["seconds"]) for e in drains] == [(record.id, 0.3)]


async def test_a_run_with_no_communicator_ends_at_its_exit_without_a_drain_timeout(
    tmp_path: Path, json_logs: io.StringIO
) -> None:
    # No reader to wait for: the drain is over at the exit (it used to sit out drain_timeout
    # of silence and log drain_timeout for every such run).
    async with Executor(db=tmp_path / "runs.db", drain_timeout=0.5) as executor:
        record = await executor.run(["/bin/true"], communicators=[])
    assert record.status == "COMPLETED" and record.communicators == []
    assert [e for e in log_events(json_logs.getvalue()) if e["event"] == "drain_timeout"] == []


async def test_a_hook_busy_past_drain_timeout_after_the_exit_loses_nothing(
    tmp_path: Path, script: Callable[[str], list[str]], json_logs: io.StringIO
) -> None:
    argv = script(
        """
        from lute_async.task import Reporter
        with Reporter.connect(prefer=("socket",)) as report:
            for i in range(16_000):
                report.emit("tick", [i, b"x" * 1024])
        """
    )
    indexes: list[int] = []
    pidfds: list[int] = []

    async def slow_once_exited(event: Event) -> None:
        if not pidfds:
            pidfds.append(os.pidfd_open(event.message.pid))
        if len(pidfds) == 1 and select.select(pidfds, [], [], 0)[0]:
            pidfds.append(-1)  # the task has exited: one slow step, well past drain_timeout
            await anyio.sleep(0.5)
        indexes.append(event.data[0])

    async with Executor(db=tmp_path / "runs.db", drain_timeout=0.1) as executor:
        record = await executor.run(
            argv, communicators=("socket",), hooks={"tick": slow_once_exited}
        )
    os.close(pidfds[0])
    assert record.status == "COMPLETED"
    assert indexes == list(range(16_000))
    assert not [e for e in log_events(json_logs.getvalue()) if e["event"] == "drain_timeout"]


async def test_a_task_reaped_by_someone_else_ends_failed_saying_so(tmp_path: Path) -> None:
    # Code in the executor's process (here, the hook) reaps the task before the run can:
    # the run still ends, FAILED with the reason, instead of waiting forever for an exit.
    reaped: list[int] = []

    def reap_it(event: Event) -> None:
        pid = event.data["pid"]
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # the task is gone and reaped before the run's callback runs
        reaped.append(pid)

    async with Executor(db=tmp_path / "runs.db", workdir=tmp_path / "runs") as executor:
        record = await executor.run(["sleep", "3600"], hooks={"started": reap_it})
    assert len(reaped) == 1
    assert record.status == "FAILED"
    assert record.error is not None
    assert f"pid {reaped[0]} could not be reaped" in record.error["message"]
