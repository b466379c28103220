"""``lute-async demo``: four concurrent tasks showing progress, logs, a result, a failure and a
timeout, with a hook printing every event as it happens and a table of the records at the end.

The two ``@task`` functions below are also what the demo's worker processes import, so this
module imports nothing heavy at the top.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lute_async.task import Reporter, task

if TYPE_CHECKING:
    from lute_async.hooks.registry import Event
    from lute_async.records import AnalysisRecord


@task
def find_peaks(
    frames: int = 8, threshold: float = 3.0, report: Reporter | None = None
) -> dict[str, Any]:
    """Pretend to scan ``frames`` detector frames, reporting progress for each."""
    peaks = 0
    for frame in range(1, frames + 1):
        time.sleep(0.15)  # the "analysis" of one frame
        peaks += frame % 3
        if report is not None:
            report.progress(frame / frames, f"frame {frame}/{frames}")
    if report is not None:
        report.log(f"{peaks} peaks above {threshold} sigma")
    return {"peaks": peaks, "frames": frames, "threshold": threshold}


@task
def calibrate(run: int = 7) -> dict[str, Any]:
    """Fail the way real tasks do: a missing input raises."""
    raise FileNotFoundError(f"no calibration constants for run {run}: calib/r{run:04d}.h5")


SHELL_SCRIPT = """\
for chunk in 1 2 3; do
  echo "converting chunk $chunk of 3"
  sleep 0.2
done
"$LUTE_DEMO_PYTHON" -m lute_async.cli emit peaks '{"chunks": 3, "max": 17.5}'
echo "converted 3 chunks"
"""


def _demo_jobs() -> list[tuple[list[str], dict[str, Any]]]:
    from lute_async.executor import Executor

    python = sys.executable
    return [
        (
            Executor.function_command("lute_async.demo:find_peaks"),
            {"name": "find_peaks", "params": {"frames": 8, "threshold": 3.0}, "tags": ["demo"]},
        ),
        (
            ["sh", "-c", SHELL_SCRIPT],
            {"name": "convert", "env": {"LUTE_DEMO_PYTHON": python}, "tags": ["demo"]},
        ),
        (
            Executor.function_command("lute_async.demo:calibrate"),
            {"name": "calibrate", "params": {"run": 7}, "tags": ["demo"]},
        ),
        (
            ["sh", "-c", "echo 'waiting for a detector that never answers'; sleep 60"],
            {"name": "wait_detector", "timeout": 1.5, "tags": ["demo"]},
        ),
    ]


def _event_printer(console: Any) -> Any:
    from lute_async.display import STATUS_STYLES, TERMINAL_WORDS, safe, short

    colours = {
        "started": "cyan",
        "progress": "blue",
        "log": "white",
        "result": "green",
        "error": "red",
    }

    def print_event(event: Event) -> None:
        data = event.data
        if event.name == "log" and isinstance(data, dict):
            text = f"[{data.get('stream')}] {data.get('message')}"
        elif event.name == "progress" and isinstance(data, dict):
            text = f"{float(data.get('fraction', 0)):.0%} {data.get('message', '')}"
        elif event.name == "started" and isinstance(data, dict):
            text = f"pid {data.get('pid')}" if data.get("pid") else short(data.get("params"))
        elif event.name in TERMINAL_WORDS and isinstance(data, dict):
            error = data.get("error")
            text = TERMINAL_WORDS[event.name]
            if isinstance(error, dict):
                text += f": {error.get('message')}"
        elif event.name == "error" and isinstance(data, dict):
            text = f"{data.get('type')}: {data.get('message')}"
        else:
            text = short(data, 80)
        style = colours.get(event.name, "magenta")
        if event.name in TERMINAL_WORDS:
            style = "bold " + STATUS_STYLES[TERMINAL_WORDS[event.name]]
        stamp = (
            time.strftime("%H:%M:%S", time.localtime(event.ts))
            + f".{int(event.ts * 1000) % 1000:03d}"
        )
        console.print(
            f"[dim]{stamp}[/] {safe(event.run.name):<14} "
            f"[{style}]{safe(event.name):<10}[/] {safe(text)}"
        )

    return print_event


def run_demo(db: Path | str | None = None) -> int:
    """Run the demo, recording into ``db`` (a temporary database when None); return 0 when each
    task ended as intended."""
    import tempfile

    from lute_async.app.supervise import Job, run_loop, supervise
    from lute_async.display import make_console, records_table, safe
    from lute_async.executor import Executor

    console = make_console()
    with tempfile.TemporaryDirectory(prefix="lute-async-demo-") as tmp:
        path = db if db is not None else Path(tmp) / "runs.db"
        executor = Executor(db=path, grace=1.0, log_events=False)
        executor.on("*", _event_printer(console))
        seen_peaks: list[Any] = []
        executor.on("peaks", lambda event: seen_peaks.append(event.data))
        console.print(
            "[bold]lute-async demo[/]: 4 tasks at once; each line below is one event, "
            "printed by a hook as it fires\n"
        )
        jobs = [Job(argv, options) for argv, options in _demo_jobs()]
        records: list[AnalysisRecord] = run_loop(lambda: supervise(executor, jobs))
        console.print()
        console.print(records_table(records, title=f"records in {safe(path)}"))
        if seen_peaks:
            console.print(f"the 'peaks' hook saw: {safe(seen_peaks[0])}")
        if db is None:
            console.print("[dim](temporary database; `lute-async demo --db runs.db` keeps it)[/]")
    expected = ["COMPLETED", "COMPLETED", "FAILED", "TIMEDOUT"]
    return 0 if [record.status for record in records] == expected else 1
