"""The CI version of issue 7's load and soak (``benchmarks/reliability.py`` at full size).

Load: 42 runs, 14 at a time, 2,000 messages each over every mix of pipe, Unix socket and TCP.
Soak: short runs back to back for 20 s. Nothing may be lost, duplicated, reordered or
misrouted on any connection, no run may hang, every record must end terminal, and the executor
must hold the same fds after as before (and between soak spans) and no finished run.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from pathlib import Path

import anyio

from benchmarks.reliability import MIXES, load, open_fds, soak
from lute_async import Event, Executor


async def test_load_over_mixed_communicators_loses_reorders_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    report = await load(tmp_path, runs=6 * len(MIXES), at_once=2 * len(MIXES), messages=2000)

    tally = report.tally
    assert tally.runs == report.stored == 6 * len(MIXES)
    assert tally.statuses == {"COMPLETED": tally.runs}
    assert tally.delivered == tally.expected == tally.runs * 2000
    assert (tally.lost, tally.reordered, tally.misrouted, tally.hung) == (0, 0, 0, 0)
    assert tally.protocol_errors == 0 and report.non_terminal == 0
    assert report.fds_after == report.fds_before
    print(report.summary())  # the README's reliability table quotes this line


async def test_soak_of_short_runs_holds_fds_steady(tmp_path: Path) -> None:
    report = await soak(tmp_path, seconds=20, at_once=4, messages=50, samples=5)

    tally = report.tally
    assert tally.runs > 0 and tally.clean
    assert tally.delivered == tally.runs * 50
    assert report.stored == tally.runs and report.non_terminal == 0
    assert len(report.samples) == 5
    assert report.fd_growth == 0
    print(report.summary())


async def test_finished_runs_are_not_kept_alive_by_the_executor(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        from lute_async.task import Reporter
        with Reporter.connect() as report:
            report.emit("tick", 1)
            report.result("ok")
        """
    )
    runs: list[weakref.ref[object]] = []

    def keep(event: Event) -> None:
        runs.append(weakref.ref(event.run))

    async with Executor(db=tmp_path / "runs.db", max_concurrency=5) as executor:
        executor.on("started", keep)
        # What an executor makes once, at its first run (its shared socket, the guardian's
        # pipe), is not a run's: count from after a first run.
        await executor.run(argv)
        fds = open_fds()
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(executor.run, argv)
        gc.collect()
        assert open_fds() == fds
    assert len(runs) == 21
    assert [ref for ref in runs if ref() is not None] == []
