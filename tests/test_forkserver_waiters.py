"""The executor's side of a fork server wakes only the waiter a report is for, and the reading
turn always passes on: a waiter that is handed it and cancelled at once hands it to the next,
so the others still get their reports (a real server, real children)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from lute_async.launchers.forkserver.server import Exit, Server

WAIT_LIMIT = 30


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, dict[str, str]]]:
    (tmp_path / "fw_tasks.py").write_text(
        textwrap.dedent(
            """
            import time
            from lute_async.task import task

            @task
            def nap():
                time.sleep(600)
            """
        )
    )
    path = os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    server = Server(sys.executable, ["fw_tasks"], env)
    try:
        await server.start()
        yield server, env
    finally:
        server.close()


async def napping_child(server: Server, env: dict[str, str]) -> int:
    request = {"target": "fw_tasks:nap", "env": env, "cwd": None, "fds": [], "limits": None}
    pid: int = (await server.spawn(request, []))["pid"]
    return pid


async def test_a_waiter_cancelled_with_the_reading_turn_passes_it_on(
    server: tuple[Server, dict[str, str]],
) -> None:
    fork, env = server
    first, second, third = [await napping_child(fork, env) for _ in range(3)]
    ended: dict[int, Exit] = {}
    both = anyio.CancelScope()  # the reader's and the next waiter's

    async def wait(pid: int) -> None:
        ended[pid] = await fork.wait_exit(pid)

    async def reader_and_next() -> None:
        with both:
            async with anyio.create_task_group() as pair:
                pair.start_soon(wait, first)  # the first to wait reads
                await anyio.wait_all_tasks_blocked()
                pair.start_soon(wait, second)

    with anyio.fail_after(WAIT_LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader_and_next)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(wait, third)
            await anyio.wait_all_tasks_blocked()
            # The reader leaves, cancelled, and hands its turn to the second waiter, whose
            # cancellation is already under way: the second passes it to the third.
            both.cancel()
            await anyio.wait_all_tasks_blocked()
            os.kill(third, signal.SIGKILL)
    assert list(ended) == [third]
    assert os.WTERMSIG(ended[third].status) == signal.SIGKILL
    for pid in (first, second):
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(WAIT_LIMIT):
            assert os.WTERMSIG((await fork.wait_exit(pid)).status) == signal.SIGKILL


async def test_a_report_wakes_only_its_waiter(server: tuple[Server, dict[str, str]]) -> None:
    fork, env = server
    pids = [await napping_child(fork, env) for _ in range(4)]
    last_ended = anyio.Event()

    async def wait(pid: int) -> None:
        await fork.wait_exit(pid)
        if pid == pids[-1]:
            last_ended.set()

    with anyio.fail_after(WAIT_LIMIT):
        async with anyio.create_task_group() as tg:
            for pid in pids:
                tg.start_soon(wait, pid)
            await anyio.wait_all_tasks_blocked()
            waiting = dict(fork._waiting)
            assert len(waiting) == 3  # the first reads, three wait on events of their own
            os.kill(pids[-1], signal.SIGKILL)
            await last_ended.wait()
            await anyio.wait_all_tasks_blocked()
            # The other two still wait on the same events: never woken (a woken waiter that
            # is not done waits again on a new one).
            assert len(fork._waiting) == 2 and set(fork._waiting) < set(waiting)
            for pid in pids[:-1]:
                os.kill(pid, signal.SIGKILL)
