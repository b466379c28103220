"""PSI/J's ``local`` job executor running ``/bin/true`` as a job, WIDTH jobs in flight."""

import queue
import time
from importlib.metadata import version

from common import COMMAND, WAIT_BOUND, arguments, report
from psij import Job, JobExecutor, JobSpec, JobState, JobStatus


def main() -> None:
    tasks, width, workdir = arguments()
    executor = JobExecutor.get_instance("local")
    finished: queue.Queue[Job] = queue.Queue()

    def on_status(job: Job, status: JobStatus) -> None:
        if status.final:
            finished.put(job)

    executor.set_job_status_callback(on_status)
    start = time.perf_counter()
    submitted = in_flight = ended = count = 0
    while ended < tasks:
        while submitted < tasks and in_flight < width:
            executor.submit(Job(JobSpec(executable=COMMAND, directory=workdir)))
            submitted += 1
            in_flight += 1
        job = finished.get(timeout=WAIT_BOUND)
        in_flight -= 1
        ended += 1
        status = job.status
        count += status.state == JobState.COMPLETED and status.exit_code == 0
    seconds = time.perf_counter() - start
    report(tasks, seconds, count, f"psij-python {version('psij-python')}")


if __name__ == "__main__":
    main()
