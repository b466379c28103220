"""Dask ``LocalCluster`` of 2 single-threaded worker processes (cluster start included)."""

import contextlib
import time

import dask
from common import WAIT_BOUND, arguments, noop, report
from distributed import Client, Future, LocalCluster, as_completed


def main() -> None:
    tasks, width, workdir = arguments()
    dask.config.set({"temporary-directory": workdir})
    start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        index_of: dict[str, int] = {}

        def submit(index: int) -> Future:
            future = client.submit(noop, index, pure=False)
            index_of[future.key] = index
            return future

        futures = as_completed([submit(i) for i in range(min(width, tasks))])
        submitted, count = min(width, tasks), 0
        for future in futures:
            with contextlib.suppress(Exception):  # an error is a task not delivered
                count += future.result(timeout=WAIT_BOUND) == index_of[future.key]
            if submitted < tasks:
                futures.add(submit(submitted))
                submitted += 1
        seconds = time.perf_counter() - start
    report(tasks, seconds, count, f"dask {dask.__version__}")


if __name__ == "__main__":
    main()
