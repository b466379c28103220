"""The bubblewrap sandbox on real processes: what a sandboxed task can see, write and reach, and
that reporting, cancel, timeouts and stop/resume still work (and leave nothing behind)."""

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from lute_async import Executor, Sandbox
from lute_async.config import parse_config
from lute_async.errors import ConfigError, LaunchError
from lute_async.launchers.base import LaunchSpec
from lute_async.messages import TaskStatus
from lute_async.sandbox import PACKAGE, SandboxFds, find_bwrap, sandbox_command

ROOT = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(ROOT)}


@pytest.fixture(autouse=True)
def _need_bwrap() -> None:
    if shutil.which("bwrap") is None:
        reason = f"bubblewrap's bwrap is not installed (Debian package {PACKAGE!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def executor(tmp_path: Path) -> Executor:
    return Executor(tmp_path / "runs.db", log_events=False, grace=2.0)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


async def run_logged(tmp_path: Path, cmd: list[str], **options: Any) -> tuple[Any, list[str]]:
    """The record of ``cmd`` and its log lines (stdout and stderr)."""
    lines: list[str] = []
    async with executor(tmp_path) as ex:
        async with ex.start(cmd, **options) as run:
            async for message in run.messages():
                if message.sig == "log":
                    lines.append(message.data["message"])
        return run.record, lines


def live_processes_with(marker: str) -> list[int]:
    """Pids of live processes (anywhere on the host) whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def gone(pid: int | None) -> bool:
    """True when ``pid`` is not a live process (a zombie waiting for a reaper is not live)."""
    if pid is None:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


# --- isolation -----------------------------------------------------------------------------------


async def test_a_venvs_python_under_tmp_is_seen_once_its_venv_is_bound(
    tmp_path: Path, workdir: Path
) -> None:
    """A venv's python is a link under the venv (here under /tmp, which the sandbox replaces
    with its own): outside the view it is refused by name, bound it runs."""
    venv = tmp_path / "venv"
    await anyio.run_process([sys.executable, "-m", "venv", "--without-pip", venv])
    python = [str(venv / "bin" / "python"), "-c", "import sys; print(sys.prefix)"]
    refused, _ = await run_logged(tmp_path, python, cwd=workdir, sandbox=Sandbox())
    assert refused.status == TaskStatus.FAILED.value and refused.error["type"] == "LaunchError"
    assert "is outside the sandbox's view" in refused.error["message"]
    record, lines = await run_logged(
        tmp_path, python, cwd=workdir, sandbox=Sandbox(readonly=[str(venv)])
    )
    assert record.status == TaskStatus.COMPLETED.value, (record.error, lines)
    assert lines == [str(venv)]


def test_the_python_in_use_is_bound_over_the_private_tmp_not_under_it(tmp_path: Path) -> None:
    spec = LaunchSpec(argv=["true"], env={}, run_id="r", name="r", run_dir=tmp_path, cwd="/")
    fds = SandboxFds(info=5, stderr=6, ready=7)
    argv = sandbox_command(Sandbox(), spec, ["true"], fds, bwrap="bwrap")
    tmpfs = argv.index("--tmpfs")
    pythons = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    python_binds = [i for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] in pythons]
    assert python_binds and all(i > tmpfs for i in python_binds)


async def test_cannot_write_outside_its_workdir(tmp_path: Path, workdir: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    script = f"""
        from pathlib import Path
        Path("inside.txt").write_text("ok")
        for target in ("{outside}/x", "/usr/x", "/etc/x", "{tmp_path}/x", "/tmp/lute-x"):
            try:
                Path(target).write_text("escaped")
            except OSError as exc:
                print("refused", target, type(exc).__name__, exc.strerror)
            else:
                print("WROTE", target)
    """
    record, lines = await run_logged(
        tmp_path, python(script), cwd=workdir, env=ENV, sandbox=Sandbox(readonly=[outside])
    )
    assert record.status == TaskStatus.COMPLETED.value, lines
    assert (workdir / "inside.txt").read_text() == "ok"
    # A read-only path refuses the write; /tmp (and the dirs bwrap made in it to reach the
    # workdir) is the sandbox's own: a write there succeeds but never reaches the host.
    assert [line for line in lines if line.startswith("WROTE")] == [
        f"WROTE {tmp_path}/x",
        "WROTE /tmp/lute-x",
    ]
    for target in (outside, "/usr", "/etc"):
        assert f"refused {target}/x OSError Read-only file system" in lines
    assert not (outside / "x").exists() and not (tmp_path / "x").exists()
    assert not Path("/tmp/lute-x").exists()


async def test_a_write_to_a_read_only_path_is_the_tasks_own_error(
    tmp_path: Path, workdir: Path
) -> None:
    record, lines = await run_logged(
        tmp_path, ["sh", "-c", "echo x > /usr/lute-async-x"], cwd=workdir, sandbox=Sandbox()
    )
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and record.error["type"] == "NonZeroExit"
    assert any("Read-only file system" in line for line in lines), lines


async def test_writable_paths_are_writable(tmp_path: Path, workdir: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    record, lines = await run_logged(
        tmp_path,
        ["sh", "-c", f"echo hello > {shared}/out"],
        cwd=workdir,
        sandbox=Sandbox(readonly=[tmp_path], writable=[shared]),
    )
    assert record.status == TaskStatus.COMPLETED.value, lines
    assert (shared / "out").read_text() == "hello\n"


@pytest.fixture
def planted() -> Iterator[Path]:
    """A file planted in the home directory (removed afterwards)."""
    path = Path.home() / f".lute-async-sandbox-{uuid.uuid4().hex}"
    path.write_text("the secret in the home directory")
    try:
        yield path
    finally:
        path.unlink()


async def test_cannot_read_a_file_planted_in_the_home_directory(
    tmp_path: Path, workdir: Path, planted: Path
) -> None:
    cat = ["cat", str(planted)]
    _, plain_lines = await run_logged(tmp_path, cat, cwd=workdir)
    assert "the secret in the home directory" in plain_lines  # readable without the sandbox
    record, lines = await run_logged(tmp_path, cat, cwd=workdir, sandbox=Sandbox())
    assert record.status == TaskStatus.FAILED.value
    assert "the secret in the home directory" not in lines
    assert any("No such file or directory" in line for line in lines), lines


@pytest.fixture
def listening() -> Iterator[int]:
    """A TCP socket listening on 127.0.0.1 (connections wait in its backlog); its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


CONNECT = """
    import socket, sys
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=10).close()
    except OSError as exc:
        print("refused:", exc)
        sys.exit(3)
    print("connected")
"""


async def test_no_network_by_default(tmp_path: Path, workdir: Path, listening: int) -> None:
    code = python(CONNECT.format(port=listening))
    plain, _ = await run_logged(tmp_path, code, cwd=workdir)
    assert plain.status == TaskStatus.COMPLETED.value  # reachable without the sandbox
    record, lines = await run_logged(tmp_path, code, cwd=workdir, sandbox=Sandbox())
    assert record.exit_code == 3, lines
    assert "connected" not in lines


async def test_network_true_allows_the_connection(
    tmp_path: Path, workdir: Path, listening: int
) -> None:
    code = python(CONNECT.format(port=listening))
    record, lines = await run_logged(tmp_path, code, cwd=workdir, sandbox=Sandbox(network=True))
    assert record.status == TaskStatus.COMPLETED.value, lines
    assert lines == ["connected"]


async def test_own_pid_namespace_and_the_record_keeps_the_real_pid(
    tmp_path: Path, workdir: Path
) -> None:
    code = python("import os; print(os.getpid(), sum(p.isdigit() for p in os.listdir('/proc')))")
    record, lines = await run_logged(tmp_path, code, cwd=workdir, sandbox=Sandbox())
    pid, visible = (int(word) for word in lines[0].split())
    assert pid == 2 and visible == 2  # bwrap's pid 1 and the task: nothing of the host
    facts = record.extra["sandbox"]
    assert record.extra["pid"] > 2 and facts["init_pid"] > 2 and facts["task_pid"] > 2
    assert len({record.extra["pid"], facts["init_pid"], facts["task_pid"]}) == 3
    assert facts["network"] is False


async def test_no_capabilities_even_as_root(tmp_path: Path, workdir: Path) -> None:
    _, lines = await run_logged(
        tmp_path, ["grep", "^CapEff", "/proc/self/status"], cwd=workdir, sandbox=Sandbox()
    )
    assert lines == ["CapEff:\t0000000000000000"], lines


# --- reporting -----------------------------------------------------------------------------------

MESSAGES = 10_000
REPORT = """
    from lute_async.task import Reporter
    with Reporter.connect(prefer=("{kind}",), required=True) as report:
        for number in range({count}):
            report.emit("n", number)
"""


@pytest.mark.parametrize("kind", ["pipe", "socket"])
async def test_messages_arrive_in_order_over_fd_3_and_the_socket(
    tmp_path: Path, workdir: Path, kind: str
) -> None:
    seen: list[int] = []
    sources: set[str] = set()
    async with executor(tmp_path) as ex:
        code = python(REPORT.format(kind=kind, count=MESSAGES))
        async with ex.start(code, cwd=workdir, env=ENV, sandbox=Sandbox()) as run:
            async for message in run.messages():
                if message.sig == "n":
                    seen.append(message.data)
                    sources.add(message.source)
    assert run.record.status == TaskStatus.COMPLETED.value, run.record.error
    assert seen == list(range(MESSAGES))
    assert sources == {kind}


async def test_a_sandboxed_task_sees_its_own_socket_not_the_other_runs_sockets(
    tmp_path: Path, workdir: Path
) -> None:
    code = python(
        """
        import os
        path = os.environ["LUTE_ASYNC_SOCKET"]
        print(sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path)])
        """
    )
    lines: list[str] = []
    async with (
        executor(tmp_path) as ex,
        ex.start(["sleep", "60"], communicators=("socket",)) as neighbour,
    ):
        async with ex.start(code, cwd=workdir, env=ENV, sandbox=Sandbox()) as run:
            async for message in run.messages():
                if message.sig == "log":
                    lines.append(message.data["message"])
        await neighbour.cancel()
    assert run.record.status == TaskStatus.COMPLETED.value, run.record.error
    assert lines == ["True"]


# --- control -------------------------------------------------------------------------------------


def _spawner(marker: str) -> list[str]:
    """A task that leaves a background child, one in a session of its own, then waits."""
    return [
        "sh",
        "-c",
        f"sleep {marker} & setsid sleep {marker} & echo ready; trap 'exit 0' TERM; wait",
    ]


async def test_cancel_leaves_no_process_behind(tmp_path: Path, workdir: Path) -> None:
    marker = str(900000 + os.getpid() % 1000)
    spawner = _spawner(marker)
    async with executor(tmp_path) as ex, ex.start(spawner, cwd=workdir, sandbox=Sandbox()) as run:
        async for message in run.messages():
            if message.sig == "log" and message.data["message"] == "ready":
                assert live_processes_with(marker), "the task's children are running"
                await run.cancel()
    record = run.record
    assert record.status == TaskStatus.CANCELLED.value
    facts = record.extra["sandbox"]
    assert live_processes_with(marker) == []
    assert all(gone(pid) for pid in (record.extra["pid"], facts["init_pid"], facts["task_pid"]))


async def test_timeout_ends_the_sandbox(tmp_path: Path, workdir: Path) -> None:
    marker = str(910000 + os.getpid() % 1000)
    async with executor(tmp_path) as ex:
        record = await ex.run(_spawner(marker), cwd=workdir, timeout=0.5, sandbox=Sandbox())
    assert record.status == TaskStatus.TIMEDOUT.value
    assert record.verdict["kind"] == "time_limit"
    assert live_processes_with(marker) == []


async def test_sigterm_reaches_the_task_which_may_clean_up(tmp_path: Path, workdir: Path) -> None:
    script = ["sh", "-c", "trap 'echo cleaned; exit 7' TERM; echo ready; while :; do sleep 1; done"]
    lines = []
    async with executor(tmp_path) as ex, ex.start(script, cwd=workdir, sandbox=Sandbox()) as run:
        async for message in run.messages():
            if message.sig == "log":
                lines.append(message.data["message"])
                if lines == ["ready"]:
                    await run.cancel()
    assert "cleaned" in lines  # within the grace period, not SIGKILLed with bwrap


async def test_stop_and_resume_the_whole_sandbox(tmp_path: Path, workdir: Path) -> None:
    def state(pid: int) -> str:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]

    sleeper = ["sleep", "300"]
    async with executor(tmp_path) as ex, ex.start(sleeper, cwd=workdir, sandbox=Sandbox()) as run:
        async for message in run.messages():
            if message.sig == "started":
                break
        facts = run.record.extra["sandbox"]
        await run.stop()
        assert state(facts["task_pid"]) == "T" and state(run.record.extra["pid"]) == "T"
        await run.resume()
        assert state(facts["task_pid"]) != "T"
        await run.cancel()
    assert run.record.status == TaskStatus.CANCELLED.value


async def test_limits_and_their_verdicts_still_work(tmp_path: Path, workdir: Path) -> None:
    spin = python("while True: pass")
    async with executor(tmp_path) as ex:
        record = await ex.run(spin, cwd=workdir, limits={"cpu_time": 1}, sandbox=Sandbox())
    assert record.verdict["kind"] == "cpu_limit", record.verdict


async def test_a_task_file_sandbox_table(tmp_path: Path, workdir: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    config = parse_config(
        textwrap.dedent(
            f"""
            [tasks.boxed]
            command = ["sh", "-c", "echo $$ > {shared}/pid; echo x > /etc/x"]
            cwd = "{workdir}"
            sandbox = {{ network = false, writable = ["{shared}"] }}
            """
        ),
        "tasks.toml",
    )
    resolved = config.resolve("boxed")
    assert resolved.sandbox == Sandbox(writable=(str(shared),))
    async with executor(tmp_path) as ex:
        record = await ex.run(resolved.argv, **resolved.run_options())
    assert record.status == TaskStatus.FAILED.value  # /etc is read-only
    assert (shared / "pid").read_text() == "2\n"


async def test_a_graph_node_sandbox(tmp_path: Path, workdir: Path) -> None:
    async with executor(tmp_path) as ex:
        graph = ex.graph()
        graph.add("boxed", ["sh", "-c", "echo $$ > pid"], cwd=workdir, sandbox={"network": False})
        records = await graph.run()
    assert records["boxed"].status == TaskStatus.COMPLETED.value
    assert (workdir / "pid").read_text() == "2\n"


def test_a_bad_task_file_sandbox_names_the_task_and_the_key() -> None:
    for table, key in [("{ network = 'no' }", "network"), ("{ readonly = ['rel'] }", "readonly")]:
        text = f'[tasks.boxed]\ncommand = ["true"]\nsandbox = {table}\n'
        with pytest.raises(ConfigError) as info:
            parse_config(text, "tasks.toml")
        assert "tasks.toml" in str(info.value) and f"'sandbox.{key}'" in str(info.value)


# --- bad values and failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"network": "yes"}, "sandbox.network"),
        ({"readonly": "/usr"}, "sandbox.readonly"),
        ({"readonly": ["relative/path"]}, "sandbox.readonly"),
        ({"writable": [1]}, "sandbox.writable"),
        ({"unknown": 1}, "sandbox.unknown"),
        ("yes", "sandbox"),
    ],
)
async def test_bad_sandbox_values_are_config_errors_naming_the_key(
    tmp_path: Path, value: Any, key: str
) -> None:
    async with executor(tmp_path) as ex:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            await ex.run(["true"], sandbox=value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"network": 1}, "sandbox.network"),
        ({"readonly": ["not/absolute"]}, "sandbox.readonly"),
        ({"writable": [None]}, "sandbox.writable"),
    ],
)
def test_bad_sandbox_arguments(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Sandbox(**kwargs)


async def test_a_missing_extra_path_is_a_launch_error(tmp_path: Path, workdir: Path) -> None:
    missing = tmp_path / "missing"
    async with executor(tmp_path) as ex:
        record = await ex.run(["true"], cwd=workdir, sandbox=Sandbox(readonly=[missing]))
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert "sandbox.readonly" in record.error["message"] and str(missing) in record.error["message"]


async def test_a_sandbox_that_fails_to_start_is_a_launch_error_with_bwraps_message(
    tmp_path: Path, workdir: Path
) -> None:
    # /proc/self/ns/net exists here, but not to bwrap, which resolves sources once /proc is
    # its own.
    async with executor(tmp_path) as ex:
        boxed = Sandbox(readonly=["/proc/self/ns/net"])
        record = await ex.run(["true"], cwd=workdir, sandbox=boxed)
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and record.error["type"] == "LaunchError"
    message = record.error["message"]
    assert "failed to start: bwrap: Can't find source path /proc/self/ns/net" in message


async def test_a_program_outside_the_view_is_a_launch_error(tmp_path: Path, workdir: Path) -> None:
    program = tmp_path / "tool.sh"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o755)
    async with executor(tmp_path) as ex:
        record = await ex.run([str(program)], cwd=workdir, sandbox=Sandbox())
        readable = await ex.run(
            [str(program)], cwd=workdir, sandbox=Sandbox(readonly=[tmp_path])
        )
    assert record.error is not None and "outside the sandbox's view" in record.error["message"]
    assert readable.status == TaskStatus.COMPLETED.value


async def test_tcp_needs_the_network(tmp_path: Path, workdir: Path) -> None:
    async with executor(tmp_path) as ex:
        record = await ex.run(["true"], cwd=workdir, communicators=["tcp"], sandbox=Sandbox())
    assert record.error is not None and "needs sandbox network=true" in record.error["message"]


async def test_a_launcher_that_cannot_sandbox_refuses(tmp_path: Path, workdir: Path) -> None:
    from lute_async import Slurm

    async with executor(tmp_path) as ex:
        record = await ex.run(["true"], cwd=workdir, launcher=Slurm(), sandbox=Sandbox())
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert "the slurm launcher cannot run run 'true' in a sandbox" in record.error["message"]


async def test_bwrap_missing_is_a_launch_error_naming_the_package(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LaunchError, match="Debian package 'bubblewrap'"):
        find_bwrap()
    async with executor(tmp_path) as ex:
        record = await ex.run(["/bin/true"], cwd=workdir, sandbox=Sandbox())
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and "apt-get install bubblewrap" in record.error["message"]


def test_the_executor_dying_ends_the_sandbox(tmp_path: Path, workdir: Path) -> None:
    marker = str(920000 + os.getpid() % 1000)
    script = f"""
        import anyio, sys
        from lute_async import Executor, Sandbox
        async def main():
            async with Executor({str(tmp_path / 'child.db')!r}, log_events=False) as ex:
                async with ex.start({_spawner(marker)!r}, cwd={str(workdir)!r},
                                    sandbox=Sandbox()) as run:
                    async for message in run.messages():
                        if message.sig == "log":
                            facts = run.record.extra["sandbox"]
                            print(run.pid, facts["init_pid"], flush=True)
                            sys.stdin.read()
        anyio.run(main)
    """
    child = subprocess.Popen(
        python(script), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **ENV}
    )
    assert child.stdout is not None
    pids = [int(word) for word in child.stdout.readline().split()]
    pidfds = [os.pidfd_open(pid) for pid in pids]
    try:
        assert live_processes_with(marker)
        child.send_signal(signal.SIGKILL)
        child.wait()
        for pidfd in pidfds:  # bwrap, then the namespace's pid 1 (it ends after all in it)
            readable, _, _ = select.select([pidfd], [], [], 30)
            assert readable == [pidfd]
    finally:
        for pidfd in pidfds:
            os.close(pidfd)
    assert live_processes_with(marker) == []
