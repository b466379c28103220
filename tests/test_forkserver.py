"""The fork-server launcher, with real servers and real forked tasks: a forked task is a task
like a spawned one (result, timeout, cancel, limits, stop/resume, record), it leaves nothing
behind, and the bad cases (a preload that cannot be imported, the server killed under its
tasks, a task that segfaults) end as FAILED records saying why."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from lute_async import Executor, Forkserver, Limits
from lute_async.config import parse_config
from lute_async.errors import ConfigError
from lute_async.launchers.forkserver.server import _SERVERS
from tests.conftest import cyclic_garbage, process_exists

MIB = 1024 * 1024
WAIT_LIMIT = 30

TASKS = '''
import ctypes, os, subprocess, time
from lute_async.task import task

@task
def add(a, b):
    return {"sum": a + b, "pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
            "ppid": os.getppid()}

@task
def nap(seconds):
    print("ready", flush=True)
    time.sleep(seconds)
    return seconds

@task
def hog():
    chunks = []
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))

@task
def spin():
    while True:
        pass

@task
def crash():
    ctypes.string_at(0)

@task
def own_reporter():
    from lute_async.task import Reporter
    with Reporter.connect() as report:  # a second reporter on the worker's fd 3
        report.emit("own", {"hello": 1})
    return "done"

@task
def background():
    child = subprocess.Popen(["sleep", "600"])
    print(f"child {child.pid}", flush=True)
    return child.pid
'''


@pytest.fixture
def tasks_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A module ``fs_tasks`` of @task functions, importable through the run's PYTHONPATH."""
    (tmp_path / "fs_tasks.py").write_text(textwrap.dedent(TASKS))
    (tmp_path / "fs_broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    path = os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))
    yield {"PYTHONPATH": path}


FORK = Forkserver(preload=["fs_tasks"])


def server_pids() -> list[int]:
    return [server.pid for server in _SERVERS.values() if server.dead is None]


async def wait_for_log(run: Any, text: str) -> None:
    with anyio.fail_after(WAIT_LIMIT):
        async for message in run.messages():
            if message.sig == "log" and str(message.data.get("message", "")).startswith(text):
                return


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


async def test_a_forked_task_returns_its_result_in_its_own_session(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    first = await executor.run_function(
        "fs_tasks:add", params={"a": 1, "b": 2}, env=tasks_env, launcher=FORK
    )
    second = await executor.run_function(
        "fs_tasks:add", params={"a": 3, "b": 4}, env=tasks_env, launcher=FORK
    )
    assert first.status == second.status == "COMPLETED"
    assert first.result is not None and second.result is not None
    one, two = first.result["payload"], second.result["payload"]
    assert (one["sum"], two["sum"]) == (3, 7)
    assert one["pid"] == one["pgid"] == one["sid"] == first.extra["pid"]
    # One server forked both: their parent, not the executor, and not each other.
    assert one["ppid"] == two["ppid"] == first.extra["forkserver_pid"] != os.getpid()
    assert one["pid"] != two["pid"]
    assert first.launcher["kind"] == "forkserver" and first.launcher["preload"] == ["fs_tasks"]


async def test_a_task_that_opens_its_own_reporter_completes_as_a_spawned_one_does(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    seen: list[object] = []
    executor.on("own", lambda event: seen.append(event.data))
    records = [
        await executor.run_function("fs_tasks:own_reporter", env=tasks_env, launcher=launcher)
        for launcher in (None, FORK)
    ]
    assert [r.status for r in records] == ["COMPLETED", "COMPLETED"], [r.error for r in records]
    assert [r.result["payload"] for r in records if r.result] == ["done", "done"]
    assert seen == [{"hello": 1}, {"hello": 1}]


async def test_a_forked_task_times_out_and_is_gone(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    record = await executor.run_function(
        "fs_tasks:nap", params={"seconds": 600}, env=tasks_env, launcher=FORK, timeout=1
    )
    assert record.status == "TIMEDOUT"
    assert record.verdict is not None and record.verdict["kind"] == "time_limit"
    assert not process_exists(record.extra["pid"])


async def test_a_forked_task_is_cancelled(executor: Executor, tasks_env: dict[str, str]) -> None:
    async with executor.start(
        executor.function_command("fs_tasks:nap"),
        params={"seconds": 600},
        env=tasks_env,
        launcher=FORK,
    ) as run:
        await wait_for_log(run, "ready")
        await run.cancel()
        record = await run.wait()
    assert record.status == "CANCELLED"
    assert record.verdict is not None and record.verdict["detail"] == "cancelled"
    assert not process_exists(record.extra["pid"])


async def test_a_forked_task_hits_its_memory_limit(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    limit = 512 * MIB
    record = await executor.run_function(
        "fs_tasks:hog", env=tasks_env, launcher=FORK, limits=Limits(memory=limit)
    )
    assert record.status == "FAILED"
    assert record.error is not None and record.error["type"] == "MemoryError"
    assert record.verdict is not None and record.verdict["kind"] == "memory_limit"
    # The limit was the child's own: the server that forked it still serves.
    again = await executor.run_function(
        "fs_tasks:add", params={"a": 0, "b": 0}, env=tasks_env, launcher=FORK
    )
    assert again.status == "COMPLETED"
    assert again.extra["forkserver_pid"] == record.extra["forkserver_pid"]


async def test_a_forked_task_hits_its_cpu_limit(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    record = await executor.run_function(
        "fs_tasks:spin", env=tasks_env, launcher=FORK, limits=Limits(cpu_time=1)
    )
    assert record.status == "FAILED"
    assert record.verdict is not None and record.verdict["kind"] == "cpu_limit"
    assert record.usage is not None and record.usage["user"] + record.usage["system"] >= 0.5


async def test_a_forked_task_is_stopped_and_resumed(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    events: list[str] = []
    states: list[str] = []
    async with executor.start(
        executor.function_command("fs_tasks:nap"),
        params={"seconds": 600},
        env=tasks_env,
        launcher=FORK,
        timeout=600,
    ) as run:
        async for message in run.messages():
            events.append(message.sig)
            if message.sig == "log" and message.data["message"] == "ready":
                assert run.pid is not None
                await run.stop()  # returns once the server's wait4 has seen the stop
                states.append(proc_state(run.pid))
                await run.resume()
                states.append(proc_state(run.pid))
                await run.cancel()
        record = await run.wait()
    assert states[0] == "T" and states[1] != "T"
    assert events.index("stopped") < events.index("continued") < events.index("cancelled")
    assert record.status == "CANCELLED"


async def test_a_forked_task_leaves_no_process_behind(
    tmp_path: Path, tasks_env: dict[str, str]
) -> None:
    async with Executor(db=tmp_path / "own.db", workdir=tmp_path / "own", grace=2.0) as ex:
        record = await ex.run_function("fs_tasks:background", env=tasks_env, launcher=FORK)
        assert record.status == "COMPLETED" and record.result is not None
        grandchild = record.result["payload"]
        server = record.extra["forkserver_pid"]
        assert process_exists(server)
    # The straggler in the task's group went with the task; the server with its executor.
    assert not process_exists(grandchild)
    assert not process_exists(server)
    assert server not in server_pids()


async def test_a_forked_record_has_the_shape_of_a_spawned_one(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    seen: dict[str, list[str]] = {"local": [], "forkserver": []}

    def hooks(kind: str) -> dict[str, Any]:
        return {"*": lambda event: seen[kind].append(event.name)}

    options: dict[str, Any] = {"params": {"a": 1, "b": 1}, "env": tasks_env}
    spawned = await executor.run_function("fs_tasks:add", hooks=hooks("local"), **options)
    forked = await executor.run_function(
        "fs_tasks:add", launcher=FORK, hooks=hooks("forkserver"), **options
    )
    assert spawned.status == forked.status == "COMPLETED"
    assert spawned.verdict == forked.verdict == {"kind": "ok", "detail": None}
    assert spawned.result is not None and forked.result is not None
    assert spawned.result["payload"]["sum"] == forked.result["payload"]["sum"] == 2
    spawned_fields, forked_fields = spawned.to_dict(), forked.to_dict()
    assert spawned_fields.keys() == forked_fields.keys()
    for name, value in spawned_fields.items():
        assert (value is None) == (forked_fields[name] is None), name
    assert spawned.usage is not None and forked.usage is not None
    assert spawned.usage.keys() == forked.usage.keys()
    assert set(spawned.extra) <= set(forked.extra)
    assert seen["local"] == seen["forkserver"]


async def test_many_forked_tasks_run_at_once(tmp_path: Path, tasks_env: dict[str, str]) -> None:
    async with Executor(
        db=tmp_path / "many.db", workdir=tmp_path / "many", max_concurrency=8
    ) as ex:
        records: dict[int, Any] = {}

        async def one(n: int) -> None:
            records[n] = await ex.run_function(
                "fs_tasks:add", params={"a": n, "b": 1}, env=tasks_env, launcher=FORK
            )

        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(one, n)
    assert all(r.status == "COMPLETED" for r in records.values())
    assert all(r.result["payload"]["sum"] == n + 1 for n, r in records.items())
    assert len({r.extra["pid"] for r in records.values()}) == 40
    assert len({r.extra["forkserver_pid"] for r in records.values()}) == 1


@pytest.mark.parametrize(
    ("module", "said"),
    [("fs_no_such_module", "ModuleNotFoundError"), ("fs_broken", "broken on purpose")],
)
async def test_a_preload_that_cannot_be_imported_is_a_launch_error_naming_it(
    executor: Executor, tasks_env: dict[str, str], module: str, said: str
) -> None:
    launcher = Forkserver(preload=["fs_tasks", module])
    record = await executor.run_function(
        "fs_tasks:add", params={"a": 1, "b": 2}, env=tasks_env, launcher=launcher
    )
    assert record.status == "FAILED"
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert repr(module) in record.error["message"] and said in record.error["message"]
    assert not any(key[3] == launcher.preload for key in _SERVERS)


async def test_the_server_killed_under_its_tasks_fails_them_and_is_restarted(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    command = executor.function_command("fs_tasks:nap")
    options: dict[str, Any] = {"params": {"seconds": 600}, "env": tasks_env, "launcher": FORK}
    async with (
        executor.start(command, **options) as first,
        executor.start(command, **options) as second,
    ):
        await wait_for_log(first, "ready")
        await wait_for_log(second, "ready")
        (server,) = server_pids()
        os.kill(server, signal.SIGKILL)
        records = [await first.wait(), await second.wait()]
    for record in records:
        assert record.status == "FAILED"
        assert record.error is not None and record.error["type"] == "ForkserverDied"
        assert f"pid {server}" in record.error["message"]
        assert "killed by SIGKILL" in record.error["message"]
        assert not process_exists(record.extra["pid"])
    again = await executor.run_function(
        "fs_tasks:add", params={"a": 1, "b": 2}, env=tasks_env, launcher=FORK
    )
    assert again.status == "COMPLETED"
    assert again.extra["forkserver_pid"] != server


async def test_a_segfaulting_task_fails_with_the_signal_and_the_server_serves_on(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    record = await executor.run_function("fs_tasks:crash", env=tasks_env, launcher=FORK)
    assert record.status == "FAILED"
    assert record.signal == signal.SIGSEGV
    assert record.verdict is not None and record.verdict["kind"] == "signal"
    again = await executor.run_function(
        "fs_tasks:add", params={"a": 1, "b": 2}, env=tasks_env, launcher=FORK
    )
    assert again.status == "COMPLETED"
    assert again.extra["forkserver_pid"] == record.extra["forkserver_pid"]


async def test_a_task_file_names_the_forkserver_launcher(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    config = parse_config(
        textwrap.dedent(
            """
            [tasks.add]
            function = "fs_tasks:add"
            params = { a = 2, b = 5 }
            launcher = { kind = "forkserver", preload = ["fs_tasks"] }
            """
        )
    )
    resolved = config.resolve("add")
    options = resolved.run_options()
    options["env"] = {**options["env"], **tasks_env}
    record = await executor.run(resolved.argv, **options)
    assert record.status == "COMPLETED"
    assert record.result is not None and record.result["payload"]["sum"] == 7
    assert record.launcher["kind"] == "forkserver"


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ('{ kind = "forkserver", preload = "fs_tasks" }', "key 'launcher.preload'"),
        ('{ kind = "forkserver", preload = [1] }', "key 'launcher.preload'"),
        ('{ kind = "forkserver", workers = 2 }', "key 'launcher.workers'"),
    ],
)
def test_bad_forkserver_options_in_a_task_file_are_config_errors(table: str, said: str) -> None:
    text = f'[tasks.a]\nfunction = "fs_tasks:add"\nlauncher = {table}\n'
    with pytest.raises(ConfigError, match=said):
        parse_config(text, "tasks.toml")


@pytest.mark.parametrize("preload", ["fs_tasks", ["fs_tasks", ""], [3]])
def test_a_bad_preload_argument_is_a_type_error(preload: Any) -> None:
    with pytest.raises(TypeError, match="preload must be a list of module names"):
        Forkserver(preload=preload)


async def test_a_command_is_not_forked(executor: Executor) -> None:
    record = await executor.run(["/bin/true"], launcher=FORK)
    assert record.status == "FAILED"
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert "runs @task functions" in record.error["message"]


async def test_a_missing_working_directory_is_a_launch_error(
    executor: Executor, tasks_env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir"
    record = await executor.run_function(
        "fs_tasks:add", params={"a": 1, "b": 2}, env=tasks_env, launcher=FORK, cwd=missing
    )
    assert record.status == "FAILED"
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert repr(str(missing)) in record.error["message"]


EXECUTOR_SCRIPT = """
import json, sys, anyio
from lute_async import Executor, Forkserver

async def main():
    async with Executor(db=sys.argv[1], workdir=sys.argv[2]) as ex:
        def started(event):
            pids = {"task": event.data["pid"], "server": event.data["command"][0]}
            print(json.dumps(pids), flush=True)
        await ex.run_function("fs_tasks:nap", params={"seconds": 600},
                              launcher=Forkserver(preload=["fs_tasks"]),
                              hooks={"started": started})

anyio.run(main)
"""


async def test_the_server_and_its_tasks_die_with_the_executor(
    tmp_path: Path, tasks_env: dict[str, str]
) -> None:
    script = tmp_path / "executor.py"
    script.write_text(EXECUTOR_SCRIPT)
    env = {**os.environ, **tasks_env}
    process = await anyio.open_process(
        [sys.executable, str(script), str(tmp_path / "x.db"), str(tmp_path / "x")], env=env
    )
    assert process.stdout is not None
    with anyio.fail_after(WAIT_LIMIT):
        line = (await process.stdout.receive()).decode()
    pids = json.loads(line)
    task, server = pids["task"], int(pids["server"].split(":")[1])
    watched = [os.pidfd_open(task), os.pidfd_open(server)]
    process.kill()  # SIGKILL: nothing of the executor runs any more
    await process.wait()
    try:
        with anyio.fail_after(WAIT_LIMIT):  # readable once the process has ended
            for pidfd in watched:
                await anyio.wait_readable(pidfd)
    finally:
        for pidfd in watched:
            os.close(pidfd)
    assert not process_exists(task) and not process_exists(server)


async def test_a_forked_task_reports_over_a_socket_when_asked(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    record = await executor.run_function(
        "fs_tasks:add",
        params={"a": 2, "b": 2},
        env=tasks_env,
        launcher=FORK,
        communicators=["socket"],
    )
    assert record.status == "COMPLETED"
    assert record.result is not None and record.result["payload"]["sum"] == 4
    assert [c["kind"] for c in record.communicators] == ["socket"]


async def test_the_server_holds_no_runs_secret_and_runs_one_thread(
    executor: Executor, tasks_env: dict[str, str]
) -> None:
    record = await executor.run_function(
        "fs_tasks:add", params={"a": 1, "b": 2}, env=tasks_env, launcher=FORK
    )
    assert record.status == "COMPLETED"
    environ = Path(f"/proc/{record.extra['forkserver_pid']}/environ").read_bytes()
    names = [item.partition(b"=")[0] for item in environ.split(b"\0")]
    assert b"PYTHONPATH" in names
    assert not [name for name in names if name.startswith(b"LUTE_ASYNC_")]
    # and it never started a thread: one task in /proc
    assert len(os.listdir(f"/proc/{record.extra['forkserver_pid']}/task")) == 1


async def test_a_finished_forked_run_is_freed_without_the_garbage_collector(
    tmp_path: Path, tasks_env: dict[str, str]
) -> None:
    # As for a spawned run (test_executor): no reference cycle may keep a forked run's
    # objects (its exit callback's among them) until the collector runs.
    async with Executor(db=tmp_path / "own.db", workdir=tmp_path / "own") as executor:
        await executor.run_function(
            "fs_tasks:add", params={"a": 1, "b": 2}, env=tasks_env, launcher=FORK
        )
        with cyclic_garbage() as left:
            for a in range(3):
                record = await executor.run_function(
                    "fs_tasks:add", params={"a": a, "b": 1}, env=tasks_env, launcher=FORK
                )
                assert record.status == "COMPLETED"
    assert left == []
