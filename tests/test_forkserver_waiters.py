"""The executor's side of a fork server wakes only the waiters a report is for; a waiter
cancelled leaves nothing behind, the others still get their reports,
and the connection is watched only while someone waits (a real server, real children)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from lute_async.launchers.forkserver.server import Server
from lute_async.launchers.forkserver.waiting import Exit

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


def watched(fork: Server) -> bool:
    """Whether the running loop has a reader on the server's connection (removed: put back)."""
    loop = asyncio.get_running_loop()
    if not loop.remove_reader(fork.sock):
        return False
    loop.add_reader(fork.sock, fork._read)
    return True


async def test_cancelled_waiters_leave_nothing_and_the_others_get_their_reports(
    server: tuple[Server, dict[str, str]],
) -> None:
    fork, env = server
    first, second, third = [await napping_child(fork, env) for _ in range(3)]
    assert not watched(fork)  # nobody waits: nothing reads the connection
    ended: dict[int, Exit] = {}
    both = anyio.CancelScope()  # the first's and the second's

    async def wait(pid: int) -> None:
        ended[pid] = await fork.wait_exit(pid)

    async def first_and_second() -> None:
        with both:
            async with anyio.create_task_group() as pair:
                pair.start_soon(wait, first)
                pair.start_soon(wait, second)

    with anyio.fail_after(WAIT_LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first_and_second)
            tg.start_soon(wait, third)
            await anyio.wait_all_tasks_blocked()
            assert set(fork._waiting) == {first, second, third} and watched(fork)
            os.kill(first, signal.SIGKILL)  # its report wakes the first alone
            while first not in ended:
                await anyio.wait_all_tasks_blocked()
            assert set(fork._waiting) == {second, third}
            both.cancel()  # the second, still waiting
            await anyio.wait_all_tasks_blocked()
            assert set(fork._waiting) == {third}
            os.kill(third, signal.SIGKILL)
    assert list(ended) == [first, third]
    assert os.WTERMSIG(ended[third].status) == signal.SIGKILL
    assert fork._waiting == {} and not watched(fork)
    os.kill(second, signal.SIGKILL)
    with anyio.fail_after(WAIT_LIMIT):
        assert os.WTERMSIG((await fork.wait_exit(second)).status) == signal.SIGKILL
    assert not watched(fork)


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
            waiting = {pid: list(waiters) for pid, waiters in fork._waiting.items()}
            assert set(waiting) == set(pids) and all(len(w) == 1 for w in waiting.values())
            os.kill(pids[-1], signal.SIGKILL)
            await last_ended.wait()
            await anyio.wait_all_tasks_blocked()
            # The other three still wait on the same futures, never woken.
            assert fork._waiting == {pid: waiting[pid] for pid in pids[:-1]}
            assert not any(w.done() for pid in pids[:-1] for w in waiting[pid])
            for pid in pids[:-1]:
                os.kill(pid, signal.SIGKILL)


def test_a_server_serves_a_new_loop_after_one_ended_with_a_waiter(tmp_path: Path) -> None:
    (tmp_path / "fl_tasks.py").write_text(
        "import time\nfrom lute_async.task import task\n\n@task\ndef nap():\n    time.sleep(600)\n"
    )
    path = os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    fork = Server(sys.executable, ["fl_tasks"], env)
    request = {"target": "fl_tasks:nap", "env": env, "cwd": None, "fds": [], "limits": None}

    async def leave_a_waiter() -> tuple[int, int]:
        await fork.start()
        first = (await fork.spawn({**request}, []))["pid"]
        second = (await fork.spawn({**request}, []))["pid"]
        left = asyncio.ensure_future(fork.wait_exit(first))
        await anyio.wait_all_tasks_blocked()
        assert first in fork._waiting and not left.done()
        return first, second

    async def wait_on_a_new_loop(first: int, second: int) -> int:
        os.kill(second, signal.SIGKILL)
        with anyio.fail_after(WAIT_LIMIT):
            status = (await fork.wait_exit(second)).status
        assert set(fork._waiting) == set()  # the ended loop's waiter was dropped
        os.kill(first, signal.SIGKILL)
        with anyio.fail_after(WAIT_LIMIT):
            assert os.WTERMSIG((await fork.wait_exit(first)).status) == signal.SIGKILL
        return status

    old = asyncio.new_event_loop()
    try:
        first, second = old.run_until_complete(leave_a_waiter())
        old.close()  # its waiter still waiting: it never runs again
        assert os.WTERMSIG(asyncio.run(wait_on_a_new_loop(first, second))) == signal.SIGKILL
    finally:
        fork.close()
