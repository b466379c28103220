"""Example tasks for examples/tasks.toml: a @task function and a standalone script."""

from __future__ import annotations

import sys
import time
from typing import Any

from lute_async.task import Reporter, task


@task
def find_peaks(
    run: int, threshold: float = 3.0, frames: int = 5, report: Reporter | None = None
) -> dict[str, Any]:
    """Scan ``frames`` frames of ``run``, reporting progress; return the peak count."""
    peaks = 0
    for frame in range(1, frames + 1):
        time.sleep(0.05)  # stands in for real work on one frame
        peaks += (run + frame) % 4
        if report is not None:
            report.progress(frame / frames, f"frame {frame}/{frames}")
    return {"run": run, "peaks": peaks, "threshold": threshold}


def main() -> None:
    """As a script: report through the executor when run by lute-async, else log to stderr."""
    with Reporter.connect() as report:
        report.started({"argv": sys.argv[1:]})
        for step in range(1, 4):
            print(f"step {step} of 3", flush=True)
            report.progress(step / 3, f"step {step}")
        report.result({"argv": sys.argv[1:]}, summary="script done")


if __name__ == "__main__":
    main()
