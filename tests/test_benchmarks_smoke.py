"""The benchmark suite runs end to end on tiny sizes and every message arrives (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed

from benchmarks.harness import Result
from benchmarks.report import END, START, update_readme
from benchmarks.scenarios import SCENARIOS, SMOKE, Bench


async def _run(name: str, workdir: Path) -> tuple[Bench, list[Result]]:
    from lute_async.logs import configure

    configure(level="WARNING")
    bench = Bench(SMOKE, workdir)
    return bench, await getattr(bench, name)()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_completes_and_delivers_every_message(name: str, tmp_path: Path) -> None:
    bench, results = anyio.run(_run, name, tmp_path)
    assert bench.delivery_ok
    assert results
    for result in results:
        assert result.lute_async > 0, result


def test_readme_table_is_written_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nold\n{END}\n\nafter\n")
    row = Result("spawn", "ms/task", 20.0, 16.0, False, "<= 1.25x floor", True, "2/2")
    info = {"date": "today", "machine": "m", "loop": "uvloop", "mode": "smoke", "install": "x"}
    update_readme([row], info, readme)
    text = readme.read_text()
    assert "old" not in text
    assert "| spawn | 20.0 ms/task | 16.0 ms/task | 1.25x floor |" in text
    assert text.startswith("# title") and text.rstrip().endswith("after")


def test_lute_column_shows_the_figure_and_the_ratio_where_measured(tmp_path: Path) -> None:
    from benchmarks.lute import Figure, attach

    spawn = Result("spawn", "ms/task", 20.0, 16.0, False, "<= 1.25x floor", True, "2/2")
    pipe = Result("throughput pipe (10 msgs)", "msg/s", 3000.0, 6000.0, True, "-", None, "10")
    latency = Result("latency median (1 kHz)", "us", 80.0, 60.0, False, "-", True, "5/5")
    attach(
        [spawn, pipe, latency],
        {
            "spawn": Figure(2000.0, "ms/task", "4/4 completed, 0 hung"),
            "throughput pipe": Figure(30.0, "msg/s", "3/10 delivered"),
        },
    )
    readme = tmp_path / "README.md"
    info = {"date": "d", "machine": "m", "loop": "uvloop", "mode": "smoke", "install": "x"}
    update_readme([spawn, pipe, latency], {**info, "lute": "LUTE: lute-lcls"}, readme)
    text = readme.read_text()
    assert "| 2,000 ms/task (lute-async 100x faster; 4/4 completed, 0 hung) |" in text
    assert "| 30 msg/s (lute-async 100x faster; 3/10 delivered) |" in text
    assert "| not measured |" in text  # latency: LUTE has no such scenario here
    assert "LUTE: lute-lcls." in text
