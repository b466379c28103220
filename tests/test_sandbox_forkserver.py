"""The fork server inside a bubblewrap sandbox, on real processes: a forked task has the same
guarantees as a spawned sandboxed one (what it can see, write and reach, its own pid namespace,
fd 3 in order, cancel/timeout leave nothing behind, limits and verdicts, bwrap's own message
when the sandbox cannot start), and runs share a server only when sandbox and cwd are the same.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from lute_async import Executor, Forkserver, Limits, Sandbox
from lute_async.config import parse_config
from lute_async.launchers.forkserver.server import _SERVERS
from lute_async.messages import TaskStatus
from lute_async.sandbox import PACKAGE
from tests.conftest import process_exists

ROOT = Path(__file__).resolve().parent.parent
WAIT_LIMIT = 30

TASKS = """
import os, socket, subprocess, sys, time
from pathlib import Path
from lute_async.task import task

@task
def look():
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    Path("inside.txt").write_text("ok")
    caps = Path("/proc/self/status").read_text().split("CapEff:")[1].split()[0]
    return {"pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "pids": pids,
            "cwd": os.getcwd(), "caps": caps}

@task
def write(targets):
    out = {}
    for target in targets:
        try:
            Path(target).write_text("escaped")
            out[target] = "WROTE"
        except OSError as exc:
            out[target] = exc.strerror
    return out

@task
def read(path):
    try:
        return Path(path).read_text()
    except OSError as exc:
        return exc.strerror

@task
def connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    except OSError as exc:
        return f"refused: {exc}"
    return "connected"

@task
def count(n, report):
    for number in range(n):
        report.emit("n", number)

@task
def size(blob):
    return len(blob)

def started(marker, **options):
    child = subprocess.Popen(["sleep", marker], **options)
    # Popen returns once the exec has begun, a moment before /proc shows the new command line.
    while marker.encode() not in Path(f"/proc/{child.pid}/cmdline").read_bytes():
        pass
    return child

@task
def spawner(marker):
    started(marker)
    started(marker, start_new_session=True)
    print("ready", flush=True)
    time.sleep(600)

@task
def leave(marker):
    subprocess.Popen(["sleep", marker], start_new_session=True)
    return "left"

@task
def cleanup():
    import signal
    def on_term(*_):
        print("cleaned", flush=True)
        sys.exit(7)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    while True:
        time.sleep(1)

@task
def nap(seconds):
    print("ready", flush=True)
    time.sleep(seconds)

@task
def spin():
    while True:
        pass
"""


@pytest.fixture(autouse=True)
def _need_bwrap() -> None:
    if shutil.which("bwrap") is None:
        reason = f"bubblewrap's bwrap is not installed (Debian package {PACKAGE!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A module ``box_tasks`` of @task functions in a dir of its own (bound read-only)."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "box_tasks.py").write_text(textwrap.dedent(TASKS))
    return {"PYTHONPATH": os.pathsep.join([str(modules), str(ROOT)])}


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """The runs' working directory: the one place the sandbox may write."""
    work = tmp_path / "box"
    work.mkdir()
    return work


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[Executor]:
    async with Executor(tmp_path / "runs.db", workdir=tmp_path / "state", grace=2.0) as executor:
        yield executor


FORK = Forkserver(preload=["box_tasks"])


async def call(ex: Executor, target: str, env: dict[str, str], box: Path, **options: Any) -> Any:
    options.setdefault("sandbox", Sandbox())
    return await ex.run_function(f"box_tasks:{target}", env=env, cwd=box, launcher=FORK, **options)


def fn(target: str) -> list[str]:
    return Executor.function_command(target)


def payload(record: Any) -> Any:
    assert record.status == TaskStatus.COMPLETED.value, record.error
    return record.result["payload"]


def live_processes_with(marker: str) -> list[int]:
    """Pids of live processes (anywhere on the host) whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def marker() -> str:
    return str(800000 + uuid.uuid4().int % 99999)


async def wait_for_log(run: Any, text: str) -> None:
    with anyio.fail_after(WAIT_LIMIT):
        async for message in run.messages():
            if message.sig == "log" and message.data.get("message") == text:
                return


# --- isolation -----------------------------------------------------------------------------------


async def test_a_forked_task_runs_in_the_servers_sandbox(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    first = await call(ex, "look", env, box)
    second = await call(ex, "look", env, box)
    one, two = payload(first), payload(second)
    # Its own pid namespace: bwrap's pid 1, the server (2), and this task; nothing of the host.
    assert one["ppid"] == two["ppid"] == 2
    assert one["pids"] == [1, 2, one["pid"]] and two["pids"] == [1, 2, two["pid"]]
    assert one["sid"] == one["pid"]  # a session of its own, as a plain forked task
    assert one["cwd"] == str(box) and (box / "inside.txt").read_text() == "ok"
    assert one["caps"] == "0000000000000000"
    # The record keeps the real pids; one server (one sandbox) forked both.
    facts, again = first.extra["sandbox"], second.extra["sandbox"]
    assert first.extra["pid"] > 2 and first.extra["pid"] != second.extra["pid"]
    assert facts["server_pid"] == again["server_pid"] == first.extra["forkserver_pid"]
    assert facts["init_pid"] == again["init_pid"] and facts["task_pid"] == one["pid"]
    assert facts["network"] is False and first.extra["sandbox"]["readonly"] == []


async def test_cannot_write_outside_its_workdir(
    ex: Executor, env: dict[str, str], box: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    targets = [str(box / "x"), f"{outside}/x", "/usr/x", "/etc/x", f"{tmp_path}/x", "/tmp/lute-x"]
    result = payload(
        await call(
            ex, "write", env, box, params={"targets": targets}, sandbox=Sandbox(readonly=[outside])
        )
    )
    assert result[str(box / "x")] == "WROTE" and (box / "x").read_text() == "escaped"
    for target in (f"{outside}/x", "/usr/x", "/etc/x"):
        assert result[target] == "Read-only file system"
    # /tmp is the sandbox's own: a write there never reaches the host.
    assert not (outside / "x").exists() and not (tmp_path / "x").exists()
    assert not Path("/tmp/lute-x").exists()


async def test_writable_paths_are_writable(
    ex: Executor, env: dict[str, str], box: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    sandbox = Sandbox(writable=[shared])
    result = payload(
        await call(ex, "write", env, box, params={"targets": [f"{shared}/out"]}, sandbox=sandbox)
    )
    assert result == {f"{shared}/out": "WROTE"}


@pytest.fixture
def planted() -> Iterator[Path]:
    path = Path.home() / f".lute-async-sandbox-{uuid.uuid4().hex}"
    path.write_text("the secret in the home directory")
    try:
        yield path
    finally:
        path.unlink()


async def test_cannot_read_a_file_planted_in_the_home_directory(
    ex: Executor, env: dict[str, str], box: Path, planted: Path
) -> None:
    params = {"path": str(planted)}
    plain = await ex.run_function("box_tasks:read", params=params, env=env, cwd=box, launcher=FORK)
    assert payload(plain) == "the secret in the home directory"  # readable without a sandbox
    assert payload(await call(ex, "read", env, box, params=params)) == "No such file or directory"


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


async def test_no_network_unless_network_true(
    ex: Executor, env: dict[str, str], box: Path, listening: int
) -> None:
    params = {"port": listening}
    closed = payload(await call(ex, "connect", env, box, params=params))
    assert closed.startswith("refused:")
    opened = await call(ex, "connect", env, box, params=params, sandbox=Sandbox(network=True))
    assert payload(opened) == "connected"


async def test_runs_share_a_server_only_with_the_same_sandbox_and_cwd(
    ex: Executor, env: dict[str, str], box: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    records = [
        await call(ex, "look", env, box),
        await call(ex, "look", env, box),
        await call(ex, "look", env, other),
        await call(ex, "look", env, box, sandbox=Sandbox(network=True)),
        await ex.run_function("box_tasks:look", env=env, cwd=box, launcher=FORK),
    ]
    servers = [record.extra["forkserver_pid"] for record in records]
    assert servers[0] == servers[1] and len(set(servers)) == 4
    assert payload(records[2])["cwd"] == str(other) and (other / "inside.txt").exists()
    assert "sandbox" not in records[4].extra


async def test_concurrent_first_runs_start_one_server_and_closing_ends_its_sandbox(
    tmp_path: Path, env: dict[str, str], box: Path
) -> None:
    async with Executor(tmp_path / "own.db", workdir=tmp_path / "own", log_events=False) as own:
        records: list[Any] = []

        async def one() -> None:
            records.append(await call(own, "look", env, box))

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(one)
        assert len({payload(record)["pid"] for record in records}) == 6
        facts = {(r.extra["forkserver_pid"], r.extra["sandbox"]["init_pid"]) for r in records}
        assert len(facts) == 1
    ((server, init),) = facts
    assert not process_exists(server) and not process_exists(init)


# --- reporting -----------------------------------------------------------------------------------

MESSAGES = 10_000


async def test_messages_arrive_in_order_over_fd_3(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    seen: list[int] = []
    sources: set[str] = set()
    options = {"env": env, "cwd": box, "launcher": FORK, "sandbox": Sandbox()}
    async with ex.start(fn("box_tasks:count"), params={"n": MESSAGES}, **options) as run:
        async for message in run.messages():
            if message.sig == "n":
                seen.append(message.data)
                sources.add(message.source)
    assert run.record.status == TaskStatus.COMPLETED.value, run.record.error
    assert seen == list(range(MESSAGES)) and sources == {"pipe"}


async def test_params_too_large_for_the_environment_reach_the_task(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    blob = "x" * 200_000  # over the environment's share: a params file, sent as an open fd
    assert payload(await call(ex, "size", env, box, params={"blob": blob})) == len(blob)


# --- control -------------------------------------------------------------------------------------


async def test_cancel_leaves_no_process_in_or_out_of_the_namespace(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    mark = marker()
    options = {"env": env, "cwd": box, "launcher": FORK, "sandbox": Sandbox()}
    async with ex.start(fn("box_tasks:spawner"), params={"marker": mark}, **options) as run:
        await wait_for_log(run, "ready")
        assert len(live_processes_with(mark)) == 2
        await run.cancel()
    assert run.record.status == TaskStatus.CANCELLED.value
    assert live_processes_with(mark) == []
    assert not process_exists(run.record.extra["pid"])
    server = run.record.extra["forkserver_pid"]
    assert process_exists(server)  # the server stays for the next run, unharmed
    assert payload(await call(ex, "look", env, box))["pids"][:2] == [1, 2]


async def test_what_a_finished_task_left_behind_is_ended(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    mark = marker()
    assert payload(await call(ex, "leave", env, box, params={"marker": mark})) == "left"
    assert live_processes_with(mark) == []


async def test_timeout_ends_the_task_and_what_it_started(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    mark = marker()
    record = await call(ex, "spawner", env, box, params={"marker": mark}, timeout=1)
    assert record.status == TaskStatus.TIMEDOUT.value
    assert record.verdict["kind"] == "time_limit"
    assert live_processes_with(mark) == []


async def test_sigterm_reaches_the_task_which_may_clean_up(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    lines = []
    options = {"env": env, "cwd": box, "launcher": FORK, "sandbox": Sandbox()}
    async with ex.start(fn("box_tasks:cleanup"), **options) as run:
        async for message in run.messages():
            if message.sig == "log":
                lines.append(message.data["message"])
                if lines == ["ready"]:
                    await run.cancel()
    assert "cleaned" in lines


async def test_stop_and_resume(ex: Executor, env: dict[str, str], box: Path) -> None:
    def state(pid: int) -> str:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]

    options = {"env": env, "cwd": box, "launcher": FORK, "sandbox": Sandbox()}
    async with ex.start(fn("box_tasks:nap"), params={"seconds": 600}, **options) as run:
        await wait_for_log(run, "ready")
        await run.stop()
        assert state(run.record.extra["pid"]) == "T"
        await run.resume()
        assert state(run.record.extra["pid"]) != "T"
        await run.cancel()
    assert run.record.status == TaskStatus.CANCELLED.value


async def test_limits_and_their_verdicts(ex: Executor, env: dict[str, str], box: Path) -> None:
    record = await call(ex, "spin", env, box, limits=Limits(cpu_time=1))
    assert record.verdict is not None and record.verdict["kind"] == "cpu_limit", record.verdict


async def test_the_server_killed_fails_its_runs_and_is_replaced(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    options = {"env": env, "cwd": box, "launcher": FORK, "sandbox": Sandbox()}
    async with ex.start(fn("box_tasks:nap"), params={"seconds": 600}, **options) as run:
        await wait_for_log(run, "ready")
        os.kill(run.record.extra["forkserver_pid"], signal.SIGKILL)
    assert run.record.status == TaskStatus.FAILED.value
    assert run.record.error is not None and run.record.error["type"] == "ForkserverDied"
    assert not process_exists(run.record.extra["pid"])
    assert not process_exists(run.record.extra["sandbox"]["init_pid"])
    again = await call(ex, "look", env, box)
    assert again.extra["forkserver_pid"] != run.record.extra["forkserver_pid"]


def test_the_executor_dying_ends_the_server_and_its_tasks(
    tmp_path: Path, env: dict[str, str], box: Path
) -> None:
    mark = marker()
    script = f"""
        import anyio, sys
        from lute_async import Executor, Forkserver, Sandbox
        async def main():
            async with Executor({str(tmp_path / "child.db")!r}, log_events=False) as ex:
                async with ex.start(
                    ex.function_command("box_tasks:spawner"), params={{"marker": {mark!r}}},
                    env={env!r}, cwd={str(box)!r}, launcher=Forkserver(preload=["box_tasks"]),
                    sandbox=Sandbox(),
                ) as run:
                    async for message in run.messages():
                        if message.sig == "log":
                            facts = run.record.extra["sandbox"]
                            print(run.pid, facts["init_pid"], facts["server_pid"], flush=True)
                            sys.stdin.read()
        anyio.run(main)
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    pids = [int(word) for word in child.stdout.readline().split()]
    pidfds = [os.pidfd_open(pid) for pid in pids]
    try:
        assert len(pids) == 3, "the child executor did not report its run"
        assert len([pid for pid in live_processes_with(mark) if pid != child.pid]) == 2
        child.send_signal(signal.SIGKILL)
        child.wait()
        for pidfd in pidfds:  # the task, the namespace's pid 1, the server
            readable, _, _ = select.select([pidfd], [], [], WAIT_LIMIT)
            assert readable == [pidfd]
    finally:
        child.kill()
        child.wait()
        for pidfd in pidfds:
            os.close(pidfd)
    assert live_processes_with(mark) == []


# --- task files ----------------------------------------------------------------------------------


async def test_a_task_file_with_a_forkserver_and_a_sandbox(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    config = parse_config(
        textwrap.dedent(
            f"""
            [tasks.boxed]
            function = "box_tasks:look"
            cwd = "{box}"
            env = {{ PYTHONPATH = "{env["PYTHONPATH"]}" }}
            launcher = {{ kind = "forkserver", preload = ["box_tasks"] }}
            sandbox = {{ network = false }}
            """
        ),
        "tasks.toml",
    )
    resolved = config.resolve("boxed")
    record = await ex.run(resolved.argv, **resolved.run_options())
    assert payload(record)["ppid"] == 2
    assert record.launcher["kind"] == "forkserver" and record.extra["sandbox"]["network"] is False


# --- bad cases -----------------------------------------------------------------------------------


async def test_a_sandbox_that_fails_to_start_is_a_launch_error_with_bwraps_message(
    ex: Executor, env: dict[str, str], box: Path
) -> None:
    record = await call(ex, "look", env, box, sandbox=Sandbox(readonly=["/proc/self/ns/net"]))
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert "bwrap: Can't find source path /proc/self/ns/net" in record.error["message"]
    assert payload(await call(ex, "look", env, box))["ppid"] == 2  # the next one starts


async def test_a_missing_extra_path_is_a_launch_error(
    ex: Executor, env: dict[str, str], box: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    record = await call(ex, "look", env, box, sandbox=Sandbox(writable=[missing]))
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert "sandbox.writable" in record.error["message"] and str(missing) in record.error["message"]


@pytest.mark.parametrize(
    ("communicators", "sandbox", "expected"),
    [
        (("socket",), Sandbox(), "not over a Unix socket"),
        (("tcp",), Sandbox(), "needs sandbox network=true"),
    ],
)
async def test_what_the_servers_sandbox_cannot_reach_is_a_launch_error(
    ex: Executor,
    env: dict[str, str],
    box: Path,
    communicators: tuple[str, ...],
    sandbox: Sandbox,
    expected: str,
) -> None:
    record = await call(ex, "look", env, box, communicators=communicators, sandbox=sandbox)
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and expected in record.error["message"]


async def test_tcp_with_the_network_works(ex: Executor, env: dict[str, str], box: Path) -> None:
    record = await call(ex, "look", env, box, communicators=("tcp",), sandbox=Sandbox(network=True))
    assert payload(record)["ppid"] == 2


async def test_bwrap_missing_is_a_launch_error_naming_the_package(
    ex: Executor,
    env: dict[str, str],
    box: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    record = await call(ex, "look", env, box)
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and "apt-get install bubblewrap" in record.error["message"]
    assert not [key for key in _SERVERS if key[4] is not None and key[4][1] == str(box)]
