"""The guardian: local tasks (and their process groups) die with their executor, without an exec
shim in front of each task; a guardian that was killed is started again and told every task."""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from conftest import process_exists

from lute_async import Executor, guardian_main
from lute_async.launchers.base import LaunchSpec
from lute_async.launchers.guardian import GUARDIAN, Guardian
from lute_async.launchers.local import Local

WAIT_LIMIT = 30.0  # seconds: a bound on waits that succeed at once when the code is right


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Group leaders that sleep (the shape of a local task); whatever is left is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _sleeper(started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    started.append(proc)
    return proc


def _ended(proc: subprocess.Popen[bytes]) -> bool:
    try:
        proc.wait(timeout=WAIT_LIMIT)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_the_guardian_kills_the_tasks_it_watches_when_the_executor_side_closes(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    guardian = Guardian()
    first, second = _sleeper(sleepers), _sleeper(sleepers)
    guardian.watch(first.pid)
    guardian.watch(second.pid)
    assert guardian.pid is not None and process_exists(guardian.pid)
    guardian.close()  # what the kernel does when the executor dies: the pipe's end closes
    assert _ended(first) and first.returncode == -signal.SIGKILL
    assert _ended(second) and second.returncode == -signal.SIGKILL


def test_a_released_task_is_left_alone(sleepers: list[subprocess.Popen[bytes]]) -> None:
    guardian = Guardian()
    kept, released = _sleeper(sleepers), _sleeper(sleepers)
    guardian.watch(kept.pid)
    guardian.watch(released.pid)
    guardian.release(released.pid)
    guardian.close()
    assert _ended(kept)
    assert released.poll() is None  # still sleeping: the executor had reaped it (its pid)


def test_a_killed_guardian_is_started_again_and_told_every_running_task(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    guardian = Guardian()
    before = _sleeper(sleepers)
    guardian.watch(before.pid)
    old = guardian.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    assert guardian._process is not None
    guardian._process.wait()  # dead (and reaped) before the next spawn looks at it
    after = _sleeper(sleepers)
    guardian.watch(after.pid)  # finds its guardian dead: starts one, tells it both tasks
    assert guardian.pid not in (None, old)
    guardian.close()
    assert _ended(before) and _ended(after)


def test_garbage_lines_do_not_stop_the_guardian(sleepers: list[subprocess.Popen[bytes]]) -> None:
    guardian = Guardian()
    task = _sleeper(sleepers)
    guardian.watch(task.pid)
    assert guardian._send(b"+x\n-\n?12\n+999999999\n")
    guardian.close()
    assert _ended(task)


def test_local_runs_start_with_no_exec_shim_and_are_watched(tmp_path: Path) -> None:
    async def main() -> None:
        async with Executor(tmp_path / "runs.db", log_events=False) as executor:
            record = await executor.run(["/bin/true"])
        assert record.status == "COMPLETED"
        assert record.extra["launch_command"] == ["/bin/true"]

    anyio.run(main)
    assert GUARDIAN.pid is not None and process_exists(GUARDIAN.pid)


EXECUTOR_SCRIPT = """
    import subprocess, sys
    import anyio
    from lute_async import Executor, guardian_main

    TASK = (
        "import subprocess, time; child = subprocess.Popen(['sleep', '3600']); "
        "print('ready', child.pid, flush=True); time.sleep(3600)"
    )

    async def main() -> None:
        executor = Executor(db=sys.argv[1], workdir=sys.argv[2], log_events=False)

        def announce(event):
            words = str(event.data.get("message", "")).split()
            if words[:1] == ["ready"]:
                print(event.run.pid, words[1], flush=True)

        async with executor:
            await executor.run([sys.executable, "-c", TASK], hooks={"log": announce})

    anyio.run(main)
"""


def test_a_task_and_its_process_group_end_when_the_executor_is_sigkilled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "executor.py"
    path.write_text(textwrap.dedent(EXECUTOR_SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, os.fspath(path), os.fspath(tmp_path / "runs.db"), str(tmp_path / "w")],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    task_pid, child_pid = map(int, proc.stdout.readline().split())
    assert process_exists(task_pid) and process_exists(child_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    for pid in (task_pid, child_pid):  # the task, and what it started in its group
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone and reaped
        try:
            readable, _, _ = select.select([pidfd], [], [], WAIT_LIMIT)
        finally:
            os.close(pidfd)
        assert readable, f"{pid} still running after its executor was SIGKILLed"


async def test_a_cancel_that_lands_on_the_started_notify_kills_the_new_process(
    tmp_path: Path,
) -> None:
    # The spawn runs shielded in a worker thread; a cancel that arrives meanwhile lands on the
    # started notify, before the run holds the process: the launcher ends it instead.
    spec = LaunchSpec(
        argv=["sleep", "3600"], env=dict(os.environ), run_id="r", name="r", run_dir=tmp_path
    )
    pidfds: list[int] = []

    async def notify(sig: str, data: dict[str, object]) -> None:
        pidfds.append(os.pidfd_open(int(str(data["pid"]))))  # held while it surely runs
        scope.cancel()
        await anyio.lowlevel.checkpoint()

    with anyio.CancelScope() as scope:
        await Local().launch(spec, notify)
        pytest.fail("the launch was not cancelled")
    [pidfd] = pidfds
    try:
        with anyio.move_on_after(WAIT_LIMIT):
            await anyio.wait_readable(pidfd)  # readable once the process has ended
        readable, _, _ = select.select([pidfd], [], [], 0)
    finally:
        os.close(pidfd)
    assert readable, "the process a cancelled launch started is still running"


def test_without_pidfds_the_guardian_signals_the_group_by_pid(
    sleepers: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kernels before 5.3 have no pidfd_open (none here to run on): the task is held by pid.
    def no_pidfds(pid: int) -> int:
        raise OSError(errno.ENOSYS, "pidfd_open")

    monkeypatch.setattr(guardian_main.os, "pidfd_open", no_pidfds)
    task = _sleeper(sleepers)
    tasks: dict[int, int] = {}
    guardian_main._apply([b"+%d" % task.pid], tasks)
    assert tasks == {task.pid: guardian_main.NO_PIDFD}
    for pid, held in tasks.items():
        guardian_main._end(pid, held)
    assert _ended(task) and task.returncode == -signal.SIGKILL
