"""Rows of the peers table for lute-async behind standard interfaces, measured in this process
like the native rows: ``FuturesExecutor`` running the no-op function, and PSI/J's API with the
``lute-async`` executor plugin running ``/bin/true``. Both after one uncounted window."""

from __future__ import annotations

import concurrent.futures
import os
import queue
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import CHILDREN_DIR

if TYPE_CHECKING:
    from benchmarks.peers import Row, System

KEYS = ("futures", "psij-lute")


def measure_standard(system: System, tasks: int, width: int, workdir: Path, timeout: float) -> Row:
    """The row of ``system`` (one of KEYS); cut at ``timeout`` seconds like a peer."""
    from benchmarks.peers import Row

    row = Row(system, tasks)
    deadline = time.monotonic() + timeout
    try:
        if system.key == "futures":
            _futures(width, width, workdir, deadline)
            start = time.perf_counter()
            row.delivered = _futures(tasks, width, workdir, deadline)
        else:
            _psij(width, width, workdir, deadline)
            start = time.perf_counter()
            row.delivered, row.note = _psij(tasks, width, workdir, deadline), "psij-python"
        row.seconds = time.perf_counter() - start
    except TimeoutError:
        row.reason = f"not done within {timeout:.0f} s"
    except ImportError as error:
        row.reason = f"cannot import {error.name}: install the [psij] extra"
    if not row.reason and row.delivered != tasks:
        row.reason = f"{row.delivered}/{tasks} delivered"
    return row


def _futures(tasks: int, width: int, workdir: Path, deadline: float) -> int:
    from lute_async import FuturesExecutor

    if str(CHILDREN_DIR) not in sys.path:
        sys.path.insert(0, str(CHILDREN_DIR))  # submit checks the function imports by name
    import bench_functions

    path = os.pathsep.join(filter(None, (str(CHILDREN_DIR), os.environ.get("PYTHONPATH"))))
    with FuturesExecutor(
        max_workers=width,
        db=workdir / "futures.db",
        workdir=workdir / "runs",
        grace=2.0,
        run_options={"env": {"PYTHONPATH": path}},
    ) as pool:
        futures = [pool.submit(bench_functions.index, index) for index in range(tasks)]
        done, _ = concurrent.futures.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        if len(done) < tasks:
            pool.shutdown(cancel_futures=True)
            raise TimeoutError
        return sum(f.exception() is None and f.result() == i for i, f in enumerate(futures))


def _psij(tasks: int, width: int, workdir: Path, deadline: float) -> int:
    from psij import Job, JobExecutor, JobSpec, JobState, JobStatus

    executor = JobExecutor.get_instance("lute-async", url=str(workdir / "psij.db"))
    finished: queue.Queue[Job] = queue.Queue()

    def on_status(job: Job, status: JobStatus) -> None:
        if status.final:
            finished.put(job)

    executor.set_job_status_callback(on_status)
    submitted = in_flight = ended = count = 0
    while ended < tasks:
        while submitted < tasks and in_flight < width:
            executor.submit(Job(JobSpec(executable="/bin/true", directory=workdir)))
            submitted += 1
            in_flight += 1
        try:
            job = finished.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        in_flight -= 1
        ended += 1
        count += job.status.state == JobState.COMPLETED and job.status.exit_code == 0
    return count
