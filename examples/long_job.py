"""A longer task (README: "From an async app"): 20 steps of progress, a little work each."""

from __future__ import annotations

import time

from lute_async.task import Reporter

with Reporter.connect() as report:
    report.started()
    for step in range(1, 21):
        time.sleep(0.02)  # stands in for one step of real work
        report.progress(step / 20, f"step {step}/20")
    report.result({"steps": 20})
