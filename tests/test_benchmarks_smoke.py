"""The benchmark suite runs end to end on tiny sizes and every message arrives (no timings)."""

from __future__ import annotations

import os
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
        if result.unit == "KiB":  # a memory growth: none is a fine answer in a warm process
            assert result.lute_async >= 0, result
        else:
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


@pytest.mark.timeout(120)
def test_peers_deliver_every_task_and_the_table_is_written(tmp_path: Path) -> None:
    """The peers comparison at 3 tasks: lute-async (spawned and forked) and the stdlib pool,
    nothing installed."""
    from benchmarks import peers, peers_report

    keys = ["floor", "flat", "run", "run_function", "forkserver", "pool"]
    rows = peers.measure(keys, tasks=3, width=2, venv=peers.Venv(tmp_path / "no-venv"))
    assert [row.system.key for row in rows] == keys
    for row in rows:
        assert (row.delivered, row.tasks, row.reason) == (3, 3, ""), row
        assert row.rate
    assert not (tmp_path / "no-venv").exists()  # the stdlib pool needs no venv
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nmain table\n{END}\n\nafter\n")
    info = peers_report.meta(rows, 2)
    peers_report.update_readme(rows, info, readme)
    peers_report.update_readme(rows, info, readme)  # a second run replaces, never appends
    text = readme.read_text()
    assert text.count(peers_report.PEERS_START) == 1
    assert text.index(END) < text.index(peers_report.PEERS_START)
    assert "| a no-op Python function | lute-async `run_function` |" in text
    assert "| 3/3 correct |" in text
    assert "| a run's least work written flat, no engine (`benchmarks/flat.py`) |" in text


def test_a_peer_that_cannot_run_is_a_row_saying_why(tmp_path: Path) -> None:
    from benchmarks import peers, peers_report

    pool = next(system for system in peers.SYSTEMS if system.key == "pool")
    missing = tmp_path / "no-such-python"
    row = peers.run_driver(pool, missing, 3, 2, tmp_path / "work", timeout=30)
    assert row.rate is None and row.reason
    rendered = peers_report.cells([row])[0]
    assert rendered[2].startswith("not measured: ")


@pytest.mark.timeout(120)
def test_the_standard_interface_rows_deliver_every_task() -> None:
    """FuturesExecutor and the PSI/J plugin at 3 tasks, in this process."""
    if os.environ.get("CI") != "true":  # [test] has psij-python: CI never skips
        pytest.importorskip("psij", reason="psij-python is not installed (the [psij] extra)")
    from benchmarks import peers

    rows = peers.measure(["psij-lute", "futures"], tasks=3, width=2)
    assert [row.system.key for row in rows] == ["psij-lute", "futures"]
    for row in rows:
        assert (row.delivered, row.tasks, row.reason) == (3, 3, ""), row
        assert row.rate
