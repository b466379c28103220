"""The TCP challenge-response hello (protocol v2) over real sockets on 127.0.0.1: the executor
sends a fresh nonce first, the hello answers it with HMAC-SHA256(secret, nonce || sender);
a wrong secret, a replayed hello, a v1 hello and a hello carrying the secret are refused, every
other connection goes on, and the secret never crosses the network."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import msgpack
from anyio.abc import SocketStream

from lute_async import Event, Executor
from lute_async.communicators import RunChannel, TcpCommunicator
from lute_async.communicators.base import Batch, FrameConnection
from lute_async.communicators.challenge import send_challenge
from lute_async.communicators.pump import pump_connection
from lute_async.errors import ProtocolError
from lute_async.messages import Message
from lute_async.task.handshake import read_nonce, tcp_hello
from lute_async.wire import CHALLENGE_BYTES, hello_mac

RUN = "run-handshake"
SECRET = "handshake-secret-0123456789abcdef"
#: A safety net so a regression fails instead of hanging; never what a test waits for.
GUARD = 60


def message(sig: str, seq: int, data: Any = None) -> bytes:
    return msgpack.packb({"sig": sig, "seq": seq, "ts": 1.5, "data": data})


@dataclass
class Served:
    """A TcpCommunicator serving one pretend run: what it delivered and what it reported."""

    tcp: TcpCommunicator
    messages: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def error(self, source: str, conn: int, error: ProtocolError) -> None:
        self.errors.append(str(error))

    async def connect(self) -> tuple[SocketStream, bytes]:
        """A new connection and the nonce of the challenge it was sent."""
        assert self.tcp.address is not None
        stream = await anyio.connect_tcp(*self.tcp.address)
        challenge = b""
        while len(challenge) < CHALLENGE_BYTES:
            challenge += await stream.receive(CHALLENGE_BYTES - len(challenge))
        frame = msgpack.unpackb(challenge)
        assert frame.keys() == {"v", "nonce"} and frame["v"] == 2
        return stream, frame["nonce"]


@asynccontextmanager
async def serving() -> AsyncIterator[Served]:
    """Serve TCP until the block ends; then every delivered message is in ``messages``."""
    send, receive = anyio.create_memory_object_stream[Batch](math.inf)
    served = Served(TcpCommunicator(host="127.0.0.1", hello_timeout=GUARD))
    channel = RunChannel(RUN, SECRET, send, max_frame=1 << 20, on_protocol_error=served.error)
    await served.tcp.open(channel)
    exited = anyio.Event()
    try:
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(served.tcp.serve, exited)
                yield served
                exited.set()
    finally:
        await served.tcp.aclose()
    send.close()
    served.messages = [m async for batch in receive for m in batch]


def v2_hello(nonce: bytes, secret: str = SECRET, pid: int = 7, rank: int | None = 0) -> bytes:
    return msgpack.packb(tcp_hello(nonce, {"run": RUN, "pid": pid, "rank": rank, "secret": secret}))


async def refused(stream: SocketStream, frames: bytes) -> bool:
    """Send ``frames``; True once the executor has hung up (read until end of stream)."""
    with suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        await stream.send(frames)
        while await stream.receive():
            pass
    await stream.aclose()
    return True


async def test_each_connection_gets_a_fresh_16_byte_nonce_and_a_right_mac_is_delivered() -> None:
    async with serving() as served:
        first, nonce_1 = await served.connect()
        second, nonce_2 = await served.connect()
        assert len(nonce_1) == len(nonce_2) == 16 and nonce_1 != nonce_2
        await first.send(v2_hello(nonce_1, pid=11, rank=1) + message("tick", 1))
        await second.send(v2_hello(nonce_2, pid=12, rank=None) + message("tick", 1))
        await first.aclose()
        await second.aclose()
    assert sorted((m.pid, m.rank) for m in served.messages) == [(11, 1), (12, None)]
    assert served.errors == []


async def test_a_captured_hello_replayed_on_a_new_connection_is_refused() -> None:
    async with serving() as served:
        victim, nonce = await served.connect()
        captured = v2_hello(nonce)
        await victim.send(captured + message("real", 1))
        attacker, _ = await served.connect()
        assert await refused(attacker, captured + message("forged", 1))
        await victim.send(message("real", 2))
        await victim.aclose()
    assert [(m.sig, m.seq) for m in served.messages] == [("real", 1), ("real", 2)]
    assert len(served.errors) == 1
    assert "wrong MAC" in served.errors[0] and "replayed" in served.errors[0]


async def test_a_wrong_secret_is_refused_and_the_next_connection_goes_on() -> None:
    async with serving() as served:
        wrong, nonce = await served.connect()
        assert await refused(wrong, v2_hello(nonce, secret="guessed") + message("forged", 1))
        good, nonce = await served.connect()
        await good.send(v2_hello(nonce) + message("good", 1))
        await good.aclose()
    assert [m.sig for m in served.messages] == ["good"]
    assert len(served.errors) == 1 and "wrong MAC" in served.errors[0]


async def test_a_mac_for_another_sender_is_refused() -> None:
    async with serving() as served:
        stream, nonce = await served.connect()
        hello = msgpack.unpackb(v2_hello(nonce, rank=0))
        assert await refused(stream, msgpack.packb({**hello, "rank": 1}) + message("x", 1))
        stream, _ = await served.connect()
        assert await refused(stream, msgpack.packb({**hello, "mac": b"short"}))
    assert served.messages == []
    assert "wrong MAC" in served.errors[0]
    assert "no 32-byte MAC" in served.errors[1]


async def test_a_v1_hello_over_tcp_is_refused_naming_the_version() -> None:
    v1 = {"v": 1, "run": RUN, "pid": 7, "rank": 0}
    async with serving() as served:
        for secret in (SECRET, "guessed", None):
            stream, _ = await served.connect()
            assert await refused(stream, msgpack.packb({**v1, "secret": secret}) + message("x", 1))
    assert served.messages == []
    assert len(served.errors) == 3
    for error in served.errors:
        assert "protocol v1 hello refused on TCP" in error and "protocol v2 hello" in error
        assert SECRET not in error and "guessed" not in error
    assert "secret in plain text" in served.errors[0]
    assert "wrong secret" in served.errors[1] and "no secret" in served.errors[2]


async def test_a_v2_hello_carrying_the_secret_or_another_version_is_refused() -> None:
    async with serving() as served:
        stream, nonce = await served.connect()
        hello = msgpack.unpackb(v2_hello(nonce))
        assert await refused(stream, msgpack.packb({**hello, "secret": SECRET}))
        stream, nonce = await served.connect()
        assert await refused(stream, msgpack.packb({**hello, "v": 3, "secret": SECRET}))
    assert served.messages == []
    assert "carries a MAC, never the secret" in served.errors[0]
    assert "expected a protocol v2 hello frame on TCP" in served.errors[1]
    assert SECRET not in json.dumps(served.errors)


async def test_the_challenge_send_to_a_peer_that_never_reads_is_bounded_by_hello_timeout() -> None:
    send, receive = anyio.create_memory_object_stream[Batch](math.inf)
    errors: list[str] = []
    channel = RunChannel(
        RUN,
        SECRET,
        send,
        max_frame=1 << 20,
        on_protocol_error=lambda s, c, e: errors.append(str(e)),
    )
    executor_end, peer = socket.socketpair()
    with executor_end, peer:
        executor_end.setblocking(False)
        for size in (65536, 1):  # the peer never reads: fill its buffer to the last byte
            with suppress(BlockingIOError):
                while True:
                    executor_end.send(b"x" * size)
        parser = FrameConnection(channel, "tcp", require_secret=True)
        with anyio.fail_after(GUARD):
            await pump_connection(
                never_called,  # the challenge's send blocks until the timeout
                parser,
                send,
                hello_timeout=0.2,
                greet=partial(send_challenge, executor_end, b"n" * 16),
            )
    assert errors == ["no hello frame within 0.2 s; connection dropped"]
    send.close()
    assert [b async for b in receive] == []


async def never_called() -> bytes:
    raise AssertionError("read before the challenge was sent")


class Relay:
    """A TCP relay between a task and the executor keeping every byte it forwards. Its second
    connection asks it to replay the first's hello on a connection of its own to the executor;
    it hangs up on the asker once the executor has hung up on the replay."""

    def __init__(self, upstream: TcpCommunicator) -> None:
        self.upstream = upstream
        self.from_task = bytearray()
        self.to_task = bytearray()
        self.connections = 0
        self.hello_captured = anyio.Event()
        self.replay_refused = False

    async def handle(self, client: SocketStream) -> None:
        self.connections += 1
        async with client:
            if self.connections == 1:
                await self._forward(client)
            else:
                await self._replay()

    async def _forward(self, client: SocketStream) -> None:
        assert self.upstream.address is not None
        executor = await anyio.connect_tcp(*self.upstream.address)
        async with executor, anyio.create_task_group() as tg:
            tg.start_soon(self._copy, client, executor, self.from_task)
            tg.start_soon(self._copy, executor, client, self.to_task)

    async def _copy(self, source: SocketStream, sink: SocketStream, kept: bytearray) -> None:
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            while True:
                chunk = await source.receive()
                kept += chunk
                if kept is self.from_task and self._first_frame() is not None:
                    self.hello_captured.set()
                await sink.send(chunk)
        with suppress(anyio.BrokenResourceError, ConnectionError, OSError):
            await sink.send_eof()

    def _first_frame(self) -> bytes | None:
        unpacker = msgpack.Unpacker()
        unpacker.feed(bytes(self.from_task))
        try:
            unpacker.unpack()
        except msgpack.OutOfData:
            return None
        return bytes(self.from_task[: unpacker.tell()])

    async def _replay(self) -> None:
        await self.hello_captured.wait()
        captured = self._first_frame()
        assert captured is not None and self.upstream.address is not None
        replay = await anyio.connect_tcp(*self.upstream.address)
        forged = message("forged", 1, "replayed")
        self.replay_refused = await refused(replay, captured + forged)


RELAYED_TASK = """
    import os, socket, sys
    from lute_async.task import Reporter
    relay = os.environ["LUTE_ASYNC_TCP"] = sys.argv[1]  # report through the test's relay
    with Reporter.connect(prefer=("tcp",), required=True) as report:
        report.started({"n": 1})
        report.log("through the relay")
        report.progress(0.5)
        report.emit("custom", [1, 2, 3])
        report.result({"ok": True})
    host, _, port = relay.rpartition(":")
    with socket.create_connection((host, int(port))) as ask:  # replay my hello now, please
        ask.recv(1)  # until the relay hangs up: the executor has refused the replay
"""


async def test_a_task_over_tcp_reports_everything_and_its_secret_never_crosses_the_wire(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    tcp = TcpCommunicator(host="127.0.0.1")
    relay = Relay(tcp)
    fired: list[tuple[str, Any]] = []

    def fire(event: Event) -> None:
        fired.append((event.name, event.data))

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, relay.handle)
        argv = [*script(RELAYED_TASK), f"127.0.0.1:{port}"]
        async with executor.start(argv, communicators=(tcp,), hooks={"*": fire}) as run:
            secret = run._secret
        record = await run.wait()
        tg.cancel_scope.cancel()
    assert record.status == "COMPLETED"
    assert record.result == {"payload": {"ok": True}, "summary": None}
    sent = [(name, data) for name, data in fired if name in ("log", "progress", "custom")]
    assert sent == [
        ("log", {"message": "through the relay", "level": "info", "stream": "reporter"}),
        ("progress", {"fraction": 0.5, "message": ""}),
        ("custom", [1, 2, 3]),
    ]
    assert "forged" not in [name for name, _ in fired]
    # What crossed the network: the challenge one way, a v2 hello with a MAC the other.
    assert secret.encode() not in relay.from_task and secret.encode() not in relay.to_task
    challenge = msgpack.unpackb(bytes(relay.to_task))
    unpacker = msgpack.Unpacker()
    unpacker.feed(bytes(relay.from_task))
    hello = unpacker.unpack()
    assert hello.keys() == {"v", "run", "pid", "rank", "mac"} and hello["v"] == 2
    assert hello["mac"] == hello_mac(
        secret, challenge["nonce"], hello["run"], hello["pid"], hello["rank"]
    )
    # The captured hello, replayed on a new connection, was refused.
    assert relay.replay_refused
    errors = [e["message"] for e in record.extra["protocol_errors"]]
    assert len(errors) == 1 and "wrong MAC" in errors[0]
    assert secret not in json.dumps(record.to_dict(), default=str)


def test_a_task_facing_an_executor_that_sends_no_challenge_gets_a_clear_error() -> None:
    not_v2 = msgpack.packb({"v": 1, "nonce": b"n" * 16})
    for sent, expected in (
        (b"", "before sending its protocol v2 challenge"),
        (not_v2, "no protocol v2 challenge"),
    ):
        task_end, executor_end = socket.socketpair()
        with executor_end:
            executor_end.sendall(sent)
            executor_end.shutdown(socket.SHUT_WR)
            try:
                read_nonce(task_end)
            except ConnectionError as exc:
                assert expected in str(exc)
            else:
                raise AssertionError("read_nonce accepted no challenge")
        assert task_end.fileno() == -1  # closed by read_nonce
