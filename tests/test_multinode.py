"""Across nodes for real: the two-node cluster of ``scripts/slurm-cluster`` (a network, UTS and
mount namespace per node, each its own hostname and address). MPI ranks on both nodes report
and stream their stdout, the TCP communicator and its secret work between nodes, the executor
runs as a batch job on one node following a task on the other, and a node that goes down ends
its run with a record naming the node failure, or requeues a ``requeue=True`` job to the other
node. Also which one address the TCP listener binds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from test_slurm import WAITING_TASK

from lute_async import Executor, RecordStore
from lute_async.communicators import TcpCommunicator
from lute_async.communicators.address import ENV_TCP_HOST, interface_address, listen_address
from lute_async.errors import LaunchError
from lute_async.launchers.slurm import OUTPUT_STREAM, Slurm, submit_executor

if TYPE_CHECKING:
    from multinode_support import MultiNodeCluster

pytest_plugins = ["multinode_support"]


#: A task that says where it runs: every rank emits its rank and host and prints a line.
WHERE = """
    import socket, sys
    from lute_async.task import Reporter
    host = socket.gethostname()
    with Reporter.connect(required=True) as report:
        report.started()
        print(f"rank {report.rank} on {host}", flush=True)
        report.emit("where", {"rank": report.rank, "host": host})
        report.result({"host": host})
"""


# -- the address the listener binds (no cluster) -------------------------------------------


def test_the_listener_address_comes_from_tcp_host_then_the_variable_then_the_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_TCP_HOST, "lo")  # an interface name: its IPv4 address
    assert listen_address(None) == ("127.0.0.1", "LUTE_ASYNC_TCP_HOST='lo'")
    assert listen_address("localhost")[0] in ("127.0.0.1", "::1")  # the argument wins
    assert listen_address("[::1]")[0] == "::1"
    monkeypatch.delenv(ENV_TCP_HOST)
    assert listen_address(None)[0] == socket.gethostbyname(socket.gethostname())
    assert interface_address("lo") == "127.0.0.1"
    assert interface_address("no-such-if0") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0", "not every interface"),
        ("::", "not every interface"),
        ("", "not every interface"),
        ("no-such-host.invalid", "neither an address, an interface"),
    ],
)
def test_a_tcp_host_giving_no_single_address_is_a_launch_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv(ENV_TCP_HOST, value)
    with pytest.raises(LaunchError, match=expected) as caught:
        listen_address(None)
    assert f"LUTE_ASYNC_TCP_HOST={value!r}" in str(caught.value)
    with pytest.raises(LaunchError, match=f"tcp_host={value!r}"):
        listen_address(value)


async def test_a_run_whose_tcp_address_is_not_this_hosts_fails_with_a_record_saying_so(
    executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TCP_HOST, "192.0.2.254")  # TEST-NET-1: no interface holds it
    record = await executor.run([sys.executable, "-c", "pass"], communicators=["tcp"])
    assert record.status == "FAILED"
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert "LUTE_ASYNC_TCP_HOST='192.0.2.254'" in record.error["message"]
    assert "192.0.2.254 port 0" in record.error["message"]


async def test_the_listener_binds_the_one_chosen_address(
    executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TCP_HOST, "lo")
    tcp = TcpCommunicator()
    record = await executor.run([sys.executable, "-c", "pass"], communicators=[tcp])
    assert record.status == "COMPLETED"
    assert record.communicators[0]["host"] == "127.0.0.1"


# -- on the two-node cluster ----------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.multinode
@pytest.mark.mpi
async def test_mpi_ranks_on_both_nodes_report_tagged_with_rank_and_host_and_stream_stdout(
    multinode: MultiNodeCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # mpi4py's allgather proves the ranks talk MPI to each other across the nodes.
    task = script(
        WHERE.replace(
            "report.result({",
            "from mpi4py import MPI\n"
            "        report.emit('world', {'hosts': MPI.COMM_WORLD.allgather(host)})\n"
            "        report.result({",
        )
    )
    launcher = Slurm(nodes=2, ntasks=2, tcp_host=multinode.head_interface)
    lines: list[str] = []
    executor.on("log", lambda e: lines.append(f"{e.data['stream']}: {e.data['message']}"))
    with anyio.fail_after(150):  # a hang guard, not a timing assertion
        async with executor.start(task, name="mpi2", launcher=launcher) as run:
            messages = [m async for m in run.messages()]
    record = run.record
    assert record.status == "COMPLETED", record.error
    where = {(m.rank, m.data["host"]) for m in messages if m.sig == "where"}
    assert where == {(0, "node1"), (1, "node2")}
    assert {m.source for m in messages if m.sig == "where"} == {"tcp"}
    worlds = [m.data["hosts"] for m in messages if m.sig == "world"]
    assert worlds == [["node1", "node2"]] * 2
    assert record.communicators[0]["host"] == multinode.head_address
    assert record.extra["node_list"] == "node[1-2]"
    assert sorted(line for line in lines if line.startswith(OUTPUT_STREAM)) == [
        f"{OUTPUT_STREAM}: rank 0 on node1",
        f"{OUTPUT_STREAM}: rank 1 on node2",
    ]


#: Run on node1 by the test: an executor whose task runs on node2, then a line of JSON.
EXECUTOR_ON_NODE1 = """
    import asyncio, json, socket, sys
    from lute_async import Executor
    from lute_async.launchers.slurm import Slurm

    async def main():
        async with Executor(db=sys.argv[1], workdir=sys.argv[2]) as executor:
            launcher = Slurm(extra_sbatch=["--nodelist=node2"])  # the address: node1's name
            async with executor.start(sys.argv[3:], name="cross", launcher=launcher) as run:
                where = [m.data async for m in run.messages() if m.sig == "where"]
        record = run.record
        print(json.dumps({
            "executor_host": socket.gethostname(), "where": where, "status": record.status,
            "communicators": record.communicators, "result": record.result,
            "protocol_errors": record.extra.get("protocol_errors", []),
        }))

    asyncio.run(main())
"""

#: Before it reports, the task (on node2) knocks with a wrong secret: the executor must drop it.
WRONG_SECRET_FIRST = """
    import os, msgpack, socket
    from lute_async.task.handshake import read_nonce, tcp_hello
    host, _, port = os.environ["LUTE_ASYNC_TCP"].rpartition(":")
    knock = socket.create_connection((host, int(port)))
    hello = tcp_hello(read_nonce(knock), {"run": os.environ["LUTE_ASYNC_RUN"],
                      "pid": os.getpid(), "rank": None, "secret": "not-the-secret"})
    knock.sendall(msgpack.packb(hello))
    assert knock.recv(1) == b"", "the executor took a wrong secret"
    knock.close()
"""


@pytest.mark.slurm
@pytest.mark.multinode
async def test_a_job_on_node2_reports_over_tcp_to_an_executor_on_node1_which_refuses_a_wrong_secret(
    multinode: MultiNodeCluster, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    task = script(textwrap.dedent(WRONG_SECRET_FIRST) + textwrap.dedent(WHERE))
    driver = script(EXECUTOR_ON_NODE1)
    argv = multinode.on_node("node1", [*driver, f"{tmp_path}/runs.db", f"{tmp_path}/w", *task])
    with anyio.fail_after(150):  # a hang guard
        done = await anyio.run_process(argv, check=False)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout.decode().splitlines()[-1])
    assert report["executor_host"] == "node1"
    assert report["status"] == "COMPLETED", report
    assert report["where"] == [{"rank": 0, "host": "node2"}]
    # The listener was on node1's cluster address only (its name resolves to it there).
    assert report["communicators"][0]["host"] == multinode.nodes["node1"]
    (refused,) = report["protocol_errors"]
    assert "wrong secret" in refused["message"] and "not-the-secret" not in json.dumps(report)


@pytest.mark.slurm
@pytest.mark.multinode
async def test_the_executor_as_a_batch_job_on_node1_runs_its_task_on_node2(
    multinode: MultiNodeCluster, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    (task,) = script(WHERE)[1:]
    config = tmp_path / "tasks.toml"
    config.write_text(
        f'[tasks.where]\ncommand = ["{sys.executable}", "{task}"]\n'
        'launcher = { kind = "slurm", extra_sbatch = ["--nodelist=node2"] }\n'
    )
    db = tmp_path / "runs.db"
    output = tmp_path / "executor.out"
    job_id = await anyio.to_thread.run_sync(
        lambda: submit_executor("where", config, ["--nodelist=node1", f"--output={output}"], {}, db)
    )
    # Waits for the executor's job through the scheduler: a step that may start only after it.
    with anyio.fail_after(150):  # a hang guard
        done = await anyio.run_process(
            ["srun", f"--dependency=afterany:{job_id}", "true"], check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    assert "JobState=COMPLETED" in multinode.scontrol("show", "job", job_id), output.read_text()
    assert "NodeList=node1" in multinode.scontrol("show", "job", job_id)
    with RecordStore(db) as store:
        (record,) = store.query(name="where")
    assert record.status == "COMPLETED", output.read_text()
    assert record.result is not None and record.result["payload"] == {"host": "node2"}
    assert record.extra["node_list"] == "node2"
    assert record.launcher["host"] == "node1"  # where the executor ran
    assert record.communicators[0]["host"] == multinode.nodes["node1"]


@pytest.mark.slurm
@pytest.mark.multinode
async def test_a_node_taken_down_under_its_job_ends_the_run_with_a_record_naming_the_node_failure(
    multinode: MultiNodeCluster, executor: Executor, script: Callable[[str], list[str]]
) -> None:
    task = script(WAITING_TASK)  # emits "ready", then sleeps
    # --no-requeue: SLURM would otherwise requeue a batch job whose node failed.
    launcher = Slurm(
        extra_sbatch=["--nodelist=node2", "--no-requeue"], tcp_host=multinode.head_interface
    )
    events: list[str] = []
    try:
        with anyio.fail_after(150):  # a hang guard
            async with executor.start(task, name="doomed", launcher=launcher) as run:
                async for message in run.messages():
                    events.append(message.sig)
                    if message.sig == "ready":
                        multinode.scontrol(
                            "update", "nodename=node2", "state=down", "reason=lute-async test"
                        )
    finally:  # ReturnToService=2 brings the node back when its slurmd answers; make sure
        if "State=DOWN" in multinode.scontrol("show", "node", "node2"):
            multinode.scontrol("update", "nodename=node2", "state=resume")
    record = run.record
    assert events[:3] == ["queued", "started", "ready"] and events[-1] == "failed"
    assert record.status == "FAILED"
    assert record.extra["slurm_state"] == "NODE_FAIL"
    assert record.error is not None and record.error["type"] == "NodeFail"
    assert record.extra["node_list"] == "node2"


#: Says where each attempt runs, then waits for the file the test writes (argv[1]).
WHERE_THEN_WAIT = """
    import os, socket, sys, time
    from pathlib import Path
    from lute_async.task import Reporter
    go, host = Path(sys.argv[1]), socket.gethostname()
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    with Reporter.connect(required=True) as report:
        report.started()
        report.emit("where", {"host": host, "attempt": attempt, "job": os.environ["SLURM_JOB_ID"]})
        while not go.exists():  # the first attempt's node goes down meanwhile
            time.sleep(0.1)
        report.result({"host": host, "attempt": attempt})
"""


@pytest.mark.slurm
@pytest.mark.multinode
async def test_a_node_taken_down_under_a_requeueable_job_requeues_it_to_the_other_node(
    multinode: MultiNodeCluster,
    executor: Executor,
    script: Callable[[str], list[str]],
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    task = [*script(WHERE_THEN_WAIT), os.fspath(go)]
    launcher = Slurm(
        extra_sbatch=["--nodelist=node2"], requeue=True, tcp_host=multinode.head_interface
    )
    requeued: list[dict[str, Any]] = []
    executor.on("requeued", lambda event: requeued.append(event.data))
    seen: list[tuple[str, Any]] = []
    try:
        with anyio.fail_after(150):  # a hang guard, not a timing assertion
            async with executor.start(task, name="moved", launcher=launcher) as run:
                async for message in run.messages():
                    if message.sig in ("queued", "started", "requeued", "where", "done"):
                        seen.append((message.sig, message.data))
                    if message.sig == "where" and message.data["host"] == "node2":
                        multinode.scontrol(
                            "update", "nodename=node2", "state=down", "reason=lute-async test"
                        )
                    elif message.sig == "requeued":
                        # Off the downed node (ReturnToService may bring it back), and started
                        # in 2 s rather than after SLURM's ~2 minute hold of a requeued job.
                        job = f"JobId={message.data['slurm_job_id']}"
                        multinode.scontrol("update", job, "ReqNodeList=node1", "StartTime=now+2")
                    elif message.sig == "where":
                        go.write_text("")
    finally:  # the other tests want node2 back
        if "State=DOWN" in multinode.scontrol("show", "node", "node2"):
            multinode.scontrol("update", "nodename=node2", "state=resume")
    record = run.record
    assert record.status == "COMPLETED", (record.error, seen)
    assert [event for event, _ in seen] == [
        "queued",
        "started",
        "where",
        "requeued",
        "where",
        "done",
    ]
    hosts = [(data["host"], data["attempt"]) for event, data in seen if event == "where"]
    assert hosts == [("node2", 0), ("node1", 1)]
    (data,) = requeued
    # (its node_list is None when the follower's looks missed the first attempt running)
    assert (data["requeues"], data["slurm_job_id"]) == (1, record.slurm_job_id)
    assert record.extra["requeues"] == 1
    assert record.extra["node_list"] == "node1" and record.host == "node1"
    assert record.result is not None and record.result["payload"] == {"host": "node1", "attempt": 1}


@pytest.mark.slurm
@pytest.mark.multinode
def test_a_psij_job_asking_for_two_nodes_runs_its_processes_on_both(
    multinode: MultiNodeCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    psij = pytest.importorskip("psij", reason="psij-python is not installed (the [psij] extra)")
    monkeypatch.setenv(ENV_TCP_HOST, multinode.head_interface)  # where the ranks reach back
    db, out = tmp_path / "runs.db", tmp_path / "out.txt"
    executor = psij.JobExecutor.get_instance("lute-async-slurm", url=os.fspath(db))
    job = psij.Job(
        psij.JobSpec(
            "/bin/bash",
            ["-c", 'echo "$SLURM_PROCID $(hostname) $(wc -l <"$PSIJ_NODEFILE")"'],
            stdout_path=out,
            launcher="multiple",
            resources=psij.ResourceSpecV1(node_count=2, processes_per_node=2),
        )
    )
    executor.submit(job)
    status = job.wait(timeout=timedelta(seconds=150))
    assert status is not None and status.state == psij.JobState.COMPLETED, status
    lines = sorted(line.split() for line in out.read_text().splitlines())
    # Block distribution: ranks 0 and 1 on node1; each node file lists both nodes twice.
    assert lines == [[str(rank), f"node{rank // 2 + 1}", "4"] for rank in range(4)]
    with RecordStore(db) as store:
        record = store.get(job.native_id)
    assert record.status == "COMPLETED" and record.extra["node_list"] == "node[1-2]"
    assert record.communicators[0]["host"] == multinode.head_address
