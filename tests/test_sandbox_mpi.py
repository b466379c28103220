"""MPI ranks on one node inside a bubblewrap sandbox: ``mpirun`` and its ranks run in the run's
sandbox (pid 1's session holds every rank, whatever process group Open MPI gives it), report
over the run's bound socket, and a cancel or stop reaches every rank; ``srun`` is refused."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from lute_async import MPI, Executor, Sandbox
from lute_async.launchers.mpi import session_members
from lute_async.messages import TaskStatus
from lute_async.sandbox import PACKAGE

ROOT = Path(__file__).resolve().parent.parent
WAIT_LIMIT = 60

pytest_plugins = ["slurm_support"]
pytestmark = [pytest.mark.mpi, pytest.mark.usefixtures("mpi_ready")]

RANKS = """
    import os, subprocess, sys, time
    from mpi4py import MPI
    from lute_async.task import Reporter

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    with Reporter.connect() as report:
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        report.emit("rank", {"rank": rank, "pid": os.getpid(), "pgid": os.getpgid(0),
                             "sid": os.getsid(0), "pids": pids})
        total = comm.allreduce(rank + 1)
        if len(sys.argv) > 1:  # leave a process in a session of its own, then wait
            sleeper = str(int(sys.argv[1]) + 1 + rank)  # not in any command line but its own
            subprocess.Popen(["sleep", sleeper], start_new_session=True)
            report.emit("ready", rank)
            time.sleep(600)
        report.result({"total": total})
"""


@pytest.fixture(autouse=True)
def _need_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("bwrap") is None:
        reason = f"bubblewrap's bwrap is not installed (Debian package {PACKAGE!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
        pytest.skip(reason)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


@pytest.fixture
def task(tmp_path: Path) -> list[str]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "ranks.py").write_text(textwrap.dedent(RANKS))
    return [sys.executable, str(code / "ranks.py")]


@pytest.fixture
def box(tmp_path: Path) -> Path:
    work = tmp_path / "box"
    work.mkdir()
    return work


def options(task: list[str], box: Path, **more: Any) -> dict[str, Any]:
    sandbox = Sandbox(readonly=[os.path.dirname(task[1])])
    return {"cwd": box, "env": {"PYTHONPATH": str(ROOT)}, "sandbox": sandbox, **more}


def live_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


async def test_sandboxed_ranks_report_and_see_only_the_sandbox(
    executor: Executor, task: list[str], box: Path
) -> None:
    launcher = MPI(np=2, launcher="mpirun")
    async with executor.start(task, launcher=launcher, **options(task, box)) as run:
        ranks = [m.data async for m in run.messages() if m.sig == "rank"]
    record = run.record
    assert record.status == TaskStatus.COMPLETED.value, record.error
    assert record.result is not None and record.result["payload"] == {"total": 3}
    assert sorted(rank["rank"] for rank in ranks) == [0, 1]
    for rank in ranks:  # pid 1's session, whatever group Open MPI put the rank in
        assert rank["sid"] == 1 and rank["pid"] < 100 and max(rank["pids"]) < 100
    facts = record.extra["sandbox"]
    assert record.extra["pid"] > 100 and facts["init_pid"] > 100
    assert record.ranks == 2 and record.extra["mpi_launcher"] == "mpirun"


async def test_cancel_and_stop_reach_every_rank_and_leave_nothing(
    executor: Executor, task: list[str], box: Path
) -> None:
    first = 700000 + uuid.uuid4().int % 99999 * 2
    argv = [*task, str(first - 1)]  # the ranks' sleepers: first + rank
    ready: set[int] = set()
    launcher = MPI(np=2, launcher="mpirun")
    async with executor.start(argv, launcher=launcher, **options(task, box)) as run:
        with anyio.fail_after(WAIT_LIMIT):
            async for message in run.messages():
                if message.sig == "ready":
                    ready.add(message.data)
                    if len(ready) == 2:
                        break
        init = run.record.extra["sandbox"]["init_pid"]
        members = [pid for pid in session_members(init) if pid != init]
        assert len(members) >= 3  # mpirun and both ranks (Open MPI may add helpers)
        await run.stop()
        assert {state(pid) for pid in members} == {"T"}
        await run.resume()
        assert "T" not in {state(pid) for pid in members if os.path.exists(f"/proc/{pid}")}
        sleepers = [str(first), str(first + 1)]
        assert all(live_processes_with(sleeper) for sleeper in sleepers)
        await run.cancel()
    assert run.record.status == TaskStatus.CANCELLED.value
    assert not any(live_processes_with(sleeper) for sleeper in sleepers)
    assert not os.path.exists(f"/proc/{init}") or state(init) == "Z"


async def test_srun_in_a_sandbox_is_a_launch_error(
    executor: Executor, task: list[str], box: Path
) -> None:
    record = await executor.run(task, launcher=MPI(np=1, launcher="srun"), **options(task, box))
    assert record.status == TaskStatus.FAILED.value
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert "needs MPI(launcher='mpirun')" in record.error["message"]
