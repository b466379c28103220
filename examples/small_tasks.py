"""Small @task functions for the fork-server example: imported once by the server, forked per run."""

from __future__ import annotations

import math

from lute_async.task import task


@task
def norm(x: float, y: float) -> float:
    """The length of the vector (x, y): a task far shorter than an interpreter's start."""
    return math.hypot(x, y)


@task
def probe() -> dict[str, object]:
    """What a task sees of the machine (the sandboxed fork-server example): its pid, how many
    processes it can see, and whether it could write to /etc."""
    import os

    try:
        with open("/etc/lute-async-probe", "x"):
            pass
    except OSError:
        wrote = False
    else:
        os.unlink("/etc/lute-async-probe")
        wrote = True
    processes = sum(name.isdigit() for name in os.listdir("/proc"))
    return {"pid": os.getpid(), "processes": processes, "wrote_etc": wrote}
