"""The task side in real processes: AsyncReporter never blocks its loop on a back-pressured
channel, the worker never imports from its working directory, and ``emit`` stays light."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lute_async import Executor
from lute_async.cli.emitter import parse_data
from lute_async.hooks.registry import Event

PYTHON = sys.executable
#: Comfortably more than the pipe, the executor's read-ahead and its batch queue hold together,
#: so a task sending them while the executor's hook holds the channel must wait for it.
BLOBS = 32

ASYNC_TASK = """
import asyncio, socket, sys
from lute_async.task import AsyncReporter

PAD = "x" * 256 * 1024

async def send_blobs(report):
    for i in range(BLOBS):
        await report.emit("blob", {"i": i, "pad": PAD})

async def main(alive_path):
    async with AsyncReporter.connect() as report:
        await report.emit("hold")  # the executor's hook holds the channel from here on
        sender = asyncio.ensure_future(send_blobs(report))
        for _ in range(1000):  # the loop keeps turning while the channel is full...
            await asyncio.sleep(0)
        with socket.socket(socket.AF_UNIX) as sock:  # ...and says so on a second channel
            sock.connect(alive_path)
            sock.sendall(b"alive")
        await sender
        await report.result("sent")

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a path short enough for a Unix socket."""
    path = Path(tempfile.mkdtemp(prefix="lute-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_async_reporter_sends_never_block_the_loop_of_the_task(
    executor: Executor, script: Callable[[str], list[str]], short_dir: Path
) -> None:
    release = anyio.Event()
    blobs: list[int] = []

    async def hold(event: Event) -> None:
        await release.wait()  # set only once the task proved its loop kept running

    executor.on("hold", hold)
    executor.on("blob", lambda event: blobs.append(event.data["i"]))
    argv = script(ASYNC_TASK.replace("BLOBS", str(BLOBS)))
    alive_path = os.fspath(short_dir / "alive")
    records = []

    async def run_task() -> None:
        records.append(await executor.run([*argv, alive_path]))

    listener = await anyio.create_unix_listener(alive_path)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(run_task)
        # A blocked task loop never answers: fail after a generous bound instead of hanging.
        with anyio.fail_after(60):
            async with await listener.accept() as conn:
                answer = await conn.receive()
        release.set()
    assert answer == b"alive"
    [record] = records
    assert record.status == "COMPLETED", record.error
    assert record.result is not None and record.result["payload"] == "sent"
    assert blobs == list(range(BLOBS))  # nothing lost, in order


HOSTILE_JSON = """
import pathlib
pathlib.Path(__file__).with_name("HOSTILE_RAN").write_text("json.py from the cwd ran")
raise ImportError("hostile json.py imported")
"""

SAFE_TASKS = """
from lute_async.task import task

@task
def double(n):
    return {"twice": n * 2}
"""


async def test_the_worker_never_imports_from_its_working_directory(
    executor: Executor, tmp_path: Path
) -> None:
    run_dir, lib = tmp_path / "run", tmp_path / "lib"
    run_dir.mkdir()
    lib.mkdir()
    (run_dir / "json.py").write_text(textwrap.dedent(HOSTILE_JSON))
    (run_dir / "cwd_tasks.py").write_text(textwrap.dedent(SAFE_TASKS))
    (lib / "safe_tasks.py").write_text(textwrap.dedent(SAFE_TASKS))
    # (No empty entry: an empty PYTHONPATH entry means the working directory, to Python.)
    path = os.pathsep.join(filter(None, [os.fspath(lib), os.environ.get("PYTHONPATH")]))
    record = await executor.run_function(
        "safe_tasks:double", params={"n": 21}, cwd=run_dir, env={"PYTHONPATH": path}
    )
    assert not (run_dir / "HOSTILE_RAN").exists()
    assert record.status == "COMPLETED", record.error
    assert record.result is not None and record.result["payload"] == {"twice": 42}

    beside = await executor.run_function("cwd_tasks:double", params={"n": 1}, cwd=run_dir)
    assert beside.status == "FAILED" and beside.error is not None
    assert "cannot import module 'cwd_tasks'" in beside.error["message"]
    assert not (run_dir / "HOSTILE_RAN").exists()


def cli_emit(*args: str, flags: tuple[str, ...] = ()) -> str:
    """The shell words that run ``lute-async emit ARGS`` as a task does."""
    return " ".join([PYTHON, *flags, "-m", "lute_async.cli", "emit", *args])


async def test_emit_loads_neither_click_nor_json(executor: Executor) -> None:
    imported: list[str] = []
    executor.on("log", lambda event: imported.append(event.data["message"]))
    done: list[object] = []
    executor.on("peaks", lambda event: done.append(event.data))
    command = cli_emit("peaks", "'{\"n\": 3}'", flags=("-X", "importtime"))
    record = await executor.run(["sh", "-c", command])
    assert record.status == "COMPLETED", record.error
    assert done == [{"n": 3}]
    modules = {line.rpartition("|")[2].strip() for line in imported if "import time:" in line}
    assert "lute_async.task" in modules
    assert not modules & {"click", "json", "lute_async.cli.group", "socket"}


async def test_the_lute_async_script_emits_without_importing_re(executor: Executor) -> None:
    """The installed command (bin/lute-async) is not pip's wrapper, which imports re."""
    imported: list[str] = []
    executor.on("log", lambda event: imported.append(event.data["message"]))
    script = Path(__file__).resolve().parent.parent / "bin" / "lute-async"
    record = await executor.run([PYTHON, "-X", "importtime", script, "emit", "progress", "0.5"])
    assert record.status == "COMPLETED", record.error
    modules = {line.rpartition("|")[2].strip() for line in imported if "import time:" in line}
    assert "lute_async.cli.emitter" in modules
    assert not modules & {"re", "click", "json", "enum"}


BATCH = "\\n".join(
    [
        '{"event": "progress", "data": 0.25}',
        "not json",
        '{"event": "peaks", "data": {"n": 3}}',
        "",
        '["progress", 0.5]',
        '{"event": "progress", "data": {"fraction": "half"}}',
        '{"event": "log", "data": "calibrated"}',
        '{"event": "result", "data": {"ok": true}}',
    ]
)


async def test_emit_batch_sends_every_good_line_and_names_each_bad_one(
    executor: Executor,
) -> None:
    events: list[tuple[str, object]] = []
    logs: list[str] = []
    executor.on("*", lambda event: events.append((event.name, event.data)))
    executor.on("log", lambda event: logs.append(event.data["message"]))
    script = f"printf '{BATCH}\\n' | {cli_emit('--batch')}; echo exit=$?"
    record = await executor.run(["sh", "-c", script])
    assert record.status == "COMPLETED", record.error
    sent = [(name, data) for name, data in events if name in {"progress", "peaks", "result"}]
    assert sent == [
        ("progress", {"fraction": 0.25, "message": ""}),
        ("peaks", {"n": 3}),
        ("result", {"payload": {"ok": True}, "summary": None}),
    ]
    assert "calibrated" in logs
    assert any("line 2: not JSON" in line for line in logs)
    assert any("line 5: expected" in line for line in logs)
    assert any("line 6: cannot emit 'progress': its fraction must be" in line for line in logs)
    assert "exit=2" in logs


def _json_or_text(text: str) -> object:
    """What emit's DATA meant before it stopped importing json."""
    try:
        return json.loads(text)
    except ValueError:
        return text


TRICKY_DATA = ["0.5", " 1 ", "1 2", "1_000", "NaN", "-Infinity", "\ufeff1", "tru", "[1,", "{}"]


@given(st.one_of(st.sampled_from(TRICKY_DATA), st.text(), st.from_type(float).map(json.dumps)))
def test_emit_reads_data_exactly_as_json_loads_does(text: str) -> None:
    assert repr(parse_data(text)) == repr(_json_or_text(text))


def test_the_flushers_flag_waits_times_out_and_wakes_as_an_event_does() -> None:
    from _thread import start_new_thread

    from lute_async.task.reporter import _Flag

    flag = _Flag()
    assert not flag.is_set() and flag.wait(0.01) is False
    woken = _Flag()
    results: list[bool] = []

    def waiter() -> None:
        results.append(flag.wait())  # no timeout: until set()
        woken.set()

    start_new_thread(waiter, ())
    flag.set()
    assert woken.wait(30) and results == [True]
    assert flag.is_set() and flag.wait(0) is True  # set stays set until clear()
    flag.clear()
    assert not flag.is_set() and flag.wait(0) is False
