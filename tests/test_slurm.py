"""The SLURM launcher against the real single-node cluster: a job's fate from the scheduler's
state, its ranks' messages over TCP, and the job id, nodes and batch script in the record."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import textwrap
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conftest import PYTHON, process_exists

from lute_async import AnalysisRecord, Executor, RecordStore
from lute_async.launchers.base import LaunchSpec
from lute_async.launchers.slurm import (
    ERROR_STREAM,
    OUTPUT_STREAM,
    JobBoard,
    OutputFollower,
    Slurm,
    SlurmJob,
    exit_status,
    job_info_from_row,
    parse_job_fields,
    parse_rows,
    parse_slurm_time,
    submit_executor,
)
from lute_async.launchers.slurm.states import jobcomp_file, parse_jobcomp, parse_sacct
from lute_async.launchers.slurm_reconcile import reconcile_lost_jobs
from lute_async.workflow import run_graph_from_config

if TYPE_CHECKING:
    from slurm_support import SlurmCluster

pytest_plugins = ["slurm_support"]

LIFECYCLE = ("queued", "started", "result", "done", "failed", "cancelled", "timed_out")

REPORTING_TASK = """
    import os, sys
    from lute_async.task import Reporter
    with Reporter.connect(required=True) as report:
        report.started({"code": int(sys.argv[1])})
        report.log("on the cluster")
        report.result({"ok": True})
    sys.exit(int(sys.argv[1]))
"""

WAITING_TASK = """
    import os, time
    from lute_async.task import Reporter
    with Reporter.connect(required=True) as report:
        report.started()
        report.emit("ready", {"pid": os.getpid()})
        time.sleep(600)
"""


async def _ignore(sig: str, data: dict[str, Any]) -> None:
    pass


def loopback(**options: Any) -> Slurm:
    return Slurm(tcp_host="127.0.0.1", **options)


# -- without the cluster ----------------------------------------------------------------


def test_batch_script_holds_only_the_given_options_and_no_environment(tmp_path: Path) -> None:
    spec = LaunchSpec(
        argv=["python", "t.py"],
        env={"LUTE_ASYNC_SECRET": "s3cret"},
        run_id="abc",
        name="peaks",
        run_dir=tmp_path,
    )
    text = Slurm(ntasks=2, time="0:30:00", extra_sbatch=["--exclusive"]).batch_script(
        spec, tmp_path / "out"
    )
    options = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert options == [
        "#SBATCH --job-name=peaks",
        f"#SBATCH --output={tmp_path / 'out'}",
        "#SBATCH --ntasks=2",
        "#SBATCH --time=0:30:00",
        "#SBATCH --exclusive",
    ]
    assert "srun --mpi=pmix" in text
    assert "s3cret" not in text and "LUTE_ASYNC_SECRET" not in text


def test_scheduler_states_map_to_terminal_events() -> None:
    def status(line: str) -> Any:
        info = parse_job_fields(line)
        assert info is not None
        return exit_status("9", info)

    assert status("JobState=COMPLETED Reason=None ExitCode=0:0 NodeList=n1").exit_code == 0
    assert status("JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15").terminal == "timed_out"
    assert status("JobState=CANCELLED Reason=None ExitCode=0:15").terminal == "cancelled"
    oom = status("JobState=OUT_OF_MEMORY Reason=OutOfMemory ExitCode=0:125")
    assert oom.terminal == "failed" and oom.error is not None
    assert oom.error["type"] == "OutOfMemory"
    failed = status("JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 ReqNodeList=x NodeList=n1")
    assert (failed.exit_code, failed.extra["node_list"]) == (3, "n1")


async def test_output_follower_sends_whole_lines_in_order_and_the_last_one_at_the_end(
    tmp_path: Path,
) -> None:
    output = tmp_path / "slurm-1.out"
    sent: list[tuple[str, str, str]] = []

    async def notify(sig: str, data: dict[str, Any]) -> None:
        sent.append((sig, data["stream"], data["message"]))

    follower = OutputFollower(output, notify)
    await follower.look()  # the job has not written its file yet
    assert sent == []
    output.write_bytes(b"one\r\ntw")
    await follower.look()
    with output.open("ab") as fh:
        fh.write(b"o\n\xffthree")
    await follower.look()
    assert [m for _, _, m in sent] == ["one", "two"]  # "three" may still be being written
    await follower.look(final=True)
    assert sent == [("log", OUTPUT_STREAM, m) for m in ("one", "two", "\ufffdthree")]
    await follower.look(final=True)  # closed: looking again sends nothing twice
    assert len(sent) == 3


def test_squeue_rows_give_state_and_placement_without_its_placeholders() -> None:
    # Rows as squeue 22.05 prints them: a held job (not placed yet) and a running one.
    rows = parse_rows("247|PENDING|JobHeldUser||n/a|4294967294|\n246|RUNNING|None|vm|vm|2|\n")
    pending, running = job_info_from_row(rows["247"]), job_info_from_row(rows["246"])
    assert (pending.state, pending.reason, pending.node_list) == ("PENDING", "JobHeldUser", None)
    assert (pending.batch_host, pending.ntasks) == (None, None)
    assert (running.state, running.node_list, running.batch_host, running.ntasks) == (
        "RUNNING",
        "vm",
        "vm",
        2,
    )


def test_slurm_times_are_local_wall_clock_seconds_or_none() -> None:
    expected = datetime(2026, 11, 23, 14, 11, 29).timestamp()
    assert parse_slurm_time("2026-11-23T14:11:29") == expected
    for unknown in ("Unknown", "None", "", None):
        assert parse_slurm_time(unknown) is None
    info = parse_job_fields("JobState=COMPLETED StartTime=2026-11-23T14:11:29 EndTime=Unknown")
    assert info is not None and (info.start_time, info.end_time) == (expected, None)


def test_a_finished_job_is_read_from_sacct_or_the_job_completion_file() -> None:
    # sacct -n -P lists the job, then its steps; only the job's own line counts.
    sacct = "7|CANCELLED by 0|0:15|n1|None|2026-11-23T14:11:29|2026-11-23T14:11:31\n7.batch|x|0:0\n"
    info = parse_sacct(sacct, "7")
    assert info is not None and (info.state, info.signal, info.node_list) == ("CANCELLED", 15, "n1")
    assert info.end_time is not None and info.start_time == info.end_time - 2
    assert parse_sacct(sacct, "8") is None
    config = "JobCompHost = localhost\nJobCompLoc = /var/log/slurm/jobcomp.txt\n"
    assert jobcomp_file(config) == "/var/log/slurm/jobcomp.txt"
    assert jobcomp_file("JobCompLoc = mysql\n") is None  # not a file
    jobcomp = (
        "JobId=70 UserId=u JobState=COMPLETED ExitCode=0:0\n"
        "JobId=7 UserId=u JobState=REQUEUED ExitCode=0:0\n"
        "JobId=7 UserId=u JobState=FAILED ExitCode=2:0 NodeList=n1\n"
    )
    last = parse_jobcomp(jobcomp, "7")
    assert last is not None and (last.state, last.exit_code, last.source) == (
        "FAILED",
        2,
        "jobcomp",
    )
    assert last.ran and parse_jobcomp(jobcomp, "71") is None


# -- against the cluster ----------------------------------------------------------------


@pytest.mark.slurm
async def test_job_that_succeeds_goes_queued_started_result_done(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = [*script(REPORTING_TASK), "0"]
    async with executor.start(argv, name="ok", launcher=loopback()) as run:
        secret = run._secret
        events = [m.sig async for m in run.messages() if m.sig in LIFECYCLE]
    record = run.record
    assert events == ["queued", "started", "result", "done"]
    assert record.status == "COMPLETED"
    assert record.slurm_job_id is not None
    assert slurm_cluster.job_state(record.slurm_job_id) == "COMPLETED"
    assert record.extra["node_list"]
    assert record.ranks == 1
    # The scheduler's own start and end (whole seconds) fall within the run's record.
    start, end = record.extra["slurm_start"], record.extra["slurm_end"]
    assert record.ended_at is not None
    assert int(record.submitted_at) <= start <= end <= record.ended_at
    assert record.extra["slurm_elapsed"] == end - start
    batch_script = Path(record.extra["batch_script"])
    assert batch_script.parent == executor.workdir / record.id
    assert secret not in await anyio.Path(batch_script).read_text()
    with RecordStore(executor.db_path) as store:
        assert store.get(record.id).slurm_job_id == record.slurm_job_id


@pytest.mark.slurm
async def test_sbatch_gets_the_script_on_stdin_and_the_kept_copy_is_what_the_scheduler_ran(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = [*script(REPORTING_TASK), "0"]
    record = await executor.run(argv, name="stdin_script", launcher=loopback(time="0:05:00"))
    assert record.status == "COMPLETED", record.error
    assert record.slurm_job_id is not None
    kept = Path(record.extra["batch_script"])
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    done = await anyio.run_process(["scontrol", "write", "batch_script", record.slurm_job_id, "-"])
    assert done.stdout.decode() == kept.read_text()
    assert "\n#SBATCH --time=0:05:00\n" in done.stdout.decode()


@pytest.mark.slurm
async def test_a_jobs_output_arrives_as_log_lines_while_it_runs_and_before_it_ends(
    slurm_cluster: SlurmCluster,
    executor: Executor,
    script: Callable[[str], list[str]],
    tmp_path: Path,
) -> None:
    # The job prints, then blocks until the test has seen that line as a log event: the job
    # can only end if its output is streamed while it runs.
    gate = tmp_path / "gate.sock"
    task = script(f"""
        import socket, sys
        print("waiting for the executor", flush=True)
        print("on stderr", file=sys.stderr, flush=True)
        s = socket.socket(socket.AF_UNIX)
        s.connect({os.fspath(gate)!r})
        s.recv(1)
        sys.stdout.write("released, no newline")
    """)
    seen = anyio.Event()

    async def release(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await seen.wait()
            await stream.send(b"!")

    logs: list[tuple[str, str]] = []
    async with (
        await anyio.create_unix_listener(gate) as listener,
        anyio.create_task_group() as serving,
    ):
        serving.start_soon(listener.serve, release)
        with anyio.fail_after(120):  # a hang guard, not a timing assertion
            async with executor.start(task, launcher=loopback()) as run:
                async for message in run.messages():
                    if message.sig == "log" and message.data["stream"] == OUTPUT_STREAM:
                        logs.append((message.sig, message.data["message"]))
                        if message.data["message"] == "waiting for the executor":
                            seen.set()
                    elif message.sig in LIFECYCLE:
                        logs.append((message.sig, ""))
        serving.cancel_scope.cancel()
    assert run.record.status == "COMPLETED"
    assert logs == [
        ("queued", ""),
        ("started", ""),
        ("log", "waiting for the executor"),
        ("log", "on stderr"),
        ("log", "released, no newline"),
        ("done", ""),
    ]


@pytest.mark.slurm
async def test_jobs_followed_at_once_are_looked_at_with_one_squeue(
    slurm_cluster: SlurmCluster, executor: Executor
) -> None:
    # Held jobs stay queued until released: by the time all four are released, each is on the
    # board, and the squeue that sees them run covers all four.
    launcher = loopback(extra_sbatch=["--hold"])
    async with AsyncExitStack() as stack:
        runs = [
            await stack.enter_async_context(
                executor.start([PYTHON, "-c", "pass"], name=f"held{i}", launcher=launcher)
            )
            for i in range(4)
        ]
        job_ids = []
        for run in runs:
            async for message in run.messages():
                if message.sig == "queued":
                    job_ids.append(message.data["slurm_job_id"])
                    break
        jobs = [run._process for run in runs]
        boards = {job.board for job in jobs if isinstance(job, SlurmJob)}
        released = await anyio.run_process(["scontrol", "release", ",".join(job_ids)], check=False)
        assert released.returncode == 0, released.stderr.decode()
        records = [await run.wait() for run in runs]
    assert [r.status for r in records] == ["COMPLETED"] * 4
    assert len(boards) == 1 and boards.pop().widest == 4


@pytest.mark.slurm
async def test_a_board_says_why_squeue_failed_and_that_unknown_jobs_are_unknown(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    (tmp_path / "slurm.conf").write_text("not a slurm.conf\n")
    broken = JobBoard({**os.environ, "SLURM_CONF": os.fspath(tmp_path / "slurm.conf")})
    broken.add("1")
    failed = await broken.observe()
    assert failed.error is not None and "configuration" in failed.error and failed.rows == {}
    board = JobBoard(dict(os.environ))
    board.add("999999")
    unknown = await board.observe()
    assert unknown.error is None and unknown.rows == {}
    # A job followed through the failing board waits for a real answer: no state, the error.
    job = SlurmJob(
        "1",
        batch_script=tmp_path / "job.sbatch",
        output=tmp_path / "slurm-1.out",
        ntasks=None,
        env={**os.environ, "SLURM_CONF": os.fspath(tmp_path / "slurm.conf")},
        notify=_ignore,
        run_id="r",
    )
    assert await job.observe() is None
    assert job.controller_error is not None and "configuration" in job.controller_error


@pytest.mark.slurm
async def test_output_and_error_files_named_in_extra_sbatch_are_followed(
    slurm_cluster: SlurmCluster, executor: Executor, tmp_path: Path
) -> None:
    # The scheduler expands the patterns; the executor follows the files it names.
    options = [f"--output={tmp_path}/%x-%j.out", f"--error={tmp_path}/%x-%j.err"]
    task = [PYTHON, "-c", "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"]
    streams: list[tuple[str, str]] = []
    executor.on("log", lambda event: streams.append((event.data["stream"], event.data["message"])))
    record = await executor.run(task, name="named", launcher=loopback(extra_sbatch=options))
    assert record.status == "COMPLETED"
    assert record.extra["slurm_output"] == f"{tmp_path}/named-{record.slurm_job_id}.out"
    assert sorted(streams) == [(ERROR_STREAM, "to stderr"), (OUTPUT_STREAM, "to stdout")]


@pytest.mark.slurm
async def test_job_that_exits_3_fails_with_exit_code_3(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    record = await executor.run([*script(REPORTING_TASK), "3"], launcher=loopback())
    assert record.status == "FAILED"
    assert record.exit_code == 3
    assert record.extra["slurm_state"] == "FAILED"
    assert record.error is not None and record.error["type"] == "NonZeroExit"
    # Once the controller forgets the job, sacct -c and the job-completion file still know.
    job = SlurmJob(
        record.slurm_job_id or "",
        batch_script=Path(record.extra["batch_script"]),
        output=Path(record.extra["slurm_output"]),
        ntasks=None,
        env=dict(os.environ),
        notify=_ignore,
        run_id=record.id,
    )
    for info in (await job.query_finished(), await job.query_jobcomp_file()):
        assert info is not None
        assert (info.state, info.exit_code) == ("FAILED", 3)
        assert (info.start_time, info.end_time) == (
            record.extra["slurm_start"],
            record.extra["slurm_end"],
        )


@pytest.mark.slurm
async def test_job_over_the_executors_timeout_is_cancelled_and_times_out(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    record = await executor.run(script(WAITING_TASK), launcher=loopback(), timeout=1)
    assert record.status == "TIMEDOUT"
    assert record.slurm_job_id is not None
    assert slurm_cluster.job_state(record.slurm_job_id) == "CANCELLED"


@pytest.mark.slurm
async def test_job_whose_script_cannot_start_fails_from_the_scheduler_state(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # The job's output file cannot be created: slurmd cannot launch the batch script.
    launcher = loopback(extra_sbatch=["--output=/nonexistent/dir/job.out"])
    fired: list[str] = []
    record = await executor.run(
        [*script(REPORTING_TASK), "0"],
        launcher=launcher,
        hooks={"*": lambda e: fired.append(e.name)},
    )
    assert record.status == "FAILED"
    assert record.extra["slurm_state"] == "FAILED"
    assert record.extra["slurm_reason"] == "JobLaunchFailure"
    assert record.error is not None and record.error["type"] == "JobLaunchFailure"
    assert "result" not in fired and fired[-1] == "failed"


@pytest.mark.slurm
async def test_job_cancelled_while_running_ends_cancelled_with_no_process_left(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    pid = None
    async with executor.start(script(WAITING_TASK), launcher=loopback()) as run:
        async for message in run.messages():
            if message.sig == "ready":
                pid = message.data["pid"]
                await run.cancel()
    record = run.record
    assert record.status == "CANCELLED"
    assert record.slurm_job_id is not None
    assert slurm_cluster.job_state(record.slurm_job_id) == "CANCELLED"
    assert pid is not None and not process_exists(pid)


@pytest.mark.slurm
async def test_job_cancelled_while_pending_ends_cancelled_without_starting(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    launcher = loopback(extra_sbatch=["--begin=now+3600"])  # eligible only in an hour
    async with executor.start(script(WAITING_TASK), launcher=launcher) as run:
        events = []
        async for message in run.messages():
            if message.sig != "log":  # the pending reason (BeginTime) may be told first
                events.append(message.sig)
            if message.sig == "queued":
                await run.cancel()
    assert events == ["queued", "cancelled"]
    assert run.record.status == "CANCELLED"
    assert run.record.slurm_job_id is not None
    assert slurm_cluster.job_state(run.record.slurm_job_id) == "CANCELLED"


@pytest.mark.slurm
async def test_a_job_that_can_never_start_says_why_while_queued(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    launcher = loopback(nodes=64, mpi=False)  # more nodes than the partition has
    async with executor.start(script(WAITING_TASK), launcher=launcher) as run:
        async for message in run.messages():
            if message.sig == "log" and "pending" in message.data["message"]:
                warning = message.data
                await run.cancel()
    assert run.record.status == "CANCELLED"
    assert warning["level"] == "warning"
    job = run.record.slurm_job_id
    assert re.match(f"SLURM job {job} pending: Partition(NodeLimit|Config): ", warning["message"])
    assert "cannot start as submitted" in warning["message"]


@pytest.mark.slurm
async def test_mpi_job_ranks_report_over_tcp_tagged_with_their_rank(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    task = script("""
        from lute_async.task import Reporter
        with Reporter.connect(required=True) as report:
            report.started()
            report.emit("hello", {"rank": report.rank})
            report.result({"ok": True})
    """)
    async with executor.start(task, launcher=loopback(ntasks=2)) as run:
        messages = [m async for m in run.messages()]
    assert run.record.status == "COMPLETED"
    assert run.record.ranks == 2
    assert {m.rank for m in messages if m.sig == "hello"} == {0, 1}
    assert {m.source for m in messages if m.sig == "hello"} == {"tcp"}
    assert [m.rank for m in messages if m.sig == "result"] == [0]


@pytest.mark.slurm
@pytest.mark.timeout(240)
async def test_job_over_its_time_limit_times_out(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # SLURM's smallest limit is one minute, enforced on the controller's periodic check:
    # this test takes 60-90 s of wall time.
    record = await executor.run(script(WAITING_TASK), launcher=loopback(time="1"))
    assert record.status == "TIMEDOUT"
    assert record.extra["slurm_state"] == "TIMEOUT"
    assert record.slurm_job_id is not None


@pytest.mark.slurm
async def test_submit_executor_runs_a_defined_task_in_a_batch_job(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    config = tmp_path / "tasks.toml"
    config.write_text(
        textwrap.dedent("""
            [tasks.greet]
            command = ["{python}", "-c", "print('hello {{{{ who }}}}')"]

            [tasks.greet.params]
            who = "nobody"
        """).format(python=sys.executable)
    )
    db = tmp_path / "runs.db"
    job_id = await anyio.to_thread.run_sync(
        lambda: submit_executor(
            "greet", config, [f"--output={tmp_path / 'job.out'}"], {"who": "slurm"}, db
        )
    )
    done = await anyio.run_process(["srun", f"--dependency=afterany:{job_id}", "true"], check=False)
    assert done.returncode == 0, done.stderr.decode()
    job_output = (tmp_path / "job.out").read_text()
    assert slurm_cluster.job_state(job_id) == "COMPLETED", job_output
    with RecordStore(db) as store:
        (record,) = store.query(name="greet")
    assert record.status == "COMPLETED", job_output
    assert record.params["who"] == "slurm"


async def test_a_job_only_asked_how_it_ended_is_not_put_on_the_board(tmp_path: Path) -> None:
    # Reconciling asks scontrol/sacct about old jobs: later squeues must not list them.
    job = SlurmJob(
        "999999",
        batch_script=tmp_path / "job.sbatch",
        output=tmp_path / "slurm-999999.out",
        ntasks=None,
        env={"PATH": os.fspath(tmp_path)},  # no squeue here: the board must not need one
        notify=_ignore,
        run_id="r",
    )
    answer = await job.board.observe()
    assert answer.rows == {} and answer.error is None and job.board.widest == 0


@pytest.mark.slurm
async def test_a_job_no_source_knows_is_not_taken_for_finished(slurm_cluster: SlurmCluster) -> None:
    job = SlurmJob(
        "999999",
        batch_script=Path("/nonexistent"),
        output=Path("/nonexistent"),
        ntasks=None,
        env=dict(os.environ),
        notify=_ignore,
        run_id="r",
    )
    assert await job.query() is None
    assert job.controller_error is None  # "unknown job", not a controller failure


@pytest.mark.slurm
async def test_a_graph_runs_a_defined_task_as_a_slurm_job_with_an_upstream_result(
    slurm_cluster: SlurmCluster, executor: Executor, tmp_path: Path
) -> None:
    graph = tmp_path / "graph.toml"
    graph.write_text(
        textwrap.dedent("""
            [tasks.on_cluster]
            command = ["{python}", "-c", "print('frames', {{{{ frames }}}})"]
            launcher = {{ kind = "slurm", ntasks = 1 }}

            [graph.count]
            command = [
                "{python}", "-c",
                "from lute_async.task import Reporter\\nwith Reporter.connect() as r: r.result(12)",
            ]

            [graph.process]
            task = "on_cluster"
            after = ["count"]
            params = {{ frames = "{{{{ count.result.payload }}}}" }}
        """).format(python=sys.executable)
    )
    lines: list[str] = []
    executor.on("log", lambda event: lines.append(event.data["message"]))
    records = await run_graph_from_config(graph, executor)
    process = records["process"]
    assert process.status == "COMPLETED", process.error
    assert process.slurm_job_id is not None and process.params == {"frames": 12}
    assert "frames 12" in lines  # the job's output, streamed from its output file


@pytest.mark.slurm
async def test_a_job_whose_executor_was_killed_is_settled_from_the_scheduler(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    # The job tells the test its id once it runs, then waits to be released: the test kills
    # the executor (SIGKILL, no clean-up) in between, so only the scheduler saw the end.
    gate = tmp_path / "gate.sock"
    task = tmp_path / "held.py"
    task.write_text(
        textwrap.dedent(f"""
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX)
            s.connect({os.fspath(gate)!r})
            s.sendall(os.environ["SLURM_JOB_ID"].encode() + b"\\n")
            s.recv(1)
            sys.exit(3)
        """)
    )
    config = tmp_path / "tasks.toml"
    config.write_text(
        f'[tasks.held]\ncommand = ["{PYTHON}", "{task}"]\nlauncher = {{ kind = "slurm" }}\n'
    )
    db = tmp_path / "runs.db"
    env = {**os.environ, "LUTE_ASYNC_DB": os.fspath(db)}
    cli = [PYTHON, "-m", "lute_async.cli"]
    async with await anyio.create_unix_listener(gate) as listener:
        executor = await anyio.open_process(
            [*cli, "run", "held", "--config", os.fspath(config)], env=env
        )
        with anyio.fail_after(120):  # a hang guard
            async with await listener.accept() as job:
                received = b""
                while not received.endswith(b"\n"):
                    received += await job.receive()
                executor.kill()
                await executor.wait()
                await job.send(b"!")
    job_id = received.decode().strip()
    ended = await anyio.run_process(["srun", f"--dependency=afterany:{job_id}", "true"])
    assert ended.returncode == 0
    with RecordStore(db) as store:  # opening it marks the run LOST: its executor is dead
        (lost,) = store.query(name="held")
    assert (lost.status, lost.slurm_job_id) == ("LOST", job_id)

    done = await anyio.run_process([*cli, "records", "reconcile", "--json"], env=env)
    assert [json.loads(line) for line in done.stdout.decode().splitlines()] == [
        {
            "id": lost.id,
            "slurm_job_id": job_id,
            "slurm_state": "FAILED",
            "settled": True,
            "status": "FAILED",
        }
    ]
    with RecordStore(db) as store:
        settled = store.get(lost.id)
    assert settled.exit_code == 3
    assert settled.error is not None and settled.error["type"] == "NonZeroExit"
    assert settled.ended_at == settled.extra["slurm_end"]
    assert settled.extra["reconciled"]["was"] == "LOST"
    assert settled.extra["reconciled"]["lost_error"]["type"] == "ExecutorLost"
    again = await anyio.run_process([*cli, "records", "reconcile", "--json"], env=env)
    assert again.stdout == b""  # nothing LOST is left


@pytest.mark.slurm
async def test_reconciling_leaves_runs_whose_job_goes_on_or_has_no_job_lost(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    held = await anyio.run_process(["sbatch", "--parsable", "--hold", "--wrap", "true"])
    job_id = held.stdout.decode().strip()
    try:
        with RecordStore(tmp_path / "runs.db") as store:
            waiting = AnalysisRecord(name="waiting", status="LOST", slurm_job_id=job_id)
            local = AnalysisRecord(name="local", status="LOST")
            store.save(waiting)
            store.save(local)
            (outcome,) = await reconcile_lost_jobs(store)
            assert (outcome.record.id, outcome.slurm_state, outcome.settled) == (
                waiting.id,
                "PENDING",
                False,
            )
            assert {r.status for r in store.query()} == {"LOST"}
    finally:
        await anyio.run_process(["scancel", job_id])
