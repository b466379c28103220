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
