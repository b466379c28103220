"""SLURM requeue: ``Slurm(requeue=True)`` passes ``--requeue``; a job the scheduler requeues is
followed through the queue to its next attempt, fires ``requeued`` and is counted in the
record, and the next attempt's messages and output arrive like the first's."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from lute_async import Executor, RecordStore
from lute_async.config import load_config
from lute_async.errors import ConfigError, ProtocolError
from lute_async.launchers.base import LaunchSpec
from lute_async.launchers.slurm import OUTPUT_STREAM, Slurm, job_info_from_row, parse_job_fields
from lute_async.launchers.slurm.attach import AttachedSlurm
from lute_async.launchers.slurm.requeue import Attempts
from lute_async.launchers.slurm.states import JobInfo
from lute_async.messages import Message, parse_message
from lute_async.records.keeper import RecordKeeper
from lute_async.records.model import AnalysisRecord

if TYPE_CHECKING:
    from slurm_support import SlurmCluster

pytest_plugins = ["slurm_support"]


def _spec(tmp_path: Path) -> LaunchSpec:
    return LaunchSpec(argv=["true"], env={}, run_id="r1", name="n", run_dir=tmp_path / "r1")


# -- without the cluster ----------------------------------------------------------------


def test_requeue_true_false_and_unset_become_the_sbatch_directive_or_none(tmp_path: Path) -> None:
    def directives(launcher: Slurm) -> list[str]:
        text = launcher.batch_script(_spec(tmp_path), tmp_path / "out")
        return [line for line in text.splitlines() if line.endswith("requeue")]

    assert directives(Slurm(requeue=True)) == ["#SBATCH --requeue"]
    assert directives(Slurm(requeue=False)) == ["#SBATCH --no-requeue"]
    assert directives(Slurm()) == []
    assert Slurm(requeue=True).describe()["requeue"] is True


@pytest.mark.parametrize("value", ["yes", 1, 0.0])
def test_a_requeue_that_is_not_a_bool_is_a_config_error_naming_it(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"launcher\.requeue.*" + repr(value).replace(".", r"\.")):
        Slurm(requeue=value)


def test_a_task_file_takes_requeue_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    config = tmp_path / "tasks.toml"
    config.write_text(
        '[tasks.t]\ncommand = ["true"]\nlauncher = { kind = "slurm", requeue = true }\n'
    )
    launcher = load_config(config).tasks["t"].launcher.build()
    assert isinstance(launcher, Slurm) and launcher.requeue is True
    config.write_text(
        '[tasks.t]\ncommand = ["true"]\nlauncher = { kind = "slurm", requeue = "yes" }\n'
    )
    with pytest.raises(ConfigError, match=r"launcher\.requeue.*'yes'"):
        load_config(config)


def test_tasks_may_not_send_requeued() -> None:
    with pytest.raises(ProtocolError, match="executor's own event 'requeued'"):
        parse_message({"sig": "requeued", "seq": 1, "ts": 1.0, "data": None})


def test_restart_counts_are_read_from_scontrol_and_squeue() -> None:
    info = parse_job_fields("JobId=7 JobState=PENDING Reason=BeginTime Restarts=2 ExitCode=0:0")
    assert info is not None and (info.state, info.restarts) == ("PENDING", 2)
    row = {"JobID": "7", "State": "RUNNING", "RestartCnt": "1", "NumTasks": "1"}
    assert job_info_from_row(row).restarts == 1


def test_a_requeue_is_seen_once_back_in_the_queue_not_while_the_old_attempt_completes() -> None:
    attempts = Attempts("7")
    look = attempts.requeued
    assert look(JobInfo("RUNNING", restarts=0), started=True, node_list="n1") is None
    # scontrol requeue: the old attempt is COMPLETING with the new count, then PENDING
    assert look(JobInfo("COMPLETING", restarts=1), started=True, node_list="n1") is None
    data = look(JobInfo("PENDING", reason="BeginTime", restarts=1), started=True, node_list="n1")
    assert data == {
        "slurm_job_id": "7",
        "requeues": 1,
        "slurm_restarts": 1,
        "slurm_state": "PENDING",
        "reason": "BeginTime",
        "node_list": "n1",
    }
    assert look(JobInfo("PENDING", restarts=1), started=False, node_list="n1") is None
    assert not attempts.starting("COMPLETING") and attempts.starting("RUNNING")
    # requeued and running again between two looks; a scheduler that gives no count
    assert look(JobInfo("RUNNING", restarts=2), started=True, node_list="n1") is not None
    assert look(JobInfo("REQUEUED"), started=True, node_list="n1") is not None
    assert (attempts.requeues, attempts.restarts) == (3, 3)


def test_the_record_is_queued_again_and_counts_its_requeues() -> None:
    record = AnalysisRecord(name="r", status="RUNNING")
    keeper = RecordKeeper(record)
    assert keeper.apply(Message("requeued", {"requeues": 1, "slurm_restarts": 1}))
    assert (record.status, record.extra["requeues"], record.extra["slurm_restarts"]) == (
        "QUEUED",
        1,
        1,
    )


def test_an_attached_run_counts_requeues_after_those_its_first_executor_saw(
    tmp_path: Path,
) -> None:
    record = AnalysisRecord(
        name="r",
        status="LOST",
        slurm_job_id="7",
        extra={
            "batch_script": os.fspath(tmp_path / "job.sbatch"),
            "requeues": 1,
            "slurm_restarts": 1,
        },
    )
    attempts = AttachedSlurm(record)._attempts
    assert attempts.requeued(JobInfo("RUNNING", restarts=1), started=False, node_list=None) is None
    data = attempts.requeued(JobInfo("RUNNING", restarts=2), started=False, node_list=None)
    assert data is not None and (data["requeues"], data["slurm_restarts"]) == (2, 2)


# -- against the cluster ----------------------------------------------------------------

ATTEMPTS_TASK = """
    import os, time
    from lute_async.task import Reporter
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    with Reporter.connect(required=True) as report:
        report.started()
        print(f"attempt {attempt} output", flush=True)
        report.emit("attempt", {"n": attempt, "job": os.environ["SLURM_JOB_ID"]})
        if attempt == 0:
            time.sleep(600)  # the test requeues the job meanwhile
        report.result({"attempt": attempt})
"""


async def _scontrol(*args: str) -> None:
    done = await anyio.run_process(["scontrol", *args], check=False)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.slurm
async def test_a_requeued_job_is_followed_to_its_second_attempt_and_counted(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # The first attempt says it runs, then waits: the test requeues it, and once the job is
    # back in the queue lets it start in 2 s instead of SLURM's ~2 minutes (a start in the
    # second of the requeue is refused: "Job credential revoked").
    hooked: list[dict[str, Any]] = []
    executor.on("requeued", lambda event: hooked.append(event.data))
    seen: list[tuple[str, Any]] = []
    launcher = Slurm(tcp_host="127.0.0.1", requeue=True)
    with anyio.fail_after(150):  # a hang guard
        async with executor.start(script(ATTEMPTS_TASK), name="req", launcher=launcher) as run:
            async for message in run.messages():
                if message.sig == "log" and message.data["stream"] == OUTPUT_STREAM:
                    seen.append(("output", message.data["message"]))
                elif message.sig in ("queued", "started", "requeued", "attempt", "done"):
                    seen.append((message.sig, message.data))
                if message.sig == "attempt" and message.data["n"] == 0:
                    await _scontrol("requeue", message.data["job"])
                elif message.sig == "requeued":
                    await _scontrol(
                        "update", f"JobId={message.data['slurm_job_id']}", "StartTime=now+2"
                    )
    record = run.record
    assert record.status == "COMPLETED", record.error
    assert record.extra["requeues"] == 1 and record.result == {
        "payload": {"attempt": 1},
        "summary": None,
    }
    assert [event for event, _ in seen if event != "output"] == [
        "queued",
        "started",
        "attempt",
        "requeued",
        "attempt",
        "done",
    ]
    requeued_at = [event for event, _ in seen].index("requeued")
    before, after = seen[:requeued_at], seen[requeued_at:]
    assert ("output", "attempt 0 output") in before  # read to its end before the rewrite
    assert ("output", "attempt 1 output") in after
    assert not any(line == "attempt 0 output" for _, line in after)
    (data,) = hooked
    assert (data["requeues"], data["slurm_restarts"]) == (1, 1)
    assert data["slurm_job_id"] == record.slurm_job_id
    assert "#SBATCH --requeue\n" in Path(record.extra["batch_script"]).read_text()
    assert slurm_cluster.scontrol_job(record.slurm_job_id).count("Restarts=1") == 1
    with RecordStore(executor.db_path) as store:
        assert store.get(record.id).extra["requeues"] == 1
    assert os.path.exists(record.extra["slurm_output"])
