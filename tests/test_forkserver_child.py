"""What a forked task sees and how it ends, against a spawned one: the run's environment
exactly (the server's only differences sent), and the end of an interpreter a task may rely on
(non-daemon threads joined, ``atexit`` run, stdout flushed, the same exit codes and errors)
although the child leaves with ``os._exit``."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lute_async import Executor, Forkserver
from lute_async.forkserver_main import ready_report
from lute_async.launchers.forkserver.server import env_changes

TASKS = '''
import atexit, concurrent.futures, dataclasses, os, sys, threading, time
from lute_async.task import task

POOLS = []

@dataclasses.dataclass
class Point:
    x: int
    y: int

@task
def point():
    return Point(1, 2)  # the server does not load dataclasses itself: the module did

# What a preload does to the server's environment never reaches a task.
os.environ["FS_SET_BY_PRELOAD"] = "preload"
os.environ.pop("FS_DROPPED_BY_PRELOAD", None)

@task
def environ():
    return dict(os.environ)

@task
def leave_work(path):
    def late():
        time.sleep(0.3)  # long past the task's return: only a join lets it finish
        with open(path, "a") as fh:
            fh.write("thread\\n")

    def at_exit():
        with open(path, "a") as fh:
            fh.write("atexit\\n")

    threading.Thread(target=late).start()
    POOLS.append(concurrent.futures.ThreadPoolExecutor(1))  # kept, never shut down
    POOLS[-1].submit(len, "x").result()  # its worker waits for more until the exit ends it
    atexit.register(at_exit)
    sys.stdout = open(1, "w", buffering=1 << 16, closefd=False)  # buffered, never flushed here
    sys.stdout.write("the last words")
    return "returned"

@task
def exits(code):
    raise SystemExit(code)

@task
def fails():
    raise ValueError("on purpose")
'''

FORK = Forkserver(preload=["fc_tasks"])


@pytest.fixture
def tasks_path(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "fc_tasks.py").write_text(textwrap.dedent(TASKS))
    yield os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))


def own_variables(env: dict[str, str]) -> dict[str, str]:
    """A task's environment without what differs by run or communicator (LUTE_ASYNC_*) and
    what the module's import changed (a spawned task imports it with the run's environment;
    a forked one was imported once, in the server, and gets exactly its run's)."""
    return {
        key: value
        for key, value in env.items()
        if not key.startswith("LUTE_ASYNC_") and not key.endswith("_BY_PRELOAD")
    }


async def test_a_forked_task_sees_its_runs_environment_exactly(
    executor: Executor, tasks_path: str
) -> None:
    first = {"PYTHONPATH": tasks_path, "FS_FIRST_ONLY": "1", "FS_DROPPED_BY_PRELOAD": "kept"}
    second = {"PYTHONPATH": tasks_path, "FS_DROPPED_BY_PRELOAD": "again", "FS_SECOND": "2"}
    for env in (first, second):  # the server starts with the first run's environment
        forked = await executor.run_function("fc_tasks:environ", env=env, launcher=FORK)
        spawned = await executor.run_function("fc_tasks:environ", env=env)
        assert forked.status == spawned.status == "COMPLETED", (forked.error, spawned.error)
        assert forked.result is not None and spawned.result is not None
        seen = forked.result["payload"]
        assert own_variables(seen) == own_variables(spawned.result["payload"])
        assert seen["LUTE_ASYNC_RUN"] == forked.id
        assert "FS_SET_BY_PRELOAD" not in seen
        assert {key: seen.get(key) for key in env} == env
    assert "FS_FIRST_ONLY" not in seen


async def test_a_forked_task_ends_as_an_interpreter_would(
    executor: Executor, tasks_path: str, tmp_path: Path
) -> None:
    logs: list[str] = []
    for launcher in (FORK, None):
        path = tmp_path / f"ending-{launcher is None}.txt"
        record = await executor.run_function(
            "fc_tasks:leave_work",
            params={"path": str(path)},
            env={"PYTHONPATH": tasks_path},
            launcher=launcher,
            hooks={"log": lambda event: logs.append(event.data["message"])},
        )
        assert record.status == "COMPLETED", record.error
        assert record.exit_code == 0
        assert path.read_text() == "thread\natexit\n"  # threads joined first, as Py_Finalize
        assert logs.count("the last words") == 1
        logs.clear()


@pytest.mark.parametrize(
    ("code", "exit_code"), [(0, 0), (3, 3), (None, 1), ("a message", 1)], ids=repr
)
async def test_a_forked_task_exits_with_a_spawned_ones_code(
    executor: Executor, tasks_path: str, code: Any, exit_code: int
) -> None:
    options: dict[str, Any] = {"params": {"code": code}, "env": {"PYTHONPATH": tasks_path}}
    forked = await executor.run_function("fc_tasks:exits", launcher=FORK, **options)
    spawned = await executor.run_function("fc_tasks:exits", **options)
    assert forked.exit_code == spawned.exit_code == exit_code
    assert forked.status == spawned.status
    assert forked.verdict == spawned.verdict
    assert (forked.error or {}).get("type") == (spawned.error or {}).get("type")


async def test_a_forked_task_that_raises_fails_with_its_traceback(
    executor: Executor, tasks_path: str
) -> None:
    options: dict[str, Any] = {"env": {"PYTHONPATH": tasks_path}}
    forked = await executor.run_function("fc_tasks:fails", launcher=FORK, **options)
    spawned = await executor.run_function("fc_tasks:fails", **options)
    for record in (forked, spawned):
        assert record.status == "FAILED" and record.exit_code == 1
        assert record.error is not None and record.error["type"] == "ValueError"
        assert record.error["message"] == "on purpose"
        assert 'raise ValueError("on purpose")' in record.error["traceback"]


async def test_a_forked_task_returns_a_dataclass_as_a_spawned_one_does(
    executor: Executor, tasks_path: str
) -> None:
    options: dict[str, Any] = {"env": {"PYTHONPATH": tasks_path}}
    forked = await executor.run_function("fc_tasks:point", launcher=FORK, **options)
    spawned = await executor.run_function("fc_tasks:point", **options)
    assert forked.result is not None and spawned.result is not None
    assert forked.result["payload"] == spawned.result["payload"] == {"x": 1, "y": 2}


def test_a_request_carries_only_what_differs_from_the_servers_environment() -> None:
    base = {"HOME": "/home/a", "PATH": "/bin", "GONE": "x"}
    env = {"HOME": "/home/a", "PATH": "/usr/bin:/bin", "NEW": "1"}
    assert env_changes(base, env) == ({"PATH": "/usr/bin:/bin", "NEW": "1"}, ["GONE"])
    assert env_changes(env, env) == ({}, [])


def test_a_server_environment_msgpack_cannot_carry_is_not_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ready_report()["env"] == dict(os.environ)
    monkeypatch.setenv("FC_NOT_UTF8", os.fsdecode(b"\xff"))  # surrogate-escaped, as os reads it
    report = ready_report()
    assert report["kind"] == "ready" and "env" not in report  # each request sends it whole


BURST_TASKS = '''
import sys
from lute_async.task import task

@task
def burst(report, n):
    for i in range(n):  # faster than the linger: the reporter's flusher thread sends them
        report.progress(i / n, str(i))
    return "threading" in sys.modules
'''


async def test_a_burst_is_flushed_by_a_thread_without_loading_threading(
    executor: Executor, tmp_path: Path
) -> None:
    (tmp_path / "fb_tasks.py").write_text(textwrap.dedent(BURST_TASKS))
    path = os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))
    seen: list[str] = []
    record = await executor.run_function(
        "fb_tasks:burst",
        params={"n": 200},
        env={"PYTHONPATH": path},
        launcher=Forkserver(preload=["fb_tasks"]),
        hooks={"progress": lambda event: seen.append(event.data["message"])},
    )
    assert record.status == "COMPLETED", record.error
    assert record.result is not None and record.result["payload"] is False  # nor the server
    assert seen == [str(i) for i in range(200)]
