"""Process control: stop/resume pause the whole task (and its wall-time clock), and a task
never outlives its executor."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import anyio
from conftest import process_exists

from lute_async import Event, Executor
from lute_async.limits import Limits, parent_death_shim

WAIT_LIMIT = 30.0  # seconds: a bound on waits that succeed at once when the code is right


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


async def _wait_state_change(pid: int, which: int) -> None:
    """Wait (without reaping) until our child ``pid`` is stopped or continued."""
    with anyio.fail_after(WAIT_LIMIT):
        await anyio.to_thread.run_sync(
            os.waitid, os.P_PID, pid, which | os.WNOWAIT, abandon_on_cancel=True
        )


async def test_stop_and_resume_are_seen_in_proc_and_fire_events(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script("import time; print('ready', flush=True); time.sleep(3600)")
    states: list[str] = []
    events: list[str] = []
    async with executor.start(argv, name="pausable", timeout=60) as run:
        async for message in run.messages():
            events.append(message.sig)
            if message.sig == "log" and message.data["message"] == "ready":
                assert run.pid is not None
                await run.stop()
                await _wait_state_change(run.pid, os.WSTOPPED)
                states.append(_proc_state(run.pid))
                assert run.status in ("RUNNING", "STOPPED")
                await run.resume()
                await _wait_state_change(run.pid, os.WCONTINUED)
                states.append(_proc_state(run.pid))
                await run.cancel()
        record = await run.wait()
    assert states[0] == "T" and states[1] != "T"
    assert events.index("stopped") < events.index("continued") < events.index("cancelled")
    assert record.status == "CANCELLED"


async def test_stopped_time_does_not_count_against_the_wall_time(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script("import time; print('ready', flush=True); time.sleep(3600)")
    async with executor.start(argv, name="paused-clock", limits=Limits(wall_time=600)) as run:
        async for message in run.messages():
            if message.sig == "log" and message.data["message"] == "ready":
                assert run.pid is not None
                await run.stop()
                left = run.time_left
                await _wait_state_change(run.pid, os.WSTOPPED)  # time passes, stopped
                assert run.time_left == left
                await run.resume()
                resumed = run.time_left
                assert left is not None and resumed is not None and 0 < resumed <= left
                await run.cancel()
        await run.wait()


async def test_the_wall_time_still_ends_a_run_after_stop_and_resume(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script("import time; print('ready', flush=True); time.sleep(3600)")
    async with executor.start(argv, name="resumed", limits=Limits(wall_time=0.5)) as run:
        async for message in run.messages():
            if message.sig == "log" and message.data["message"] == "ready":
                await run.stop()
                await run.resume()
        record = await run.wait()
    assert record.status == "TIMEDOUT"
    assert record.verdict is not None and record.verdict["kind"] == "time_limit"


async def test_a_stop_longer_than_the_wall_time_does_not_time_the_run_out(
    executor: Executor, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    os.mkfifo(release)
    argv = script(f"print('ready', flush=True); print(open({str(release)!r}).read())")
    async with executor.start(argv, name="long-pause", timeout=3.0) as run:
        async for message in run.messages():
            if message.sig == "log" and message.data["message"] == "ready":
                await run.stop()
                break
        # Stopped for longer than the whole wall time: the run must still be waiting.
        with anyio.move_on_after(4.0) as waited:
            await run.wait()
        assert waited.cancelled_caught and run.status == "STOPPED"
        await run.resume()
        await anyio.to_thread.run_sync(release.write_text, "go")
        record = await run.wait()
    assert record.status == "COMPLETED", record.error
    assert record.verdict is None or record.verdict.get("kind") != "time_limit"


EXECUTOR_SCRIPT = """
    import sys
    import anyio
    from lute_async import Event, Executor

    async def main() -> None:
        executor = Executor(db=sys.argv[1], workdir=sys.argv[2])

        def announce(event):
            if event.data.get("message") == "ready":
                print(event.run.pid, flush=True)

        await executor.run(
            [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(3600)"],
            name="orphan-to-be",
            hooks={"log": announce},
        )

    anyio.run(main)
"""


async def test_a_hook_that_cancels_its_run_sees_the_exit_without_waiting_out_the_grace(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # The run's own task runs the hooks, so the exit must be noted by the loop's callback on
    # the pidfd, not by that task: a cancel awaited in a hook would otherwise sit out the
    # grace period (an hour here: the test's timeout ends it) and then SIGKILL the task.
    argv = script(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
        "print('ready', flush=True)\n"
        "time.sleep(3600)\n"
    )
    async def cancel_on_ready(event: Event) -> None:
        if event.data["message"] == "ready":
            await event.run.cancel()

    record = await executor.run(argv, grace=3600, hooks={"log": cancel_on_ready})
    assert record.status == "CANCELLED"
    assert record.exit_code == 3  # ended by the SIGTERM, not by a SIGKILL after the grace


def test_a_task_ends_when_its_executor_is_sigkilled(tmp_path: Path) -> None:
    path = tmp_path / "executor.py"
    path.write_text(textwrap.dedent(EXECUTOR_SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, os.fspath(path), os.fspath(tmp_path / "runs.db"), str(tmp_path / "w")],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the task's pid, once the task is running
    task_pid = int(line)
    assert process_exists(task_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    try:
        pidfd = os.pidfd_open(task_pid)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        readable, _, _ = select.select([pidfd], [], [], WAIT_LIMIT)
    finally:
        os.close(pidfd)
    assert readable, f"task {task_pid} still running after its executor was SIGKILLed"
    assert not process_exists(task_pid)


def test_the_parent_death_shim_is_setpriv_when_available() -> None:
    shim = parent_death_shim()
    if shutil.which("setpriv") is None:
        assert shim == []
    else:
        assert shim[1:] == ["--pdeathsig", "KILL", "--"]
