"""``emit_calls.py N ARGV...``: run ARGV N times in sequence (stdin from /dev/null) and report
the mean ms per call as this task's result. ``-`` as N runs ARGV once with N lines on stdin
instead: ``emit_calls.py -LINES ARGV...``."""

import subprocess
import sys
import time

from lute_async.task import Reporter

BATCH_LINE = b'{"event": "progress", "data": {"fraction": 0.5, "message": "item"}}\n'


def main() -> None:
    count, argv = sys.argv[1], sys.argv[2:]
    with Reporter.connect(required=True) as report:
        start = time.perf_counter()
        if count.startswith("-"):
            lines = int(count[1:])
            subprocess.run(argv, input=BATCH_LINE * lines, check=True)
            calls = lines
        else:
            calls = int(count)
            for _ in range(calls):
                subprocess.run(argv, stdin=subprocess.DEVNULL, check=True)
        report.result((time.perf_counter() - start) / calls * 1000)


main()
