"""Wire limits against hostile peers, over real sockets: the first frame decoded within a hello's
small limits, deep data refused, floods of connections capped, the accept loop calm at the fd
limit, and a flood of protocol errors kept bounded."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest
from anyio.abc import SocketStream

import lute_async
from lute_async import Executor, error_budget
from lute_async.communicators import RunChannel, SocketCommunicator, TcpCommunicator
from lute_async.communicators.base import Batch, Communicator
from lute_async.communicators.bounds import MAX_DEPTH
from lute_async.communicators.listener import ListeningCommunicator
from lute_async.errors import ProtocolError
from lute_async.messages import Message
from lute_async.task.handshake import tcp_hello
from lute_async.wire import CHALLENGE_BYTES

RUN = "run-limits"
SECRET = "s3cret-s3cret-s3cret"
#: Where the lute_async under test lives, for the subprocess.
ROOT = Path(lute_async.__file__).resolve().parent.parent
#: A safety net so a regression fails instead of hanging; never what a test waits for.
GUARD = 60


def hello() -> bytes:
    return msgpack.packb({"v": 1, "run": RUN, "pid": os.getpid(), "rank": 0, "secret": SECRET})


def message(sig: str, seq: int, data: Any = None) -> bytes:
    return msgpack.packb({"sig": sig, "seq": seq, "ts": 1.5, "data": data})


def nested(depth: int) -> Any:
    data: Any = "bottom"
    for _ in range(depth):
        data = [data]
    return data


@dataclass
class Served:
    """A communicator serving one pretend run: what it delivered and what it reported."""

    communicator: ListeningCommunicator
    channel: RunChannel
    messages: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Set once ``errors`` holds ``wanted_errors`` errors.
    enough_errors: anyio.Event = field(default_factory=anyio.Event)
    wanted_errors: int = 1

    def error(self, source: str, conn: int, error: ProtocolError) -> None:
        self.errors.append(str(error))
        if len(self.errors) >= self.wanted_errors:
            self.enough_errors.set()

    async def connect(self) -> SocketStream:
        communicator = self.communicator
        if isinstance(communicator, TcpCommunicator):
            assert communicator.address is not None
            return await anyio.connect_tcp(*communicator.address)
        assert isinstance(communicator, SocketCommunicator) and communicator.path is not None
        return await anyio.connect_unix(communicator.path)

    async def hello(self, stream: SocketStream) -> bytes:
        """The hello for ``stream``: on TCP the answer to the executor's challenge (the v1
        hello, going nowhere, when the stream was closed at once)."""
        if not isinstance(self.communicator, TcpCommunicator):
            return hello()
        challenge = b""
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            while len(challenge) < CHALLENGE_BYTES:
                challenge += await stream.receive(CHALLENGE_BYTES - len(challenge))
            sender = {"run": RUN, "pid": os.getpid(), "rank": 0, "secret": SECRET}
            return msgpack.packb(tcp_hello(msgpack.unpackb(challenge)["nonce"], sender))
        return hello()


@asynccontextmanager
async def serving(communicator: ListeningCommunicator, **channel: Any) -> AsyncIterator[Served]:
    """Serve ``communicator`` until the block ends (the pretend task exits then), after which
    every message it delivered is in ``served.messages``."""
    send, receive = anyio.create_memory_object_stream[Batch](math.inf)
    served = Served(communicator, None)  # type: ignore[arg-type]  # set just below
    served.channel = RunChannel(
        RUN, SECRET, send, max_frame=1 << 24, on_protocol_error=served.error, **channel
    )
    await communicator.open(served.channel)
    exited = anyio.Event()
    try:
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(communicator.serve, exited)
                yield served
                exited.set()
    finally:
        await communicator.aclose()
    send.close()
    served.messages = [m async for batch in receive for m in batch]


async def hung_up(stream: SocketStream) -> bool:
    """True once the executor has closed ``stream`` (reads until end of stream)."""
    try:
        while await stream.receive():
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        pass
    return True


async def send_quietly(stream: SocketStream, data: bytes) -> None:
    """Send ``data`` unless the executor has hung up already."""
    with suppress(anyio.BrokenResourceError, ConnectionError):
        await stream.send(data)


async def test_a_huge_first_frame_is_refused_by_the_hello_limits_and_others_go_on() -> None:
    hostile = [
        b"\xdd" + (1_000_000).to_bytes(4, "big") + b"\x90" * 1_000_000,  # 1M empty arrays
        msgpack.packb({"v": 1, "run": RUN, "pad": "x" * 1000}),  # one long string
        msgpack.packb([["x" * 200] * 16] * 16),  # small items, 50 KiB in all
    ]
    async with serving(TcpCommunicator(host="127.0.0.1", hello_timeout=GUARD)) as served:
        served.wanted_errors = len(hostile)
        for payload in hostile:
            stream = await served.connect()
            await send_quietly(stream, payload)  # may be hung up on before the end
            assert await hung_up(stream)
            await stream.aclose()
        good = await served.connect()
        await good.send(await served.hello(good) + message("tick", 1) + message("tick", 2))
        await good.aclose()
    assert [m.seq for m in served.messages] == [1, 2]
    assert len(served.errors) == 3
    assert "exceeds max_array_len(16)" in served.errors[0]
    assert "exceeds max_str_len(512)" in served.errors[1]
    assert "frame larger than the 4096-byte limit before a hello" in served.errors[2]


async def test_message_data_nested_past_max_depth_closes_only_that_connection() -> None:
    async with serving(SocketCommunicator()) as served:
        deep = await served.connect()
        await deep.send(
            hello()
            + message("ok", 1, nested(MAX_DEPTH - 1))  # MAX_DEPTH levels with the "bottom"
            + message("ok", 2, {"a": [1.0, {"b": 2}]})
            + message("deep", 3, {"x": nested(MAX_DEPTH + 50)})
            + message("after", 4)
        )
        assert await hung_up(deep)
        await deep.aclose()
        # The slow path (first message of a connection) checks too.
        first = await served.connect()
        await first.send(hello() + message("deep", 1, nested(MAX_DEPTH * 5)))
        assert await hung_up(first)
        await first.aclose()
        good = await served.connect()
        await good.send(hello() + message("good", 1, nested(10)))
        await good.aclose()
    assert [m.sig for m in served.messages] == ["ok", "ok", "good"]
    assert served.messages[0].data == nested(MAX_DEPTH - 1)
    assert len(served.errors) == 2
    assert all(f"nested deeper than {MAX_DEPTH} levels" in e for e in served.errors)


async def test_connections_past_the_pending_hello_cap_are_closed_at_once() -> None:
    cap, extra = 64, 3  # the default cap
    tcp = TcpCommunicator(host="127.0.0.1", hello_timeout=GUARD)
    async with serving(tcp) as served:
        served.wanted_errors = extra
        streams = [await served.connect() for _ in range(cap + extra)]
        await served.enough_errors.wait()  # the refused ones are closed as they are reported
        for seq, stream in enumerate(streams, 1):
            await send_quietly(stream, await served.hello(stream) + message("tick", 1, seq))
        for stream in streams:
            await stream.aclose()
    assert served.errors == [f"{cap} connections already wait for their hello"] * extra
    assert len(served.messages) == cap


async def test_connections_past_the_run_cap_are_closed_at_once() -> None:
    async with serving(SocketCommunicator(), max_connections=4) as served:
        served.wanted_errors = 2
        streams = []
        for _ in range(6):
            stream = await served.connect()
            await send_quietly(stream, hello() + message("tick", 1))
            streams.append(stream)
        await served.enough_errors.wait()
        for stream in streams:
            await stream.aclose()
    assert served.errors == ["the run already has 4 connections open"] * 2
    assert len(served.messages) == 4


class LogRecorder:
    """Stands in for the logger: keeps each warning's event and fields."""

    def __init__(self) -> None:
        self.warnings: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append({"event": event, **fields})


async def test_a_flood_of_bad_connections_keeps_the_first_errors_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = LogRecorder()
    monkeypatch.setattr(error_budget, "get_logger", lambda: recorder)
    async with serving(SocketCommunicator()) as served:
        for _ in range(150):
            stream = await served.connect()
            await stream.send(b"\xc1")  # a byte msgpack never uses
            assert await hung_up(stream)
            await stream.aclose()
    assert len(served.errors) == 20
    assert served.channel.error_log.summary() == {
        "total": 150,
        "kept": 20,
        "dropped": {"ProtocolError": 130},
    }
    dropped = [e for e in recorder.warnings if e["event"] == "protocol_errors_dropped"]
    assert [e["dropped"] for e in dropped] == [1, 10, 100]


async def test_a_task_flooding_bad_connections_leaves_a_bounded_record(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os, socket
        from lute_async.task import Reporter
        for _ in range(100):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(os.environ["LUTE_ASYNC_SOCKET"])
                s.sendall(b"\\xc1")
                s.recv(1)  # until the executor hangs up
        with Reporter.connect(prefer=("pipe",)) as report:
            report.result("survived")
        """
    )
    communicators: list[str | Communicator] = ["pipe", "socket"]
    record = await executor.run(argv, communicators=communicators)
    assert record.status == "COMPLETED"
    assert record.result == {"payload": "survived", "summary": None}
    assert len(record.extra["protocol_errors"]) == 20


EMFILE_SCRIPT = """
import anyio, json, math, os, resource, socket, sys
import msgpack, structlog
from lute_async.communicators import RunChannel, TcpCommunicator
from lute_async.task.handshake import tcp_hello
from lute_async.wire import CHALLENGE_BYTES

SENDER = {"run": "r", "pid": os.getpid(), "rank": 0, "secret": "s"}

async def answer(client):
    # Answer the challenge the executor sends once it has accepted the client.
    challenge = b""
    while len(challenge) < CHALLENGE_BYTES:
        await anyio.wait_readable(client)
        chunk = client.recv(CHALLENGE_BYTES - len(challenge))
        if not chunk:
            raise ConnectionError("closed before the challenge")
        challenge += chunk
    hello = tcp_hello(msgpack.unpackb(challenge)["nonce"], SENDER)
    client.sendall(msgpack.packb(hello) + msgpack.packb({"sig": "t", "seq": 1, "ts": 1.0}))

async def main():
    send, receive = anyio.create_memory_object_stream(math.inf)
    channel = RunChannel("r", "s", send, max_frame=1 << 20, on_protocol_error=print)
    tcp = TcpCommunicator(host="127.0.0.1")
    await tcp.open(channel)
    exited = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(tcp.serve, exited)
        clients = [socket.socket() for _ in range(3)]  # made while descriptors are left
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest = os.dup(0)
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))  # no new fd from now on
        for client in clients:
            client.connect(tcp.address)  # completed by the kernel; accept() gets EMFILE
        for _ in range(2000):  # event-loop turns at the fd limit: a busy accept loop spins
            await anyio.lowlevel.checkpoint()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for client in clients:
            tg.start_soon(answer, client)
        got = 0
        async for batch in receive:  # the backed-off accept loop takes them once it can
            got += len(batch)
            if got == len(clients):
                break
        for client in clients:
            client.close()
        exited.set()
    return got

with structlog.testing.capture_logs() as logs:
    got = anyio.run(main)
print(json.dumps({"got": got, "events": [e["event"] for e in logs],
                  "failures": [e.get("failed_accepts") for e in logs
                               if e["event"] == "accept_failures"]}))
"""


def test_at_the_fd_limit_the_accept_loop_backs_off_and_logs_once_per_episode() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EMFILE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=GUARD,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.fspath(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["got"] == 3
    assert outcome["events"].count("accept_failed") == 1
    assert outcome["events"].count("accept_failures") == 1
    assert outcome["failures"][0] >= 1
