"""The sandboxed spawn row: one run of the trivial task in a bubblewrap
:class:`~lute_async.sandbox.Sandbox`, against the same run without it, alternately in one
process (so the figure is what the sandbox adds: bwrap's namespaces and mounts, and its one
``bash`` step). No row when ``bwrap`` is not installed."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

from benchmarks.harness import CHILD, CHILDREN_DIR, PYTHON, Result, alternate, median
from lute_async.sandbox import Sandbox

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

LABEL = "spawn (sandboxed)"
#: The sandbox may cost this multiple of the plain spawn.
TARGET = 1.5


async def measure(bench: Bench) -> list[Result]:
    if shutil.which("bwrap") is None:
        return []
    n = bench.sizes.spawn_per_round
    command = [PYTHON, str(CHILD), "trivial"]
    sandbox = Sandbox(readonly=[str(CHILDREN_DIR)])
    executor = bench.executor()
    runs = 0
    async with executor:

        async def timed(boxed: Sandbox | None) -> float:
            nonlocal runs
            start = time.perf_counter()
            for _ in range(n):
                record = await executor.run(command, cwd=bench.workdir, sandbox=boxed)
                bench.check(record.status == "COMPLETED", f"{LABEL}: {record.status}")
                runs += boxed is not None
            return (time.perf_counter() - start) / n * 1000

        async def plain() -> float:
            return await timed(None)

        async def sandboxed() -> float:
            return await timed(sandbox)

        await sandboxed()  # warm the page cache for bwrap and bash too
        runs = 0
        plains, boxed = await alternate(bench.sizes.spawn_rounds, plain, sandboxed)
    total = bench.sizes.spawn_rounds * n
    bench.check(runs == total, f"{LABEL}: {runs}/{total} runs")
    boxed_ms, plain_ms = median(boxed), median(plains)
    return [
        Result(
            LABEL,
            "ms/task",
            boxed_ms,
            plain_ms,
            higher_is_better=False,
            target=f"<= {TARGET}x plain spawn",
            met=boxed_ms <= TARGET * plain_ms,
            delivered=f"{runs}/{total} runs",
            rounds=[{"floor": p, "lute_async": b} for p, b in zip(plains, boxed, strict=True)],
        )
    ]
