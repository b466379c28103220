"""Shortened load test (the CI version of issue 7's 1,000-run load): 40 runs, 10 at a time,
each sending 2,000 messages split over its pipe and its Unix socket. Nothing may be lost,
duplicated or reordered on any connection, no run may hang, every record must end terminal."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from lute_async import Event, Executor

RUNS = 40
AT_ONCE = 10
PER_CHANNEL = 1000  # messages per communicator; two communicators per run

LOAD_TASK = f"""
    from lute_async.task import Reporter
    pipe = Reporter.connect(prefer=("pipe",))
    sock = Reporter.connect(prefer=("socket",))
    for i in range({PER_CHANNEL}):
        pipe.emit("tick", ["pipe", i])
        sock.emit("tick", ["socket", i])
    sock.close()
    pipe.result({{"sent": {2 * PER_CHANNEL}}})
    pipe.close()
"""


async def test_load_of_concurrent_runs_over_pipe_and_socket_loses_and_reorders_nothing(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    argv = script(LOAD_TASK)
    seen: dict[tuple[str, str, int], list[tuple[int, Any]]] = defaultdict(list)

    def tick(event: Event) -> None:
        m = event.message
        seen[(event.run.id, m.source, m.conn)].append((m.seq, m.data))

    records: list[Any] = []
    began = time.monotonic()
    async with Executor(
        db=tmp_path / "runs.db", max_concurrency=AT_ONCE, communicators=("pipe", "socket")
    ) as executor:
        executor.on("tick", tick)

        async def one(i: int) -> None:
            records.append(await executor.run(argv, name=f"load-{i}"))

        async with anyio.create_task_group() as tg:
            for i in range(RUNS):
                tg.start_soon(one, i)
        stored = (await executor.store()).query(limit=RUNS * 2)
    elapsed = time.monotonic() - began

    lost = reordered = 0
    per_run: dict[str, int] = defaultdict(int)
    for (run_id, source, _conn), got in seen.items():
        seqs = [seq for seq, _ in got]
        data = [d for _, d in got]
        reordered += sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)
        assert data == [[source, i] for i in range(len(data))]
        lost += PER_CHANNEL - len(data)
        per_run[run_id] += len(data)
    assert len(records) == RUNS and len(stored) == RUNS
    assert {r.status for r in records} == {"COMPLETED"} == {r.status for r in stored}
    assert all(not r.extra.get("protocol_errors") for r in records)
    assert all(per_run[r.id] == 2 * PER_CHANNEL for r in records)
    assert all(r.result == {"payload": {"sent": 2 * PER_CHANNEL}, "summary": None} for r in records)
    assert lost == 0 and reordered == 0
    messages = sum(per_run.values())
    # The figures for the README reliability table (not asserted on: timing is not a test).
    print(
        f"load: {RUNS} runs ({AT_ONCE} at a time), {messages} messages over pipe+socket, "
        f"lost {lost}, reordered {reordered}, hung 0, non-terminal 0, {elapsed:.1f} s"
    )
