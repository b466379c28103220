"""``concurrent.futures.ProcessPoolExecutor(2)`` on the no-op function (pool start included)."""

import time
from concurrent.futures import ProcessPoolExecutor

from common import arguments, delivered, first_error, noop, report, windowed


def main() -> None:
    tasks, width, _ = arguments()
    start = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        results = windowed(lambda i: pool.submit(noop, i), tasks, width)
        seconds = time.perf_counter() - start
    report(tasks, seconds, delivered(results, lambda i: i), first_error(results).lstrip("; "))


if __name__ == "__main__":
    main()
