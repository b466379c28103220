"""One ``squeue`` for every SLURM job this process follows on a cluster.

Following each job with its own ``scontrol show job`` costs the controller one RPC per job per
look: a thousand jobs looked at every 5 s is 200 RPCs a second. Instead, every job waiting on
the same cluster (same ``SLURM_CONF`` and ``PATH``) asks the :class:`JobBoard`, which answers
from a single ``squeue --jobs=...`` that covers them all and that started after the question
was asked, and starts at most one such query every :data:`MIN_GAP` seconds.
"""

from __future__ import annotations

import asyncio
import subprocess
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio

from lute_async.launchers.slurm.client import run_client

#: Least time between the starts of two squeue queries of one board (seconds).
MIN_GAP = 0.2
#: squeue's fields, in its ``--Format`` names, as they are returned in a row.
FIELDS = ("JobID", "State", "Reason", "NodeList", "BatchHost", "NumTasks", "RestartCnt")
_FORMAT = ",".join(f"{name}:|" for name in FIELDS)

Row = dict[str, str]


@dataclass(slots=True)
class Answer:
    """One squeue's view: a row per job the controller knows, or why squeue failed."""

    rows: dict[str, Row] = field(default_factory=dict)
    error: str | None = None


class JobBoard:
    """Answers "what state is job N in?" for all of a cluster's jobs with one squeue."""

    def __init__(self, env: Mapping[str, str]) -> None:
        # The first job's environment, less what belongs to its run (its secret above all).
        self._env = {k: v for k, v in env.items() if not k.startswith("LUTE_ASYNC_")}
        self._jobs: set[str] = set()
        self._answer: Answer | None = None
        self._answer_started = -1.0
        self._last_start = -MIN_GAP
        self._in_flight: anyio.Event | None = None
        #: squeue calls made, and the most jobs one of them covered (for tests and tuning).
        self.queries = 0
        self.widest = 0

    def add(self, job_id: str) -> None:
        self._jobs.add(job_id)

    def discard(self, job_id: str) -> None:
        self._jobs.discard(job_id)

    async def observe(self) -> Answer:
        """The answer of a squeue that started after this call, shared with every job that
        asked meanwhile."""
        asked = anyio.current_time()
        while True:
            if self._answer is not None and self._answer_started >= asked:
                return self._answer
            if self._in_flight is not None:
                await self._in_flight.wait()
                continue
            self._in_flight = in_flight = anyio.Event()
            try:
                await self._query()
            finally:
                self._in_flight = None
                in_flight.set()

    async def _query(self) -> None:
        # The gap bounds the query rate whatever the number of jobs: a deadline, not a poll.
        gap = self._last_start + MIN_GAP - anyio.current_time()
        if gap > 0:
            await anyio.sleep(gap)
        started = self._last_start = anyio.current_time()
        jobs = sorted(self._jobs)
        self.queries += 1
        self.widest = max(self.widest, len(jobs))
        answer = await self._squeue(jobs) if jobs else Answer()
        self._answer, self._answer_started = answer, started

    async def _squeue(self, jobs: list[str]) -> Answer:
        argv = ["squeue", f"--jobs={','.join(jobs)}", "--states=all", "-h", "-O", _FORMAT]
        done = await run_client(argv, self._env)
        error = done.stderr.decode("utf-8", "replace").strip()
        if done.returncode != 0:
            # Every job listed is unknown to the controller: an answer, not a failure.
            return Answer() if "Invalid job id" in error else Answer(error=error or _failed(done))
        return Answer(rows=parse_rows(done.stdout.decode("utf-8", "replace")))


def parse_rows(text: str) -> dict[str, Row]:
    """squeue's ``|``-separated rows (in :data:`FIELDS` order) by job id."""
    rows: dict[str, Row] = {}
    for line in text.splitlines():
        values = line.split("|")
        if len(values) >= len(FIELDS) and values[0].strip():
            row = {name: value.strip() for name, value in zip(FIELDS, values, strict=False)}
            rows[row["JobID"]] = row
    return rows


def _failed(done: subprocess.CompletedProcess[bytes]) -> str:
    return f"squeue exited with code {done.returncode}"


#: Boards by event loop, then by cluster; a board's events belong to its loop.
_boards: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str | None, str | None], JobBoard]
] = weakref.WeakKeyDictionary()


def board_for(env: Mapping[str, str]) -> JobBoard:
    """The board of this event loop for the cluster ``env`` points at."""
    by_cluster = _boards.setdefault(asyncio.get_running_loop(), {})
    key = (env.get("SLURM_CONF"), env.get("PATH"))
    board = by_cluster.get(key)
    if board is None:
        board = by_cluster[key] = JobBoard(env)
    return board
