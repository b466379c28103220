"""The TCP communicator: a hello with a wrong secret is dropped and logged, the run goes on,
and the secret is never recorded."""

from __future__ import annotations

import json
from collections.abc import Callable

from lute_async import Executor
from lute_async.communicators.tcp import TcpCommunicator

FORGING_TASK = """
    import os, socket
    import msgpack
    from lute_async.task import Reporter
    from lute_async.task.handshake import read_nonce

    host, _, port = os.environ["LUTE_ASYNC_TCP"].rpartition(":")
    with socket.create_connection((host, int(port))) as intruder:
        read_nonce(intruder)  # the executor's challenge, ignored: an old (v1) task
        hello = {"v": 1, "run": os.environ["LUTE_ASYNC_RUN"], "pid": os.getpid(), "rank": None,
                 "secret": "not-the-secret"}
        forged = {"sig": "forged", "seq": 1, "ts": 0.0, "data": None}
        intruder.sendall(msgpack.packb(hello) + msgpack.packb(forged))
        intruder.recv(1)  # the executor closes the connection

    with Reporter.connect(prefer=("tcp",), required=True) as report:
        report.started()
        report.result({"ok": True})
"""


async def test_hello_with_a_wrong_secret_is_dropped_and_the_run_completes(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    fired: list[str] = []
    record = await executor.run(
        script(FORGING_TASK),
        communicators=("pipe", TcpCommunicator("127.0.0.1")),
        hooks={"*": lambda event: fired.append(event.name)},
    )
    assert record.status == "COMPLETED"
    assert record.result is not None and record.result["payload"] == {"ok": True}
    assert "forged" not in fired
    errors = record.extra["protocol_errors"]
    assert [e["source"] for e in errors] == ["tcp"]
    assert "wrong secret" in errors[0]["message"]


async def test_secret_is_not_in_the_record(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    task = script("""
        from lute_async.task import Reporter
        with Reporter.connect(prefer=("tcp",), required=True) as report:
            report.result(1)
    """)
    async with executor.start(task, communicators=(TcpCommunicator("127.0.0.1"),)) as run:
        secret = run._secret
    record = await run.wait()
    assert record.status == "COMPLETED"
    assert secret not in json.dumps(record.to_dict(), default=str)
