"""Small @task functions for the fork-server example: imported once by the server, forked per run."""

from __future__ import annotations

import math

from lute_async.task import task


@task
def norm(x: float, y: float) -> float:
    """The length of the vector (x, y): a task far shorter than an interpreter's start."""
    return math.hypot(x, y)
