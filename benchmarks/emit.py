"""The emit scenario: what ``lute-async emit`` costs a shell task per call, against the floor of
``python -c pass``, and what one ``emit --batch`` costs per event.

A driver task (children/emit_calls.py) runs each command N times in sequence under an executor
and times the calls itself, so the executor's own start-up is not in the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.harness import CHILDREN_DIR, PYTHON, Result, alternate, median
from lute_async.hooks.registry import Event

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

DRIVER = str(CHILDREN_DIR / "emit_calls.py")
FLOOR = [PYTHON, "-c", "pass"]
MODULE = [PYTHON, "-m", "lute_async.cli", "emit"]
#: The ``lute-async`` command a user types: the installed script beside this Python (see
#: bin/lute-async), else the repository's copy run by this Python.
_INSTALLED = Path(PYTHON).with_name("lute-async")
_REPO_SCRIPT = Path(__file__).parent.parent / "bin" / "lute-async"
SCRIPT = [str(_INSTALLED), "emit"] if _INSTALLED.exists() else [PYTHON, str(_REPO_SCRIPT), "emit"]
#: What each way of starting emit costs before lute-async runs at all: ``-m`` loads runpy.
FORM_COST = {"python -m": "import runpy", "lute-async": "import sys"}
BATCH_LINES = 1000


async def measure(bench: Bench) -> list[Result]:
    sizes = bench.sizes
    n = sizes.spawn_per_round
    executor = bench.executor()
    arrived = 0

    def on_progress(event: Event) -> None:
        nonlocal arrived
        arrived += 1

    executor.on("progress", on_progress)

    async def timed(count: str, argv: list[str]) -> float:
        record = await executor.run([PYTHON, DRIVER, count, *argv])
        bench.check(record.status == "COMPLETED", f"emit driver: {record.status} {record.error}")
        assert record.result is not None
        value: float = record.result["payload"]
        return value

    async def floor() -> float:
        return await timed(str(n), FLOOR)

    rows: list[Result] = []
    async with executor:
        await timed("1", [*MODULE, "progress", "0.5"])  # warm the page cache
        for form, argv in (("python -m", MODULE), ("lute-async", SCRIPT)):
            arrived = 0

            async def lute(argv: list[str] = argv) -> float:
                return await timed(str(n), [*argv, "progress", "0.5"])

            forms: list[float] = []
            floors, lutes = [], []
            for _ in range(sizes.spawn_rounds):  # interleaved, so that load hits all three alike
                floors.append(await floor())
                forms.append(await timed(str(n), [PYTHON, "-c", FORM_COST[form]]))
                lutes.append(await lute())
            total = sizes.spawn_rounds * n
            bench.check(arrived == total, f"emit ({form}): {arrived}/{total} progress events")
            form_ms = median(forms)
            note = f"{arrived}/{total} events; {FORM_COST[form]} alone {form_ms:.1f} ms"
            rows.append(_row(f"emit ({form})", "ms/call", floors, lutes, 1.5, note))
        arrived = 0
        lines = BATCH_LINES if n > 5 else 10

        async def batch() -> float:
            return await timed(f"-{lines}", [*MODULE, "--batch"])

        floors, lutes = await alternate(sizes.spawn_rounds, floor, batch)
        total = sizes.spawn_rounds * lines
        bench.check(arrived == total, f"emit --batch: {arrived}/{total} progress events")
        rows.append(
            _row("emit --batch", "ms/event", floors, lutes, 0.1, f"{arrived}/{total} events")
        )
    return rows


def _row(
    label: str, unit: str, floors: list[float], lutes: list[float], limit: float, delivered: str
) -> Result:
    lute_ms, floor_ms = median(lutes), median(floors)
    rounds: list[dict[str, Any]] = [
        {"floor": f, "lute_async": v} for f, v in zip(floors, lutes, strict=True)
    ]
    return Result(
        label,
        unit,
        lute_ms,
        floor_ms,
        higher_is_better=False,
        target=f"<= {limit}x python -c pass",
        met=lute_ms <= limit * floor_ms,
        delivered=delivered,
        rounds=rounds,
    )
