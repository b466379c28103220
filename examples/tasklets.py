"""Steps around a task (README: "Tasklets"): each takes the step's context, then its args.

``stage`` runs before the task and names its input; ``summarise`` runs after it and turns
the task's result into the record's summary.
"""

from __future__ import annotations

from pathlib import Path

from lute_async import TaskletContext


def stage(context: TaskletContext, run: str, directory: str = "/tmp") -> None:
    """Tell the task where run ``run``'s input is; skip the run when it was analysed already."""
    done = Path(directory) / f"r{run}.done"
    if done.exists():
        context.skip(f"run {run} was analysed already ({done})")
    context.params["input"] = f"{directory}/r{run}.h5"
    context.env["ANALYSIS_MODE"] = "fast"


def summarise(context: TaskletContext) -> None:
    """The record's summary from the task's result."""
    assert context.record is not None and context.record.result is not None
    payload = context.record.result["payload"]
    context.set_summary(f"{payload['peaks']} peaks above {payload['threshold']}")
