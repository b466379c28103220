"""A task script (README: "From an async app", "Resource limits"): reads its params,
reports progress and returns a result. Run by an executor, or standalone (it then logs its
messages as JSON lines on stderr)."""

from __future__ import annotations

from lute_async.task import Reporter, read_params

params = read_params()
threshold = params.get("threshold", 3)
with Reporter.connect() as report:
    report.started(params)
    peaks = 0
    for frame in range(1, 5):
        peaks += sum(1 for value in range(frame * 10) if value % 7 > threshold)
        report.progress(frame / 4, f"frame {frame}/4")
    report.result({"peaks": peaks, "threshold": threshold}, summary=f"{peaks} peaks")
