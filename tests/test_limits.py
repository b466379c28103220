"""Resource limits: each limit provoked for real ends the run with the right verdict and usage."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest

from lute_async import Executor
from lute_async.limits import Limits

USAGE_KEYS = {"wall", "user", "system", "max_rss_kib"}
SYSTEM_PYTHON = "/usr/bin/python3"
MIB = 1024 * 1024


async def test_a_clean_run_has_verdict_ok_and_usage(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    record = await executor.run(script("print('hi')"), name="clean")
    assert record.verdict == {"kind": "ok", "detail": None}
    assert record.usage is not None and record.usage.keys() >= USAGE_KEYS
    assert record.usage["max_rss_kib"] > 0


async def test_a_cpu_spin_ends_with_cpu_limit(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    record = await executor.run(script("while True: pass"), name="spin", limits=Limits(cpu_time=1))
    assert record.status == "FAILED"
    assert record.verdict is not None and record.verdict["kind"] == "cpu_limit"
    assert record.usage is not None
    # The kernel enforces RLIMIT_CPU on the exact run time; rusage's user+system is sampled at
    # ticks and read 0.88 s for a 1 s limit on a loaded machine: it only has to show the spin.
    assert record.usage["user"] + record.usage["system"] >= 0.5


async def test_an_allocation_loop_ends_with_memory_limit(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        chunks = []
        while True:
            chunks.append(bytearray(16 * 1024 * 1024))
        """
    )
    limit = 256 * MIB
    record = await executor.run(argv, name="hog", limits=Limits(memory=limit))
    assert record.status == "FAILED"
    assert record.verdict is not None and record.verdict["kind"] == "memory_limit"
    assert record.usage is not None
    # ru_maxrss of a vfork'd child starts at the executor's peak, so only a peak above that
    # one is the task's own, and then it stays under the address-space limit.
    usage = record.usage
    if usage["max_rss_kib"] > usage["inherited_rss_kib"]:
        assert usage["max_rss_kib"] * 1024 <= limit
    assert usage["max_rss_kib"] > 0


async def test_a_memory_error_reported_by_the_task_is_a_memory_limit(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        from lute_async.task import Reporter
        with Reporter.connect():
            chunks = []
            while True:
                chunks.append(bytearray(16 * 1024 * 1024))
        """
    )
    record = await executor.run(argv, name="reported-hog", limits=Limits(memory=512 * MIB))
    assert record.error is not None and record.error["type"] == "MemoryError"
    assert record.verdict is not None and record.verdict["kind"] == "memory_limit"


@pytest.mark.skipif(
    shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs setpriv and a system python to run the fork loop as an unprivileged user",
)
async def test_a_fork_loop_hits_the_pids_limit(executor: Executor) -> None:
    # RLIMIT_NPROC does not apply to root, so the task drops to `nobody` (as root) first;
    # a world-readable interpreter and `-c` source keep it independent of tmp_path modes.
    source = "import os, signal\nwhile True:\n    if os.fork() == 0:\n        signal.pause()\n"
    drop = (
        []
        if os.getuid() != 0
        else ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    )
    record = await executor.run(
        [*drop, SYSTEM_PYTHON, "-c", source],
        name="forker",
        cwd="/",
        communicators=("pipe",),
        limits=Limits(pids=8),
    )
    assert record.status == "FAILED"
    assert record.verdict is not None
    assert record.verdict["kind"] == "runtime_error"
    assert record.verdict["limit"] == "pids"
    assert record.usage is not None and record.usage.keys() >= USAGE_KEYS


async def test_an_fd_loop_hits_the_open_files_limit(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os
        fds = []
        while True:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        """
    )
    record = await executor.run(argv, name="fds", limits=Limits(open_files=32))
    assert record.status == "FAILED"
    assert record.verdict is not None
    assert record.verdict["kind"] == "runtime_error"
    assert record.verdict["limit"] == "open_files"
    assert record.usage is not None


async def test_a_stdout_flood_ends_with_output_limit_and_counts_the_excess(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import sys
        line = "x" * 1023 + "\\n"
        while True:
            sys.stdout.write(line)
        """
    )
    logged = 0

    def count(event: object) -> None:
        nonlocal logged
        logged += 1

    record = await executor.run(
        argv, name="flood", limits=Limits(output_bytes=MIB), hooks={"log": count}
    )
    assert record.status == "FAILED"
    assert record.verdict is not None and record.verdict["kind"] == "output_limit"
    assert record.extra["output_discarded_bytes"] > 0
    assert 0 < logged <= MIB // 1024
    assert record.usage is not None


async def test_a_sleep_past_the_wall_time_ends_with_time_limit(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script("import time; time.sleep(3600)")
    record = await executor.run(argv, name="sleeper", limits=Limits(wall_time=0.5))
    assert record.status == "TIMEDOUT"
    assert record.verdict is not None and record.verdict["kind"] == "time_limit"
    assert record.usage is not None and record.usage.keys() >= USAGE_KEYS


async def test_a_non_zero_exit_is_a_runtime_error(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    record = await executor.run(script("raise SystemExit(3)"), name="exit3")
    assert record.verdict == {"kind": "runtime_error", "detail": "exit code 3"}


async def test_death_by_a_signal_is_verdict_signal(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    record = await executor.run(argv, name="segv")
    assert record.verdict is not None
    assert record.verdict["kind"] == "signal"
    assert record.verdict["detail"] == "killed by SIGSEGV"


async def test_a_launch_failure_is_a_runtime_error(executor: Executor) -> None:
    record = await executor.run(["/nonexistent/tool"], name="missing", limits=Limits(pids=4))
    assert record.status == "FAILED"
    assert record.verdict is not None and record.verdict["kind"] == "runtime_error"
    assert "command not found" in record.verdict["detail"]


async def test_the_verdict_is_stored_in_the_database(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    record = await executor.run(script("raise SystemExit(1)"), name="stored")
    stored = (await executor.store()).get(record.id)
    assert stored.verdict == record.verdict
    assert stored.usage == record.usage


def test_limits_reject_non_positive_values() -> None:
    with pytest.raises(ValueError, match="cpu_time"):
        Limits(cpu_time=0)


def test_cpu_limit_sends_sigxcpu_before_sigkill() -> None:
    argv = Limits(cpu_time=2, open_files=64).wrap(["task"])
    assert argv[1:] == ["--cpu=2:3", "--nofile=64", "--", "task"]
