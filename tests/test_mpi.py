"""The MPI launcher: ranks under mpirun and under srun inside an allocation, each rank's
messages tagged with its rank, started/result from rank 0 only, ranks in the record."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from conftest import process_exists

from lute_async import Executor, RecordStore
from lute_async.launchers.base import LaunchSpec
from lute_async.launchers.mpi import MPI, default_ranks

if TYPE_CHECKING:
    from slurm_support import SlurmCluster

pytest_plugins = ["slurm_support"]

MPI_TASK = """
    from mpi4py import MPI
    from lute_async.task import Reporter

    comm = MPI.COMM_WORLD
    with Reporter.connect() as report:
        report.started({"size": comm.Get_size()})
        report.log(f"rank {comm.Get_rank()} here")
        report.emit("partial", {"rank": comm.Get_rank()})
        total = comm.allreduce(comm.Get_rank() + 1)
        report.result({"total": total})
"""

# Runs an executor inside an allocation (salloc), so MPI(launcher="auto") picks srun; writes
# the messages it saw to a file.
DRIVER = """
    import json, sys
    import anyio
    from lute_async import Executor
    from lute_async.launchers.mpi import MPI

    db, task, out = sys.argv[1:4]

    async def main():
        async with Executor(db=db) as executor:
            async with executor.start(["python", task], name="mpi-srun", launcher=MPI()) as run:
                seen = [[m.sig, m.rank, m.source] async for m in run.messages()]
        with open(out, "w") as fh:
            json.dump(seen, fh)

    anyio.run(main)
"""


def spec(argv: list[str], env: dict[str, str], tmp_path: Path) -> LaunchSpec:
    return LaunchSpec(argv=argv, env=env, run_id="r", name="t", run_dir=tmp_path)


def test_ranks_default_to_the_allocation_then_the_cpu_affinity() -> None:
    assert default_ranks({"SLURM_NTASKS": "6", "SLURM_NPROCS": "4"}) == 6
    assert default_ranks({"SLURM_NPROCS": "4"}) == 4
    assert default_ranks({}) == len(os.sched_getaffinity(0))


def test_ranks_report_over_a_socket_not_the_shared_pipe() -> None:
    assert MPI().communicators(("pipe",)) == ("pipe", "socket")
    assert MPI().communicators(("pipe", "socket")) == ("pipe", "socket")
    assert MPI().communicators(("tcp",)) == ("tcp",)


def test_command_uses_srun_inside_an_allocation_and_the_tasks_own_python(
    tmp_path: Path,
) -> None:
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "7", "SLURM_NTASKS": "3"}
    argv, ranks = MPI(launcher="srun").command(spec(["python", "x.py"], env, tmp_path))
    assert ranks == 3
    assert argv[1:5] == ["--mpi=pmix", "-n", "3", sys.executable]
    assert argv[0].endswith("srun")


def test_mpirun_gets_only_the_rank_count_extra_args_and_root_switches(tmp_path: Path) -> None:
    launcher = MPI(np=2, launcher="mpirun", extra_args=["--bind-to", "none"])
    argv, _ = launcher.command(spec(["./a.out"], {"PATH": os.environ["PATH"]}, tmp_path))
    root = ["--allow-run-as-root", "--oversubscribe"] if os.geteuid() == 0 else []
    assert argv[1:] == ["-np", "2", *root, "--bind-to", "none", "./a.out"]


@pytest.mark.mpi
@pytest.mark.usefixtures("mpi_ready")
async def test_mpirun_ranks_messages_arrive_tagged_and_rank_zero_leads(
    executor: Executor, script: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    argv = script(MPI_TASK)
    async with executor.start(argv, launcher=MPI(np=2, launcher="mpirun")) as run:
        messages = [m async for m in run.messages()]
    record = run.record
    assert record.status == "COMPLETED", record.error
    assert record.ranks == 2
    assert "mpirun" in " ".join(record.extra["launch_command"])
    assert {m.rank for m in messages if m.sig == "partial"} == {0, 1}
    assert {m.rank for m in messages if m.sig == "log" and m.source == "socket"} == {0, 1}
    assert [m.rank for m in messages if m.sig == "result"] == [0]
    assert [m.sig for m in messages].count("started") == 1
    assert record.extra["reported_params"] == {"size": 2}  # rank 0's own started
    assert record.result is not None and record.result["payload"] == {"total": 3}


@pytest.mark.mpi
@pytest.mark.usefixtures("mpi_ready")
async def test_cancelled_mpi_run_leaves_no_rank_behind(
    executor: Executor, script: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    argv = script("""
        import os, time
        from lute_async.task import Reporter
        with Reporter.connect() as report:
            report.emit("ready", {"pid": os.getpid()})
            time.sleep(600)
    """)
    pids: set[int] = set()
    async with executor.start(argv, launcher=MPI(np=2, launcher="mpirun")) as run:
        async for message in run.messages():
            if message.sig == "ready":
                pids.add(message.data["pid"])
                if len(pids) == 2:
                    await run.cancel()
    assert run.record.status == "CANCELLED"
    assert len(pids) == 2
    assert not any(process_exists(pid) for pid in pids)


@pytest.mark.mpi
@pytest.mark.slurm
@pytest.mark.usefixtures("mpi_ready")
async def test_srun_inside_an_allocation_runs_the_ranks(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    task = tmp_path / "task.py"
    task.write_text(textwrap.dedent(MPI_TASK))
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    db, seen_file = tmp_path / "runs.db", tmp_path / "seen.json"
    done = await anyio.run_process(
        ["salloc", "-n", "2", sys.executable, *map(os.fspath, (driver, db, task, seen_file))],
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    seen = json.loads(seen_file.read_text())
    assert {rank for sig, rank, _ in seen if sig == "partial"} == {0, 1}
    assert [rank for sig, rank, _ in seen if sig == "result"] == [0]
    with RecordStore(db) as store:
        (record,) = store.query(name="mpi-srun")
    assert record.status == "COMPLETED"
    assert record.ranks == 2
    assert "--mpi=pmix" in record.extra["launch_command"]
