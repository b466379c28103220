"""Runs inside LUTE's own venv for ``benchmarks/lute.py``; never imported by lute-async.

``lute_side.py executor TASK CONFIG RESULT_JSON`` builds LUTE's stock ``Executor`` for TASK, runs
it once as ``run_task`` would, and writes timings and the messages it logged to RESULT_JSON. The
Executor starts the task as ``python -B lute_side.py -c CONFIG -t TASK`` (the arguments it gives
``subprocess_task``), which parses CONFIG with LUTE's ``parse_config`` and runs one of the
``Task`` subclasses below, as ``subprocess_task`` does for a first-party Task.

Both roles import this file as the module ``lute_side`` so that the pickles LUTE sends between
them name a module both sides can import.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from lute.execution.executor import Executor
from lute.execution.ipc import Message
from lute.io.models.base import TaskParameters
from lute.tasks.dataclasses import TaskStatus
from lute.tasks.task import Task

PREFIX = "lute-bench "  # the text every benchmark message starts with


class BenchEmptyParameters(TaskParameters):
    """No parameters beyond LUTE's header (experiment, run, work_dir, ...)."""


class BenchFloodParameters(TaskParameters):
    """How many messages to send, and as what: ``str`` (pipe) or ``dict`` (socket)."""

    messages: int = 1000
    via: str = "pipe"


class BenchEmpty(Task):
    """A Task whose ``_run`` does nothing: start, result, exit."""

    def _run(self) -> None:
        pass

    def _post_run(self) -> None:
        self._result.task_status = TaskStatus.COMPLETED


class BenchFlood(Task):
    """Sends ``messages`` messages through ``_report_to_executor``, as LUTE's own Tasks do.

    LUTE picks the communicator from the contents: a ``str`` goes over the pipe (pickled to
    stdout), anything else over the socket communicator.
    """

    def _run(self) -> None:
        params: Any = self._task_parameters
        for seq in range(1, params.messages + 1):
            contents: Any = f"{PREFIX}{seq}" if params.via == "pipe" else {PREFIX: seq}
            self._report_to_executor(Message(contents=contents))

    def _post_run(self) -> None:
        self._result.task_status = TaskStatus.COMPLETED


TASKS: dict[str, type[Task]] = {"BenchEmpty": BenchEmpty, "BenchFlood": BenchFlood}


class BenchExecutor(Executor):
    """LUTE's ``Executor`` starting this file instead of ``subprocess_task`` (whose task
    registry, ``lute.tasks.import_task``, is a fixed list of LUTE's own Tasks)."""

    def _submit_cmd(self, executable_path: str, params: str) -> str:
        return super()._submit_cmd(os.path.abspath(__file__), params)


class Arrivals(logging.Handler):
    """Notes when each benchmark message reaches the Executor's ``logger.info``."""

    def __init__(self) -> None:
        super().__init__()
        self.seqs: list[int] = []
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        seq = _bench_seq(record.msg)
        if seq is not None:
            self.times.append(time.perf_counter())
            self.seqs.append(seq)


def _bench_seq(contents: Any) -> int | None:
    if isinstance(contents, str) and contents.startswith(PREFIX):
        return int(contents[len(PREFIX) :].split()[0])
    if isinstance(contents, dict) and PREFIX in contents:
        return int(contents[PREFIX])
    return None


def run_executor(task_name: str, config: str, out: str) -> None:
    """One Executor, one Task, as ``run_task -t TASK -c CONFIG`` would run it."""
    os.environ["LUTE_CONFIGPATH"] = config
    arrivals = Arrivals()
    logging.getLogger("lute.execution.executor").addHandler(arrivals)
    executor = BenchExecutor(task_name)
    executor._m_task_name = task_name
    start = time.perf_counter()
    executor.execute_task()
    end = time.perf_counter()
    status = executor._analysis_desc.task_result.task_status
    with open(out, "w") as fh:
        json.dump(
            {
                "execute_s": end - start,
                "status": getattr(status, "name", str(status)),
                "seqs": arrivals.seqs,
                "first": arrivals.times[0] - start if arrivals.times else None,
                "last": arrivals.times[-1] - start if arrivals.times else None,
            },
            fh,
        )


def run_task(argv: list[str]) -> None:
    """The task side: what ``subprocess_task`` does for a first-party Task."""
    import argparse

    import lute.io.config
    from lute.io.config import parse_config

    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config")
    parser.add_argument("-t", "--taskname")
    args = parser.parse_args(argv)
    # parse_config finds the model as f"{task}Parameters" among lute.io.config's names
    lute.io.config.BenchEmptyParameters = BenchEmptyParameters  # type: ignore[attr-defined]
    lute.io.config.BenchFloodParameters = BenchFloodParameters  # type: ignore[attr-defined]
    params = parse_config(task_name=args.taskname, config_path=args.config)
    TASKS[args.taskname](params=params).run()


def main(argv: list[str]) -> None:
    if argv[:1] == ["executor"]:
        run_executor(*argv[1:4])
    else:
        run_task(argv)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import lute_side  # this file again, as a module both sides' pickles can name

    lute_side.main(sys.argv[1:])
