"""Parsl ``bash_app`` running ``/bin/true`` on a ``ThreadPoolExecutor`` of WIDTH threads."""

import time

import parsl
from common import COMMAND, arguments, delivered, first_error, report, windowed
from parsl.config import Config
from parsl.executors.threads import ThreadPoolExecutor


@parsl.bash_app
def true() -> str:
    return COMMAND


def main() -> None:
    tasks, width, workdir = arguments()
    config = Config(executors=[ThreadPoolExecutor(max_threads=width)], run_dir=workdir)
    with parsl.load(config):
        start = time.perf_counter()
        results = windowed(lambda _: true(), tasks, width)
        seconds = time.perf_counter() - start
    report(
        tasks,
        seconds,
        delivered(results, lambda _: 0),
        f"parsl {parsl.__version__}{first_error(results)}",
    )


if __name__ == "__main__":
    main()
