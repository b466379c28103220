"""The same core behaviour on uvloop's event loop (the CLI's default) as on stdlib asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop
from conftest import PYTHON

from lute_async import Executor


async def test_running_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


@pytest.mark.parametrize("channel", ["pipe", "socket"])
async def test_burst_arrives_complete_and_in_order_on_uvloop(
    executor: Executor, script: Callable[[str], list[str]], channel: str
) -> None:
    received: list[int] = []
    executor.on("tick", lambda e: received.append(e.data))
    argv = script(
        f"""
        from lute_async.task import Reporter
        with Reporter.connect(prefer=({channel!r},)) as report:
            for i in range(50_000):
                report.emit("tick", i)
            report.result("sent")
        """
    )
    record = await executor.run(argv)
    assert record.status == "COMPLETED" and received == list(range(50_000))


async def test_timeout_and_failure_on_uvloop(executor: Executor) -> None:
    timed = await executor.run(["sleep", "30"], timeout=0.5, grace=1)
    failed = await executor.run([PYTHON, "-c", "raise SystemExit(4)"])
    assert timed.status == "TIMEDOUT" and failed.exit_code == 4
