"""FuturesExecutor: concurrent.futures over lute-async runs, with real worker processes."""

from __future__ import annotations

import concurrent.futures
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lute_async import Command, Executor, FuturesExecutor, RecordStore, TaskFailed, task
from lute_async.errors import ConfigError

TASKS = """
import time
from lute_async.task import task

@task
def add(a, b=10):
    return a + b

@task
def shout(word, *, times=1):
    return {"word": word.upper() * times}

@task
def divide(n, by):
    return n / by

class Odd(Exception):
    pass

@task
def odd(n):
    raise Odd(f"odd {n}")

@task
def wait_for(path):
    # Blocks until the test creates `path` (or is cancelled): no timing in the test.
    import os, select
    fd = os.open(path, os.O_RDONLY)
    select.select([fd], [], [])
    return "released"

def not_a_task():
    return 1
"""


@pytest.fixture
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A task module on sys.path (for submit) and on PYTHONPATH (for the workers)."""
    (tmp_path / "futtasks.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    import importlib

    module = importlib.import_module("futtasks")
    yield module
    sys.modules.pop("futtasks", None)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[FuturesExecutor]:
    with FuturesExecutor(db=tmp_path / "runs.db", workdir=tmp_path / "work") as executor:
        yield executor


def test_submit_returns_the_value_and_the_run_is_recorded(
    pool: FuturesExecutor, tasks: Any, tmp_path: Path
) -> None:
    future = pool.submit(tasks.add, 2, b=3)
    assert future.result(timeout=60) == 5
    assert future.done() and not future.running()
    assert future.record.status == "COMPLETED" and future.record.params == {"a": 2, "b": 3}
    assert pool.submit(tasks.shout, "hi", times=2).result(timeout=60) == {"word": "HIHI"}
    pool.shutdown()
    with RecordStore(tmp_path / "runs.db") as store:
        stored = store.get(future.run_id)
    assert stored.status == "COMPLETED" and stored.result == {"payload": 5, "summary": None}


def test_map_runs_one_task_per_argument_set_in_order(pool: FuturesExecutor, tasks: Any) -> None:
    assert list(pool.map(tasks.add, [1, 2, 3], [10, 20, 30], timeout=120)) == [11, 22, 33]


def test_a_builtin_exception_is_raised_again_with_the_tasks_traceback(
    pool: FuturesExecutor, tasks: Any
) -> None:
    future = pool.submit(tasks.divide, 1, 0)
    with pytest.raises(ZeroDivisionError, match="division by zero") as caught:
        future.result(timeout=60)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert future.run_id in notes and "return n / by" in notes
    assert future.record.status == "FAILED"


def test_another_exception_is_task_failed_naming_its_type(
    pool: FuturesExecutor, tasks: Any
) -> None:
    future = pool.submit(tasks.odd, 3)
    error = future.exception(timeout=60)
    assert isinstance(error, TaskFailed)
    assert error.type == "Odd" and "odd 3" in str(error)
    assert error.traceback is not None and 'raise Odd(f"odd {n}")' in error.traceback
    assert error.record.id == future.run_id


def test_a_command_runs_and_its_future_gives_the_record(
    pool: FuturesExecutor, tmp_path: Path
) -> None:
    record = pool.submit(Command(["sh", "-c", "echo out; exit 0"], tags=["cmd"])).result(60)
    assert record.status == "COMPLETED" and record.exit_code == 0 and record.tags == ["cmd"]
    failed = pool.submit(Command(["sh", "-c", "exit 3"])).exception(timeout=60)
    assert isinstance(failed, TaskFailed) and failed.record.exit_code == 3
    assert "exited with code 3" in str(failed)


async def test_a_command_is_also_a_command_for_the_async_executor(executor: Executor) -> None:
    record = await executor.run(Command(["true"]))
    assert record.status == "COMPLETED" and record.command == ["true"]


def test_cancel_ends_a_running_run_cancelled(
    pool: FuturesExecutor, tasks: Any, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    future = pool.submit(tasks.wait_for, str(fifo))
    future._handle.started.wait(60)
    assert future.running()
    assert future.cancel()
    assert future.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()
    pool.shutdown(wait=True)
    assert future.record.status == "CANCELLED"


def test_shutdown_with_cancel_futures_cancels_the_queued_runs(tmp_path: Path, tasks: Any) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    pool = FuturesExecutor(max_workers=1, db=tmp_path / "runs.db", workdir=tmp_path / "w")
    first = pool.submit(tasks.wait_for, str(fifo))
    queued = [pool.submit(tasks.add, n) for n in range(3)]
    first._handle.started.wait(60)
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(future.cancelled() for future in queued) and not first.cancelled()
    with open(fifo, "w"):  # release the running task: it was not cancelled
        pass
    assert first.result(timeout=60) == "released"
    concurrent.futures.wait([future._handle.finished for future in queued], timeout=60)
    assert [f.record.status for f in queued] == ["CANCELLED"] * 3
    pool._runs.close()  # the background close: wait for it before reading the database
    with RecordStore(tmp_path / "runs.db") as store:
        assert {store.get(f.run_id).status for f in queued} == {"CANCELLED"}


def not_importable_here() -> None:
    """Defined in a test module; marked below only for the wrong-object case."""


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda tasks: task(lambda: 1), "lambda"),
        (lambda tasks: _local(), "local function"),
        (lambda tasks: tasks.not_a_task, "not marked as a task"),
        (lambda tasks: task(_in_main()), "__main__"),
        (lambda tasks: 42, "expected a @task function or a Command"),
    ],
)
def test_a_function_a_worker_cannot_import_is_refused_at_submit(
    pool: FuturesExecutor, tasks: Any, make: Any, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        pool.submit(make(tasks))


def _local() -> Any:
    @task
    def inner() -> int:
        return 1

    return inner


def _in_main() -> Any:
    def main_function() -> int:
        return 1

    main_function.__module__ = "__main__"
    main_function.__qualname__ = "main_function"
    return main_function


@pytest.mark.parametrize(
    ("args", "kwargs", "why"),
    [
        ((), {}, "do not fit"),
        ((1, 2, 3), {}, "do not fit"),
        ((object(),), {}, "must be JSON"),
    ],
)
def test_arguments_that_do_not_fit_are_refused_at_submit(
    pool: FuturesExecutor, tasks: Any, args: tuple[Any, ...], kwargs: dict[str, Any], why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        pool.submit(tasks.add, *args, **kwargs)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_max_workers_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="max_workers"):
        FuturesExecutor(max_workers=bad)


def test_a_bad_command_and_submit_after_shutdown_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Command"):
        Command([])
    pool = FuturesExecutor(db=tmp_path / "runs.db")
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(Command(["true"]))


def test_a_dask_style_scheduler_drives_it_through_the_executor_interface(
    pool: FuturesExecutor, tasks: Any
) -> None:
    # What Dask's local scheduler does with a concurrent.futures.Executor: submit from the
    # caller's thread, learn of completions through done callbacks into a queue.
    import queue

    done: queue.Queue[concurrent.futures.Future[Any]] = queue.Queue()
    graph = {"x": (tasks.add, 1, 2), "y": (tasks.add, 3, 4)}
    keys = {}
    for key, (fn, *args) in graph.items():
        future = pool.submit(fn, *args)
        keys[future] = key
        future.add_done_callback(done.put)
    results = {}
    for _ in graph:
        future = done.get(timeout=60)
        results[keys[future]] = future.result()
    total = pool.submit(tasks.add, results["x"], results["y"]).result(timeout=60)
    assert results == {"x": 3, "y": 7} and total == 10
