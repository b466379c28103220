"""What every peer driver shares: the command line, the no-op function, the window, the report.

A driver runs under its peer's own interpreter (``driver.py TASKS WIDTH WORKDIR``), keeps WIDTH
tasks in flight until TASKS were submitted, and prints one JSON line: ``tasks``, ``seconds``,
``delivered`` (tasks that completed with the right result) and ``note``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

COMMAND = "/bin/true"
WAIT_BOUND = 120.0  # seconds one window may go without a completion before the driver gives up


def arguments() -> tuple[int, int, str]:
    """TASKS, WIDTH and WORKDIR from the command line."""
    tasks, width, workdir = sys.argv[1:4]
    return int(tasks), int(width), workdir


def noop(index: int) -> int:
    """The no-op Python function: returns its index, so the benchmark can check every result."""
    return index


def windowed(submit: Callable[[int], Future[Any]], tasks: int, width: int) -> dict[int, Any]:
    """Submit tasks 0..tasks-1 keeping ``width`` in flight; each index's result (or error)."""
    pending: dict[Future[Any], int] = {}
    results: dict[int, Any] = {}
    submitted = 0
    while submitted < tasks or pending:
        while submitted < tasks and len(pending) < width:
            pending[submit(submitted)] = submitted
            submitted += 1
        done, _ = wait(pending, timeout=WAIT_BOUND, return_when=FIRST_COMPLETED)
        if not done:
            raise TimeoutError(f"no task completed in {WAIT_BOUND:.0f} s")
        for future in done:
            index = pending.pop(future)
            try:
                results[index] = future.result()
            except Exception as error:
                results[index] = error
    return results


def delivered(results: dict[int, Any], expected: Callable[[int], Any]) -> int:
    """How many tasks returned what they should (their index, or exit status 0)."""
    return sum(1 for index, value in results.items() if value == expected(index))


def first_error(results: dict[int, Any]) -> str:
    """The first task error, as a note for the row ("" when there was none)."""
    error = next((v for v in results.values() if isinstance(v, BaseException)), None)
    return "" if error is None else f"; first error: {type(error).__name__}: {error}"[:200]


def report(tasks: int, seconds: float, count: int, note: str = "") -> None:
    summary = {"tasks": tasks, "seconds": seconds, "delivered": count, "note": note.strip()}
    print(json.dumps(summary))
