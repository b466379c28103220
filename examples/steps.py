"""The steps of the README's workflow example: ``python examples/steps.py STEP``.

calibrate -> a threshold; peaks (param ``threshold``) and hits run after it; report last.
"""

from __future__ import annotations

import sys

from lute_async.task import Reporter, read_params


def calibrate(params: dict[str, float]) -> dict[str, float]:
    return {"threshold": 3.5}


def peaks(params: dict[str, float]) -> dict[str, float]:
    threshold = params["threshold"]
    return {"peaks": sum(1 for value in range(100) if value % 10 > threshold)}


def hits(params: dict[str, float]) -> dict[str, float]:
    return {"hits": 12}


def report(params: dict[str, float]) -> dict[str, float]:
    return {}


STEPS = {"calibrate": calibrate, "peaks": peaks, "hits": hits, "report": report}

if __name__ == "__main__":
    step = STEPS[sys.argv[1]]
    params = read_params()
    with Reporter.connect() as reporter:
        reporter.started(params)
        reporter.result(step(params), summary=f"{sys.argv[1]} done")
