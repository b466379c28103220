"""The sandboxed rows: one run of the trivial task in a bubblewrap
:class:`~lute_async.sandbox.Sandbox`, against the same run without it, alternately in one
process (so the figure is what the sandbox adds: bwrap's namespaces and mounts, and its one
``bash`` step); and one ``run_function`` forked by a fork server inside a sandbox against the
same run forked by a plain one (what a sandboxed server adds per run: the hello, the params
it cannot share). No rows when ``bwrap`` is not installed."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from benchmarks.harness import CHILD, CHILDREN_DIR, PYTHON, Result, alternate, median
from lute_async.launchers.forkserver import Forkserver
from lute_async.sandbox import Sandbox

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

LABEL = "spawn (sandboxed)"
#: The sandbox may cost this multiple of the plain spawn.
TARGET = 1.5
FORKED_LABEL = "spawn (sandboxed fork server)"
#: A sandboxed fork server may cost this multiple of a plain one, per run.
FORKED_TARGET = 1.5
#: The @task the fork-server row runs (it returns its ``index`` param).
FUNCTION = "bench_functions:index"

#: One run, with or without the sandbox: True when it completed as it should.
RunOnce = Callable[[Any, "Sandbox | None"], Awaitable[bool]]


async def measure(bench: Bench) -> list[Result]:
    if shutil.which("bwrap") is None:
        return []
    command = [PYTHON, str(CHILD), "trivial"]
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, (str(CHILDREN_DIR), os.environ.get("PYTHONPATH")))
        )
    }
    forkserver = Forkserver(preload=[FUNCTION.partition(":")[0]])

    async def spawned(executor: Any, boxed: Sandbox | None) -> bool:
        record = await executor.run(command, cwd=bench.workdir, sandbox=boxed)
        return bool(record.status == "COMPLETED")

    async def forked(executor: Any, boxed: Sandbox | None) -> bool:
        record = await executor.run_function(
            FUNCTION,
            params={"index": 7},
            env=env,
            cwd=bench.workdir,
            launcher=forkserver,
            sandbox=boxed,
        )
        return record.status == "COMPLETED" and (record.result or {}).get("payload") == 7

    return [
        await _row(bench, LABEL, spawned, f"<= {TARGET}x plain spawn", TARGET),
        await _row(
            bench, FORKED_LABEL, forked, f"<= {FORKED_TARGET}x plain fork server", FORKED_TARGET
        ),
    ]


async def _row(bench: Bench, label: str, once: RunOnce, target: str, ratio: float) -> Result:
    """``once`` with the sandbox against ``once`` without it, alternately, in one executor."""
    n = bench.sizes.spawn_per_round
    sandbox = Sandbox(readonly=[str(CHILDREN_DIR)])
    executor = bench.executor()
    runs = 0
    async with executor:

        async def timed(boxed: Sandbox | None) -> float:
            nonlocal runs
            start = time.perf_counter()
            for _ in range(n):
                bench.check(await once(executor, boxed), f"{label}: a run did not complete")
                runs += boxed is not None
            return (time.perf_counter() - start) / n * 1000

        async def plain() -> float:
            return await timed(None)

        async def sandboxed() -> float:
            return await timed(sandbox)

        await sandboxed()  # warm the page cache for bwrap and bash too (and start the servers)
        await plain()
        runs = 0
        plains, boxed = await alternate(bench.sizes.spawn_rounds, plain, sandboxed)
    total = bench.sizes.spawn_rounds * n
    bench.check(runs == total, f"{label}: {runs}/{total} runs")
    boxed_ms, plain_ms = median(boxed), median(plains)
    return Result(
        label,
        "ms/task",
        boxed_ms,
        plain_ms,
        higher_is_better=False,
        target=target,
        met=boxed_ms <= ratio * plain_ms,
        delivered=f"{runs}/{total} runs",
        rounds=[{"floor": p, "lute_async": b} for p, b in zip(plains, boxed, strict=True)],
    )
