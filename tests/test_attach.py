"""An executor that dies mid-job loses nothing: the job's reporters spool while no executor
listens, and ``Executor.attach`` / ``lute-async attach`` take the run up again, replay the spool
in order through the hooks, follow the job to its end and settle the record."""

from __future__ import annotations

import os
import stat
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conftest import PYTHON

from lute_async import AnalysisRecord, Executor, RecordStore
from lute_async.communicators.base import Batch, RunChannel
from lute_async.communicators.spool import SpoolReader
from lute_async.errors import AttachError
from lute_async.messages import encode
from lute_async.task.spool import open_spool

if TYPE_CHECKING:
    from slurm_support import SlurmCluster

pytest_plugins = ["slurm_support"]

CLI = [PYTHON, "-m", "lute_async.cli"]


def _channel(run_id: str, errors: list[str]) -> RunChannel:
    send, _ = anyio.create_memory_object_stream[Batch](1)
    return RunChannel(
        run_id,
        "s3cret",
        send,
        max_frame=1 << 20,
        on_protocol_error=lambda source, conn, error: errors.append(str(error)),
    )


def _frame(seq: int) -> bytes:
    return encode({"sig": "n", "seq": seq, "ts": 1.0, "data": {"i": seq}})


# -- without the cluster ----------------------------------------------------------------


def test_a_spool_holds_batches_in_order_and_says_when_it_is_full(tmp_path: Path) -> None:
    env = {"LUTE_ASYNC_SPOOL": os.fspath(tmp_path), "LUTE_ASYNC_SPOOL_MAX": "200"}
    spool = open_spool(env, "run1", 42, 0)
    assert spool is not None
    assert stat.S_IMODE(os.stat(spool.path).st_mode) == 0o600
    spool.write(_frame(7) + _frame(8))
    spool.write(_frame(9) * 20)  # past the limit: dropped, and said so
    spool.write(_frame(10))
    spool.close()
    errors: list[str] = []
    reader = SpoolReader(Path(spool.path), _channel("run1", errors))
    batch, more = reader.read()
    assert more and [(m.sig, m.seq, m.data, m.rank, m.pid, m.source) for m in batch] == [
        ("n", 7, {"i": 7}, 0, 42, "spool"),
        ("n", 8, {"i": 8}, 0, 42, "spool"),
    ]
    assert reader.read() == ([], False)
    reader.finish()
    assert errors == [
        f"the spool {Path(spool.path).name} reached its 200-byte limit: "
        "the task dropped the messages it sent after that"
    ]


def test_a_spool_of_another_run_or_cut_inside_a_frame_is_reported(tmp_path: Path) -> None:
    env = {"LUTE_ASYNC_SPOOL": os.fspath(tmp_path)}
    other = open_spool(env, "other", 1, None)
    assert other is not None
    other.close()
    errors: list[str] = []
    assert SpoolReader(Path(other.path), _channel("run1", errors)).read()[0] == []
    assert errors == [f"the spool {Path(other.path).name} is another run's"]
    cut = open_spool(env, "run1", 2, None)
    assert cut is not None
    cut.write(_frame(1) + _frame(2)[:-3])
    cut.close()
    errors.clear()
    reader = SpoolReader(Path(cut.path), _channel("run1", errors))
    assert [m.seq for m in reader.read()[0]] == [1]
    reader.finish()
    assert errors == [f"the spool {Path(cut.path).name} ends inside a frame"]


def test_no_spool_is_made_where_none_is_asked_for(tmp_path: Path) -> None:
    assert open_spool({}, "run1", 1, None) is None


REPORTING = """
    import sys
    from lute_async.task import Reporter
    with Reporter.connect(required=True) as report:
        sys.stdin.readline()  # the test closes the executor's end meanwhile
        for i in range(3):
            report.emit("n", {"i": i})
"""


def _spooled(directory: Path, run_id: str) -> list[tuple[str, int, Any]]:
    errors: list[str] = []
    (path,) = directory.iterdir()
    reader = SpoolReader(path, _channel(run_id, errors))
    batch, _ = reader.read()
    reader.finish()
    assert errors == []
    assert b"secret" not in path.read_bytes() and b"s3cret" not in path.read_bytes()
    return [(m.sig, m.seq, m.data) for m in batch]


def _task_env(tmp_path: Path, tcp: str) -> dict[str, str]:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    return {
        **os.environ,
        "LUTE_ASYNC_RUN": "run1",
        "LUTE_ASYNC_SECRET": "s3cret",
        "LUTE_ASYNC_TCP": tcp,
        "LUTE_ASYNC_SPOOL": os.fspath(spool),
    }


def test_a_reporter_whose_executor_closed_its_connection_spools_what_follows(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    import socket
    import subprocess

    from lute_async.wire import CHALLENGE_PREFIX

    with socket.create_server(("127.0.0.1", 0)) as server:
        env = _task_env(tmp_path, f"127.0.0.1:{server.getsockname()[1]}")
        task = subprocess.Popen(script(REPORTING), env=env, stdin=subprocess.PIPE, text=True)
        conn, _ = server.accept()
        conn.sendall(CHALLENGE_PREFIX + bytes(16))
        assert conn.recv(4096)  # its hello
        conn.close()  # the executor is gone; the task has not sent a message yet
    assert task.stdin is not None
    task.stdin.write("go\n")
    task.stdin.close()
    assert task.wait(timeout=60) == 0  # a hang guard
    assert _spooled(tmp_path / "spool", "run1") == [("n", i + 1, {"i": i}) for i in range(3)]


def test_a_reporter_that_cannot_reach_its_executor_spools_from_its_first_message(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    import socket
    import subprocess

    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # nothing listens there once closed
    env = _task_env(tmp_path, f"127.0.0.1:{port}")
    done = subprocess.run(script(REPORTING), env=env, input="go\n", text=True, timeout=60)
    assert done.returncode == 0
    assert _spooled(tmp_path / "spool", "run1") == [("n", i + 1, {"i": i}) for i in range(3)]


async def test_a_run_inside_a_job_does_not_inherit_the_jobs_spool(
    executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUTE_ASYNC_SPOOL", os.fspath(tmp_path))  # as in a SLURM job's task
    code = "import os, sys; sys.exit(3 if 'LUTE_ASYNC_SPOOL' in os.environ else 0)"
    record = await executor.run([PYTHON, "-c", code])
    assert record.status == "COMPLETED", record.error


async def test_runs_that_cannot_be_attached_to_say_why(tmp_path: Path) -> None:
    async with Executor(db=tmp_path / "runs.db") as executor:
        store = await executor.store()
        local = AnalysisRecord(name="local", status="LOST")
        ended = AnalysisRecord(name="ended", status="COMPLETED", slurm_job_id="1")
        watched = AnalysisRecord(name="watched", status="RUNNING", slurm_job_id="2")
        for record in (local, ended, watched):
            store.save(record)
        cases = {
            "nope": "no run with id 'nope'",
            local.id: "is not a SLURM batch job",
            ended.id[:8]: "has ended COMPLETED: nothing to attach to",
            watched.id: f"is followed by executor process {os.getpid()}",
        }
        for run_id, message in cases.items():
            with pytest.raises(AttachError, match=message):
                await executor.attach(run_id)
        assert store.get(watched.id).status == "RUNNING"


def test_the_cli_says_why_a_run_cannot_be_attached_to(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "LUTE_ASYNC_DB": os.fspath(tmp_path / "runs.db")}
    done = subprocess.run([*CLI, "attach", "0123abcd"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "no run with id '0123abcd'" in done.stderr and "Traceback" not in done.stderr


# -- against the cluster ----------------------------------------------------------------

SENDER = """
    import os, socket, sys
    from lute_async.task import Reporter

    def gate(message):
        s = socket.socket(socket.AF_UNIX)
        s.connect({gate!r})
        s.sendall(message.encode() + b"\\n")
        s.recv(1)
        s.close()

    with Reporter.connect(required=True) as report:
        report.started()
        gate(os.environ["SLURM_JOB_ID"])  # the test kills the executor meanwhile
        for i in range({count}):
            report.emit("n", {{"i": i}})
        report.flush()
        gate("sent")  # the test attaches meanwhile
        report.emit("after", {{"live": True}})
        report.result({{"sent": {count}}})
"""


async def _gate(listener: Any) -> tuple[str, Any]:
    """The next gate message of the job and its connection (released with a byte)."""
    stream = await listener.accept()
    received = b""
    while not received.endswith(b"\n"):
        received += await stream.receive()
    return received.decode().strip(), stream


@pytest.mark.slurm
async def test_an_executor_killed_mid_job_loses_none_of_1000_messages(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    gate = tmp_path / "gate.sock"
    task = tmp_path / "sender.py"
    task.write_text(textwrap.dedent(SENDER.format(gate=os.fspath(gate), count=1000)))
    config = tmp_path / "tasks.toml"
    config.write_text(
        f'[tasks.sender]\ncommand = ["{PYTHON}", "{task}"]\nlauncher = {{ kind = "slurm" }}\n'
    )
    db = tmp_path / "runs.db"
    env = {**os.environ, "LUTE_ASYNC_DB": os.fspath(db)}
    seen: list[int] = []
    events: list[str] = []
    async with await anyio.create_unix_listener(gate) as listener:
        with anyio.fail_after(120):  # a hang guard
            executor = await anyio.open_process(
                [*CLI, "run", "sender", "--config", os.fspath(config)], env=env
            )
            job_id, first = await _gate(listener)
            executor.kill()  # SIGKILL: no clean-up, the job goes on
            await executor.wait()
            await first.send(b"!")  # the job now sends its 1,000 messages to nobody
            sent, second = await _gate(listener)
            assert sent == "sent"
            with RecordStore(db) as store:
                (lost,) = store.query(name="sender")
            assert (lost.status, lost.slurm_job_id) == ("LOST", job_id)

            async def released(event: Any) -> None:
                seen.append(event.data["i"])
                if len(seen) == 1:
                    await second.send(b"!")  # attached to the live job: let it finish

            hooks = {"n": released, "*": lambda event: events.append(event.name)}
            async with Executor(db=db) as attaching:
                record = await attaching.attach(lost.id[:8], hooks=hooks)
    assert seen == list(range(1000))
    assert record.status == "COMPLETED", record.error
    assert record.id == lost.id and record.result == {"payload": {"sent": 1000}, "summary": None}
    assert record.error is None and record.exit_code == 0
    assert events.count("after") == 1 and events[-1] == "done" and events.count("done") == 1
    assert record.started_at is not None and record.ended_at is not None
    assert lost.started_at is None or record.started_at == lost.started_at  # the first start
    (attached,) = record.extra["attached"]
    assert attached["was"] == "LOST" and attached["error"]["type"] == "ExecutorLost"
    spool = record.extra["spooled"]
    assert (spool["files"], spool["messages"]) == (1, 1002)  # n x 1000, after, result
    (spooled,) = Path(spool["directory"]).iterdir()
    assert stat.S_IMODE(spooled.stat().st_mode) == 0o600
    assert b"secret" not in spooled.read_bytes()  # no hello, no secret, is ever spooled
    with RecordStore(db) as store:
        assert store.get(lost.id).status == "COMPLETED"


@pytest.mark.slurm
async def test_lute_async_attach_settles_a_run_whose_job_ended_meanwhile(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    gate = tmp_path / "gate.sock"
    task = tmp_path / "sender.py"
    task.write_text(textwrap.dedent(SENDER.format(gate=os.fspath(gate), count=3)))
    config = tmp_path / "tasks.toml"
    config.write_text(
        f'[tasks.sender]\ncommand = ["{PYTHON}", "{task}"]\nlauncher = {{ kind = "slurm" }}\n'
    )
    env = {**os.environ, "LUTE_ASYNC_DB": os.fspath(tmp_path / "runs.db")}
    async with await anyio.create_unix_listener(gate) as listener:
        with anyio.fail_after(120):  # a hang guard
            executor = await anyio.open_process(
                [*CLI, "run", "sender", "--config", os.fspath(config)], env=env
            )
            job_id, first = await _gate(listener)
            executor.kill()
            await executor.wait()
            await first.send(b"!")
            _, second = await _gate(listener)
            await second.send(b"!")
    ended = await anyio.run_process(["srun", f"--dependency=afterany:{job_id}", "true"])
    assert ended.returncode == 0
    with RecordStore(tmp_path / "runs.db") as store:
        (lost,) = store.query(name="sender")
    done = await anyio.run_process([*CLI, "attach", lost.id], env=env, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert [line.split()[2] for line in out.splitlines() if " sender n " in line] == ["n"] * 3
    assert "COMPLETED" in out and "result" in out
    with RecordStore(tmp_path / "runs.db") as store:
        assert store.get(lost.id).status == "COMPLETED"


SPOOLING = """
    import os
    from lute_async.messages import encode
    from lute_async.task import Reporter
    from lute_async.task.spool import open_spool

    with Reporter.connect(required=True) as report:
        report.emit("live", {"over": "tcp"})
        # What a reporter whose connection broke writes (tests above check the reporter).
        spool = open_spool(os.environ, os.environ["LUTE_ASYNC_RUN"], os.getpid(), 0)
        frames = [encode({"sig": "late", "seq": n, "ts": 1.0, "data": n}) for n in (5, 6, 7)]
        spool.write(b"".join(frames))
        spool.close()
"""


@pytest.mark.slurm
async def test_a_live_executor_reads_what_its_job_spooled_before_the_job_ends(
    slurm_cluster: SlurmCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    from lute_async import Slurm

    seen: list[tuple[str, Any, str]] = []
    hooks = {
        event: lambda e: seen.append((e.name, e.data, e.message.source))
        for event in ("live", "late", "done")
    }
    record = await executor.run(script(SPOOLING), launcher=Slurm(tcp_host="127.0.0.1"), hooks=hooks)
    assert record.status == "COMPLETED", record.error
    assert seen == [
        ("live", {"over": "tcp"}, "tcp"),
        ("late", 5, "spool"),
        ("late", 6, "spool"),
        ("late", 7, "spool"),
        ("done", seen[-1][1], "executor"),
    ]
    assert {"kind": "spool", "follow": False} in record.communicators
