"""Run jobs under an executor the way a terminal user expects: concurrently, with Ctrl-C (or
SIGTERM) once cancelling every run cleanly and twice killing them, on uvloop when installed."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio

    from lute_async.executor import Executor, Run
    from lute_async.records import AnalysisRecord

#: The signals that cancel what is running: Ctrl-C and a polite kill.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@dataclass(slots=True)
class Job:
    """One thing to run: the command and the options for ``Executor.start``."""

    argv: list[str]
    options: dict[str, Any]


@dataclass(slots=True)
class _Supervision:
    runs: list[Run] = field(default_factory=list)
    interrupts: int = 0


def _say(message: str) -> None:
    """One line for the user on stderr."""
    sys.stderr.write(f"lute-async: {message}\n")
    sys.stderr.flush()


async def _watch_signals(state: _Supervision, *, task_status: Any) -> None:
    """First SIGINT/SIGTERM cancels every run (SIGTERM, then SIGKILL after the grace period);
    a second one kills them at once."""
    import anyio

    with anyio.open_signal_receiver(*INTERRUPTS) as signals:
        task_status.started()
        async with anyio.create_task_group() as tg:
            async for _ in signals:
                state.interrupts += 1
                if state.interrupts == 1:
                    _say(f"cancelling {len(state.runs)} run(s); press Ctrl-C again to kill")
                    for run in state.runs:
                        tg.start_soon(run.cancel)
                else:
                    _say("killing")
                    for run in state.runs:
                        tg.start_soon(run.kill)


async def supervise(executor: Executor, jobs: Sequence[Job]) -> list[AnalysisRecord]:
    """Run ``jobs`` concurrently under ``executor`` with Ctrl-C handling; return their records
    in the order given."""
    import anyio

    state = _Supervision()
    records: list[AnalysisRecord | None] = [None] * len(jobs)

    async def one(index: int, job: Job) -> None:
        async with executor.start(job.argv, **job.options) as run:
            state.runs.append(run)
            if state.interrupts:
                await run.cancel()
            records[index] = await run.wait()

    async with executor, anyio.create_task_group() as outer:
        await outer.start(_watch_signals, state)
        async with anyio.create_task_group() as tg:
            for index, job in enumerate(jobs):
                tg.start_soon(one, index, job)
        outer.cancel_scope.cancel()
    return [record for record in records if record is not None]


async def cancel_on_signal(scope: anyio.CancelScope, what: str) -> None:
    """Cancel ``scope`` at each SIGINT/SIGTERM, saying that ``what`` is being cancelled."""
    import anyio

    with anyio.open_signal_receiver(*INTERRUPTS) as signals:
        async for _ in signals:
            _say(f"cancelling {what}")
            scope.cancel()


def run_loop(fn: Callable[[], Any]) -> Any:
    """Run the async ``fn`` on asyncio with uvloop when it is installed."""
    import anyio

    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(fn)
    return anyio.run(fn, backend_options={"use_uvloop": True})
