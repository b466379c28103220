"""The PSI/J plugin: PSI/J jobs run end to end through lute-async (real processes, the real
PSI/J package finding the plugin through psij-descriptors, the real SLURM cluster)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if os.environ.get("CI") != "true":  # CI installs [test], which has psij-python: never skip there
    pytest.importorskip("psij", reason="psij-python is not installed (the [psij] extra)")
from psij import (
    InvalidJobException,
    Job,
    JobAttributes,
    JobExecutor,
    JobSpec,
    JobState,
    ResourceSpecV1,
    SubmitException,
)

from lute_async import RecordStore

if TYPE_CHECKING:
    from slurm_support import SlurmCluster

pytest_plugins = ["slurm_support"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
def executor(db: Path) -> JobExecutor:
    return JobExecutor.get_instance("lute-async", url=str(db))


def collect(job: Job) -> list[JobState]:
    states: list[JobState] = []
    job.set_job_status_callback(lambda _job, status: states.append(status.state))
    return states


def test_the_plugin_is_found_by_psij_through_its_descriptor() -> None:
    names = JobExecutor.get_executor_names()
    assert {"lute-async", "lute-async-slurm"} <= names


def test_a_clone_beside_an_installed_copy_registers_the_executors_once(tmp_path: Path) -> None:
    """From a clone's root, PSI/J sees its psij-descriptors and an installed copy's (when
    lute-async is installed, as in CI): only the one beside the imported package counts."""
    root = Path(__file__).resolve().parent.parent
    probe = (
        "import psij, lute_async; "
        "print(type(psij.JobExecutor.get_instance('lute-async')).__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "lute_async.psij.executor"
    assert "already registered" not in done.stderr, done.stderr


def test_a_job_runs_end_to_end_as_a_recorded_run_with_hooks_and_callbacks(
    executor: JobExecutor, db: Path, tmp_path: Path
) -> None:
    fired: list[str] = []
    executor.lute_executor.on("done", lambda event: fired.append(event.run.id))
    workdir = tmp_path / "there"
    workdir.mkdir()
    (tmp_path / "in.txt").write_text("from stdin")
    spec = JobSpec(
        "/bin/bash",
        ["-c", 'echo "$GREETING $(pwd) $(cat)"; echo oops >&2'],
        directory=workdir,
        environment={"GREETING": "hello", "N": 1},
        stdin_path=tmp_path / "in.txt",
        stdout_path=tmp_path / "out.txt",
        stderr_path=tmp_path / "err.txt",
    )
    job = Job(spec)
    states = collect(job)
    executor.submit(job)
    status = job.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.COMPLETED and status.exit_code == 0
    assert states == [JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED]
    assert (tmp_path / "out.txt").read_text() == f"hello {workdir} from stdin\n"
    assert (tmp_path / "err.txt").read_text() == "oops\n"
    assert fired == [job.native_id]
    with RecordStore(db) as store:
        record = store.get(job.native_id)
    assert record.status == "COMPLETED" and record.cwd == str(workdir)
    assert record.env["GREETING"] == "hello" and "psij" in record.tags
    assert f"psij-job:{job.id}" in record.tags


def test_inherit_environment_false_gives_the_job_its_environment_alone(
    executor: JobExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUTE_TEST_INHERITED", "from the executor")
    outputs = {}
    for inherit in (True, False):
        out = tmp_path / f"env-{inherit}.txt"
        spec = JobSpec(
            sys.executable,
            ["-c", "import os; print(sorted(os.environ))"],
            environment={"GREETING": "hello"},
            inherit_environment=inherit,
            stdout_path=out,
        )
        job = Job(spec)
        executor.submit(job)
        status = job.wait(timeout=timedelta(seconds=60))
        assert status is not None and status.state == JobState.COMPLETED, status
        outputs[inherit] = set(ast.literal_eval(out.read_text()))
    assert {"GREETING", "LUTE_TEST_INHERITED", "PATH"} <= outputs[True]
    alone = outputs[False]
    assert "GREETING" in alone and "LUTE_TEST_INHERITED" not in alone and "PATH" not in alone
    # Besides its own and lute-async's: what the redirecting bash wrapper sets itself.
    assert {name for name in alone if not name.startswith("LUTE_ASYNC_")} <= {
        "GREETING", "PYTHONUNBUFFERED", "LC_CTYPE", "PWD", "SHLVL", "_",
    }  # fmt: skip


def test_failure_missing_executable_and_cancel_reach_psij_with_code_and_message(
    executor: JobExecutor, db: Path
) -> None:
    failed = Job(JobSpec("/bin/bash", ["-c", "exit 7"]))
    missing = Job(JobSpec("/no/such/program"))
    sleeper = Job(JobSpec("/bin/sleep", ["60"]))
    for job in (failed, missing, sleeper):
        executor.submit(job)
    status = failed.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.FAILED and status.exit_code == 7
    assert status.message is not None and "exited with code 7" in status.message
    status = missing.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.FAILED
    assert status.message is not None and "/no/such/program" in status.message
    sleeper.wait(target_states=[JobState.ACTIVE], timeout=timedelta(seconds=60))
    sleeper.cancel()
    status = sleeper.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.CANCELED
    nowhere = Job(JobSpec("/bin/true", directory="/nonexistent/dir"))
    executor.submit(nowhere)
    status = nowhere.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.FAILED
    assert status.message is not None and "/nonexistent/dir" in status.message
    with RecordStore(db) as store:
        assert store.get(sleeper.native_id).status == "CANCELLED"
        assert store.get(missing.native_id).error["type"] == "LaunchError"


def test_the_walltime_ends_a_job_failed_and_timed_out(executor: JobExecutor, db: Path) -> None:
    job = Job(
        JobSpec("/bin/sleep", ["60"], attributes=JobAttributes(duration=timedelta(seconds=1)))
    )
    executor.submit(job)
    status = job.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.FAILED
    assert status.message is not None and status.message.startswith("TIMEDOUT")
    with RecordStore(db) as store:
        assert store.get(job.native_id).status == "TIMEDOUT"


def test_attach_follows_a_live_run_and_reads_an_ended_one_from_the_records(
    executor: JobExecutor, db: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    job = Job(JobSpec("/bin/cat", [str(fifo)]))
    executor.submit(job)
    job.wait(target_states=[JobState.ACTIVE], timeout=timedelta(seconds=60))
    other = JobExecutor.get_instance("lute-async", url=str(db))
    attached = Job()
    states = collect(attached)
    other.attach(attached, job.native_id)
    with open(fifo, "w"):
        pass  # cat reads EOF and exits 0
    status = attached.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.COMPLETED
    assert states == [JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED]
    later = Job()
    other.attach(later, job.native_id)
    status = later.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.COMPLETED
    assert job.native_id not in executor.list()


def test_attach_in_another_process_reads_the_run_from_the_records(db: Path) -> None:
    code = textwrap.dedent(
        f"""
        from psij import Job, JobExecutor, JobSpec
        ex = JobExecutor.get_instance("lute-async", url={str(db)!r})
        job = Job(JobSpec("/bin/true"))
        ex.submit(job)
        job.wait()
        print(job.native_id)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    job = Job()
    JobExecutor.get_instance("lute-async", url=str(db)).attach(job, done.stdout.strip())
    status = job.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.COMPLETED


def test_attach_to_a_run_whose_executor_died_ends_failed_lost(db: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os
        from psij import Job, JobExecutor, JobSpec, JobState
        ex = JobExecutor.get_instance("lute-async", url={str(db)!r})
        job = Job(JobSpec("/bin/sleep", ["60"]))
        ex.submit(job)
        job.wait(target_states=[JobState.ACTIVE])
        print(job.native_id, flush=True)
        os._exit(0)  # the executor dies with its run RUNNING in the records
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    job = Job()
    JobExecutor.get_instance("lute-async", url=str(db)).attach(job, done.stdout.strip())
    status = job.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.FAILED
    assert status.message is not None and "LOST" in status.message


def test_the_multiple_launcher_runs_process_count_copies_with_a_node_file(
    executor: JobExecutor, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    spec = JobSpec(
        "/bin/bash",
        ["-c", 'echo copy; [ "$(wc -l <"$PSIJ_NODEFILE")" = 3 ]'],
        stdout_path=out,
        launcher="multiple",
        resources=ResourceSpecV1(process_count=3),
    )
    job = Job(spec)
    executor.submit(job)
    status = job.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.COMPLETED, status
    assert out.read_text() == "copy\n" * 3


def test_a_pre_launch_script_is_sourced_before_the_job(
    executor: JobExecutor, tmp_path: Path
) -> None:
    pre = tmp_path / "pre.sh"
    pre.write_text("export FROM_PRE=yes\n")
    out = tmp_path / "out.txt"
    job = Job(JobSpec("/bin/bash", ["-c", "echo $FROM_PRE"], pre_launch=pre, stdout_path=out))
    executor.submit(job)
    status = job.wait(timeout=timedelta(seconds=60))
    assert status is not None and status.state == JobState.COMPLETED
    assert out.read_text() == "yes\n"


@pytest.mark.mpi
def test_the_mpirun_launcher_runs_ranks(
    mpi_ready: None, executor: JobExecutor, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    spec = JobSpec(
        "/bin/bash",
        ["-c", "echo rank=$OMPI_COMM_WORLD_RANK"],
        stdout_path=out,
        launcher="mpirun",
        resources=ResourceSpecV1(process_count=2),
    )
    job = Job(spec)
    executor.submit(job)
    status = job.wait(timeout=timedelta(seconds=120))
    assert status is not None and status.state == JobState.COMPLETED, status
    assert sorted(out.read_text().split()) == ["rank=0", "rank=1"]


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (JobSpec("/bin/true", launcher="aprun"), "launcher: 'aprun'"),
        (JobSpec(), "Missing specification|executable"),
        (JobSpec("/bin/true", stdout_path="/nonexistent/dir/out"), "stdout_path: cannot create"),
        (JobSpec("/bin/true", stderr_path="/nonexistent/dir/err"), "stderr_path: cannot create"),
    ],
)
def test_a_job_lute_async_cannot_run_is_refused_at_submit(
    executor: JobExecutor, spec: JobSpec, why: str
) -> None:
    job = Job(spec)
    with pytest.raises(InvalidJobException, match=why):
        executor.submit(job)
    assert job.status.state == JobState.NEW


def test_attach_to_an_unknown_run_and_cancel_before_submit_are_refused(
    executor: JobExecutor,
) -> None:
    with pytest.raises(SubmitException, match="no lute-async run"):
        executor.attach(Job(), "0" * 32)
    with pytest.raises(SubmitException, match="not submitted"):
        executor.cancel(Job(JobSpec("/bin/true")))


def test_one_event_loop_thread_serves_every_executor_instance(db: Path) -> None:
    executors = [JobExecutor.get_instance("lute-async", url=str(db)) for _ in range(3)]
    for executor in executors:
        job = Job(JobSpec("/bin/true"))
        executor.submit(job)
        job.wait(timeout=timedelta(seconds=60))
    services = {id(executor._service) for executor in executors}
    loops = {executor._service.runs._thread.ident for executor in executors}
    assert len(services) == 1 and len(loops) == 1


@pytest.mark.slurm
def test_a_job_runs_under_slurm_with_its_resources_and_node_file(
    slurm_cluster: SlurmCluster, db: Path, tmp_path: Path
) -> None:
    executor = JobExecutor.get_instance("lute-async-slurm", url=str(db))
    out = tmp_path / "out.txt"
    spec = JobSpec(
        "/bin/bash",
        ["-c", 'echo "$SLURM_NTASKS $(wc -l <"$PSIJ_NODEFILE")"'],
        stdout_path=out,
        resources=ResourceSpecV1(process_count=2),
        attributes=JobAttributes(duration=timedelta(minutes=5)),
    )
    job = Job(spec)
    states = collect(job)
    executor.submit(job)
    status = job.wait(timeout=timedelta(seconds=120))
    assert status is not None and status.state == JobState.COMPLETED, status
    assert states == [JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED]
    assert out.read_text().split() == ["2", "2"]
    with RecordStore(db) as store:
        record = store.get(job.native_id)
    assert record.slurm_job_id is not None and record.status == "COMPLETED"
    script = Path(record.extra["batch_script"]).read_text()
    assert "--ntasks=2" in script and "--time=0-00:05:00" in script
    assert status.metadata is not None and status.metadata["slurm_job_id"] == record.slurm_job_id
