"""``python -m benchmarks peers``: lute-async beside its peers on the same tasks, 8 at a time.

Two workloads: ``/bin/true`` as a command, and a no-op Python function that returns its index.
The floor (a bare asyncio subprocess) and lute-async run in this process; every peer runs in a
driver script (``children/peers/``) under the Python of a venv the benchmark makes for the peers
(Parsl, dask[distributed], psij-python; the stdlib pool uses this interpreter), with a time bound
per peer. Each row counts only what was delivered: tasks completed with the right result.
A peer that cannot be installed or fails is a row saying why, never a failed benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from benchmarks import standard_peers
from benchmarks.flat import FlatRunner
from benchmarks.harness import CHILDREN_DIR, PYTHON
from lute_async.executor import Executor
from lute_async.launchers.forkserver import Forkserver

DRIVERS = CHILDREN_DIR / "peers"
COMMAND = "/bin/true"
FUNCTION = "bench_functions:index"  # a @task returning its ``index`` param
TASKS = 300
WIDTH = 8
PEER_TIMEOUT = 300.0  # seconds for one peer's driver, its install not included
PIP_TIMEOUT = 900.0
VENV = Path(tempfile.gettempdir()) / "lute-async-bench" / "peers-venv"


@dataclass(frozen=True)
class System:
    """One row's system: how it is named, what it runs, and where."""

    key: str
    label: str
    workload: str  # "command" or "function"
    driver: str = ""  # script in children/peers/ ("" = measured in this process)
    requirement: str = ""  # what pip installs for it ("" = nothing to install)


SYSTEMS = (
    System("floor", "asyncio subprocess (the floor)", "command"),
    System("flat", "a run's least work written flat, no engine (`benchmarks/flat.py`)", "command"),
    System("run", "lute-async `Executor.run`", "command"),
    System("parsl-bash", "Parsl `bash_app` on a thread pool", "command", "parsl_bash", "parsl"),
    System("psij", "PSI/J local executor", "command", "psij_local", "psij-python"),
    System("psij-lute", "PSI/J API, lute-async plugin (`lute-async`)", "command"),
    System("run_function", "lute-async `run_function`", "function"),
    System("forkserver", "lute-async `run_function`, `Forkserver` launcher", "function"),
    System("futures", "lute-async `FuturesExecutor` (`concurrent.futures`)", "function"),
    System(
        "parsl-htex",
        "Parsl HighThroughputExecutor, 2 warm workers",
        "function",
        "parsl_htex",
        "parsl",
    ),
    System(
        "dask",
        "Dask LocalCluster, 2 processes (start included)",
        "function",
        "dask_local",
        "dask[distributed]",
    ),
    System("pool", "`concurrent.futures.ProcessPoolExecutor(2)`", "function", "process_pool"),
)
WORKLOADS = {"command": "`/bin/true` as a command", "function": "a no-op Python function"}


@dataclass
class Row:
    """What one system delivered: ``tasks`` submitted, ``delivered`` right, in ``seconds``."""

    system: System
    tasks: int
    delivered: int = 0
    seconds: float = 0.0
    reason: str = ""  # why it was not measured ("" = measured)
    note: str = ""  # what the driver says about itself (versions, workers)

    @property
    def rate(self) -> float | None:
        """Delivered tasks per second; None when not measured or not all were delivered."""
        if self.reason or not self.seconds or self.delivered != self.tasks:
            return None
        return self.delivered / self.seconds


# -- the peers' venv ----------------------------------------------------------------------------


class Venv:
    """The peers' venv: created once, each requirement installed on first need and remembered."""

    def __init__(self, path: Path = VENV) -> None:
        self.path = path
        self.python = path / "bin" / "python"
        self.failures: dict[str, str] = {}

    def _marker(self, requirement: str) -> Path:
        return self.path / f".installed-{requirement.replace('[', '-').replace(']', '')}"

    def ensure(self, requirement: str) -> str:
        """Install ``requirement`` if needed; "" when usable, else why not."""
        if requirement in self.failures:
            return self.failures[requirement]
        if self._marker(requirement).exists():
            return ""
        try:
            if not self.python.exists():
                print(f"# peers: creating {self.path}", file=sys.stderr)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True)
            print(f"# peers: pip install {requirement}", file=sys.stderr)
            pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            done = subprocess.run(
                [*pip, requirement], capture_output=True, text=True, timeout=PIP_TIMEOUT
            )
        except (OSError, subprocess.SubprocessError) as error:
            self.failures[requirement] = f"cannot install {requirement}: {error}"
            return self.failures[requirement]
        if done.returncode:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            self.failures[requirement] = f"`pip install {requirement}` failed: {last[0]}"
            return self.failures[requirement]
        self._marker(requirement).write_text(requirement + "\n")
        return ""


# -- peers, each in a driver process --------------------------------------------------------------


def run_driver(
    system: System, python: Path, tasks: int, width: int, workdir: Path, timeout: float
) -> Row:
    """Run ``system``'s driver in its own process group, killed at ``timeout``; its row."""
    row = Row(system, tasks)
    workdir.mkdir(parents=True, exist_ok=True)
    command = [str(python), str(DRIVERS / f"{system.driver}.py"), str(tasks), str(width)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"  # the peer's own scripts
    env["PYTHONPATH"] = str(DRIVERS)  # so the peer's workers import ``common.noop`` too
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = subprocess.Popen(
                [*command, str(workdir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
        except OSError as error:
            row.reason = f"cannot start {python}: {error.strerror}"
            return row
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            row.reason = f"not done within {timeout:.0f} s"
            return row
        finally:
            _kill_leftovers(process.pid)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
        errors = err.read().decode(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = next((line for line in reversed(errors) if line.strip()), "no output")
        row.reason = f"driver exited {process.returncode}: {tail.strip()[:160]}"
        return row
    row.delivered, row.seconds, row.note = report["delivered"], report["seconds"], report["note"]
    if row.delivered != tasks:
        row.reason = f"{row.delivered}/{tasks} delivered"
    return row


def _kill_leftovers(group: int) -> None:
    """Workers a driver left behind (its process group) go with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


# -- the floor and lute-async, in this process ----------------------------------------------------


async def _windowed(one: Callable[[int], Awaitable[bool]], tasks: int, width: int) -> int:
    """Run ``one(index)`` for every index, ``width`` at a time; how many returned True.

    ``width`` workers each take the next index until none is left: no task and no limiter
    per task, so the harness costs every row the same little (at the floor's ~0.6 ms a task,
    a task spawn and a CapacityLimiter per task were a tenth of it)."""
    indices = iter(range(tasks))
    delivered = 0

    async def worker() -> None:
        nonlocal delivered
        for index in indices:  # shared: each index is taken by one worker
            ok = await one(index)
            delivered += bool(ok)  # after the await: no read of ``delivered`` across it

    async with anyio.create_task_group() as tg:
        for _ in range(min(width, tasks)):
            tg.start_soon(worker)
    return delivered


async def measure_local(
    system: System, tasks: int, width: int, workdir: Path, timeout: float
) -> Row:
    """The floor or a lute-async row, after one uncounted window of warm-up tasks; cut at
    ``timeout`` seconds like a peer."""
    row = Row(system, tasks)
    executor = Executor(db=workdir / f"{system.key}.db", workdir=workdir / "runs", grace=2.0)

    async def floor(_: int) -> bool:
        process = await asyncio.create_subprocess_exec(COMMAND)
        return await process.wait() == 0

    flat = FlatRunner(workdir) if system.key == "flat" else None

    async def flat_run(_: int) -> bool:
        assert flat is not None
        return await flat.run([COMMAND])

    async def run(_: int) -> bool:
        record = await executor.run([COMMAND], cwd=workdir)
        return record.status == "COMPLETED"

    # The worker imports nothing from its working directory: the module goes on PYTHONPATH.
    function_env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, (str(CHILDREN_DIR), os.environ.get("PYTHONPATH")))
        )
    }

    async def run_function(index: int) -> bool:
        record = await executor.run_function(FUNCTION, params={"index": index}, env=function_env)
        result = record.result or {}
        return record.status == "COMPLETED" and result.get("payload") == index

    # One server for the executor, started by the warm-up window, forks every task.
    forkserver = Forkserver(preload=[FUNCTION.partition(":")[0]])

    async def run_forked(index: int) -> bool:
        record = await executor.run_function(
            FUNCTION, params={"index": index}, env=function_env, launcher=forkserver
        )
        result = record.result or {}
        return record.status == "COMPLETED" and result.get("payload") == index

    one = {
        "floor": floor,
        "flat": flat_run,
        "run": run,
        "run_function": run_function,
        "forkserver": run_forked,
    }[system.key]
    try:
        with anyio.fail_after(timeout):
            async with executor:
                await _windowed(one, width, width)
                start = time.perf_counter()
                row.delivered = await _windowed(one, tasks, width)
                row.seconds = time.perf_counter() - start
    except TimeoutError:
        row.reason = f"not done within {timeout:.0f} s"
        return row
    finally:
        if flat is not None:
            flat.close()
    if row.delivered != tasks:
        row.reason = f"{row.delivered}/{tasks} delivered"
    return row


# -- the whole comparison -------------------------------------------------------------------------


def measure(
    keys: list[str],
    tasks: int = TASKS,
    width: int = WIDTH,
    venv: Venv | None = None,
    timeout: float = PEER_TIMEOUT,
    loop: str = "asyncio",
) -> list[Row]:
    """The rows of ``keys`` (in table order): peers installed into ``venv`` as they need."""
    rows: list[Row] = []
    venv = venv or Venv()
    with tempfile.TemporaryDirectory(prefix="lute-bench-peers-") as tmp:
        for system in (s for s in SYSTEMS if s.key in keys):
            started = time.perf_counter()
            workdir = Path(tmp) / system.key
            workdir.mkdir()
            if system.key in standard_peers.KEYS:
                row = standard_peers.measure_standard(system, tasks, width, workdir, timeout)
            elif not system.driver:
                row = anyio.run(
                    measure_local,
                    system,
                    tasks,
                    width,
                    workdir,
                    timeout,
                    backend_options={"use_uvloop": loop == "uvloop"},
                )
            elif system.requirement and (reason := venv.ensure(system.requirement)):
                row = Row(system, tasks, reason=reason)
            else:
                python = venv.python if system.requirement else Path(PYTHON)
                row = run_driver(system, python, tasks, width, workdir, timeout)
            print(f"# peers {system.key}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
            rows.append(row)
    return rows
