"""Parsl ``HighThroughputExecutor`` with 2 workers, warmed up first, running the no-op function."""

import os
import time

import parsl
from common import arguments, delivered, first_error, report, windowed
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

WORKERS = 2
WARM_UP_ROUNDS = 200  # bound on the batches sent before both workers have answered


@parsl.python_app
def run_noop(index: int) -> int:
    from common import noop  # Parsl sends the app's code, not its module's globals

    return noop(index)


@parsl.python_app
def worker_pid() -> int:
    import os

    return os.getpid()


def warm_up(width: int) -> int:
    """Send batches until every worker has run one (bounded); how many distinct workers ran."""
    seen: set[int] = set()
    for _ in range(WARM_UP_ROUNDS):
        seen.update(f.result() for f in [worker_pid() for _ in range(width)])
        if len(seen) >= WORKERS:
            break
    seen.discard(os.getpid())
    return len(seen)


def main() -> None:
    tasks, width, workdir = arguments()
    executor = HighThroughputExecutor(
        label="htex",
        address="127.0.0.1",
        max_workers_per_node=WORKERS,
        cores_per_worker=1,
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
    )
    with parsl.load(Config(executors=[executor], run_dir=workdir)):
        workers = warm_up(width)
        start = time.perf_counter()
        results = windowed(run_noop, tasks, width)
        seconds = time.perf_counter() - start
    note = f"parsl {parsl.__version__}; {workers} workers warm{first_error(results)}"
    report(tasks, seconds, delivered(results, lambda i: i), note)


if __name__ == "__main__":
    main()
