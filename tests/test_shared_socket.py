"""One listening Unix socket per executor: every run's hellos routed to it, nothing crossing
between runs, the per-run guarantees (secret, caps, drain after the exit) kept."""

from __future__ import annotations

import io
import json
import math
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import log_events

from lute_async import Executor
from lute_async.communicators import (
    RunChannel,
    SharedSocketCommunicator,
    SocketCommunicator,
    SocketHome,
)
from lute_async.communicators.base import Batch
from lute_async.errors import ProtocolError
from lute_async.hooks.events import Event
from lute_async.messages import Message
from lute_async.wire import ENV_RUN, ENV_SOCKET

#: A task that connects over the socket, says it is ready, and waits for SIGUSR1 to go on.
READY_THEN_WAIT = """
    import os, signal, sys
    from lute_async.task import Reporter
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with Reporter.connect(prefer=("socket",), required=True) as report:
        report.emit("ready", os.environ["LUTE_ASYNC_RUN"], flush=True)
        signal.sigwait({signal.SIGUSR1})
        for i in range(count):
            report.emit("n", [os.environ["LUTE_ASYNC_RUN"], i])
        report.result("done")
"""

#: Packs a v1 hello and message frames (for tasks and clients writing the wire by hand).
FRAMES = """
    import os, socket, sys, time, msgpack
    def hello(run, secret, pid=None):
        frame = {"v": 1, "run": run, "pid": pid or os.getpid(), "rank": None}
        if secret is not None:
            frame["secret"] = secret
        return msgpack.packb(frame)
    def message(sig, seq, data=None):
        return msgpack.packb({"sig": sig, "seq": seq, "ts": time.time(), "data": data})
    def connect(path):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        return s
    def hung_up(s):
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True
"""


class Ready:
    """Counts ``ready`` events and keeps each task's pid; :attr:`all` is set at ``wanted``."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.pids: dict[str, int] = {}
        self.all = anyio.Event()

    def __call__(self, event: Event) -> None:
        assert event.message.pid is not None
        self.pids[event.data] = event.message.pid
        if len(self.pids) == self.wanted:
            self.all.set()

    def go(self) -> None:
        for pid in self.pids.values():
            os.kill(pid, signal.SIGUSR1)


def _executor(tmp_path: Path) -> Executor:
    return Executor(db=tmp_path / "runs.db", workdir=tmp_path / "work", grace=2.0)


def _errors(record: Any) -> list[str]:
    return [e["message"] for e in record.extra.get("protocol_errors", [])]


async def test_two_concurrent_runs_over_the_one_socket_each_get_only_their_own_messages(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    count = 3000
    argv = [*script(READY_THEN_WAIT), str(count)]
    ready = Ready(2)
    seen: dict[str, list[Any]] = {}

    def keep(event: Event) -> None:
        assert event.message.source == "socket"
        seen.setdefault(event.run.id, []).append(event.data)

    async with _executor(tmp_path) as ex:
        ex.on("ready", ready)
        ex.on("n", keep)
        async with ex.start(argv, name="a") as a, ex.start(argv, name="b") as b:
            await ready.all.wait()  # both connected at once, then both emit at once
            ready.go()
    for run in (a, b):
        assert run.record.status == "COMPLETED", run.record.error
        assert seen[run.id] == [[run.id, i] for i in range(count)]
        assert not run.record.extra.get("protocol_errors")
    [socket_a] = [c for c in a.record.communicators if c["kind"] == "socket"]
    [socket_b] = [c for c in b.record.communicators if c["kind"] == "socket"]
    assert socket_a == socket_b and socket_a["shared"] is True


async def test_the_socket_file_exists_once_per_executor_while_eight_runs_are_live(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    argv = script(READY_THEN_WAIT)
    ready = Ready(8)
    async with _executor(tmp_path) as ex, AsyncExitStack() as runs:
        ex.on("ready", ready)
        live = [await runs.enter_async_context(ex.start(argv)) for _ in range(8)]
        await ready.all.wait()
        paths = {c["path"] for run in live for c in run.record.communicators if c.get("path")}
        assert len(paths) == 1
        home = Path(paths.pop()).parent
        assert len(list(home.iterdir())) == 1
        ready.go()
    assert all(run.record.status == "COMPLETED" for run in live)
    assert not home.exists()


@pytest.mark.parametrize(
    ("secret", "error"),
    [("wrong", "hello frame has a wrong secret"), (None, "hello frame has no secret")],
)
async def test_a_hello_naming_another_run_without_its_secret_reaches_neither_run(
    tmp_path: Path, script: Callable[[str], list[str]], secret: str | None, error: str
) -> None:
    intruder = script(
        FRAMES
        + f"""
    s = connect(os.environ["LUTE_ASYNC_SOCKET"])
    s.sendall(hello(os.environ["OTHER"], {secret!r}) + message("stolen", 1, "from the intruder"))
    assert hung_up(s)
    from lute_async.task import Reporter
    with Reporter.connect(prefer=("pipe",)) as report:
        report.result("refused")
    """
    )
    ready = Ready(1)
    stolen: list[Event] = []
    async with _executor(tmp_path) as ex:
        ex.on("ready", ready)
        ex.on("stolen", stolen.append)
        async with ex.start(script(READY_THEN_WAIT), name="victim") as victim:
            await ready.all.wait()
            record = await ex.run(intruder, name="intruder", env={"OTHER": victim.id})
            ready.go()
    assert record.status == "COMPLETED" and record.result == {"payload": "refused", "summary": None}
    assert stolen == []
    assert _errors(record) == []
    assert victim.record.status == "COMPLETED"
    assert _errors(victim.record) == [error]  # the run it named is told someone tried


async def test_a_connection_for_an_ended_run_is_refused(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    identity = tmp_path / "identity"
    first = script(
        f"""
    import os
    from lute_async.task import Reporter
    with Reporter.connect(prefer=("socket",), required=True) as report:
        report.emit("hi", "from the first run")
    open({os.fspath(identity)!r}, "w").write(
        os.environ["LUTE_ASYNC_RUN"] + " " + os.environ["LUTE_ASYNC_SECRET"])
    """
    )
    late = script(
        FRAMES
        + f"""
    run, secret = open({os.fspath(identity)!r}).read().split()
    s = connect(os.environ["LUTE_ASYNC_SOCKET"])
    s.sendall(hello(run, secret) + message("hi", 1, "too late"))
    assert hung_up(s)
    from lute_async.task import Reporter
    with Reporter.connect(prefer=("pipe",)) as report:
        report.result(run)
    """
    )
    said: list[tuple[str, Any]] = []
    async with _executor(tmp_path) as ex:
        ex.on("hi", lambda e: said.append((e.run.id, e.data)))
        ended = await ex.run(first, name="ended")
        record = await ex.run(late, name="late")
    assert ended.status == "COMPLETED" and record.status == "COMPLETED"
    assert record.result is not None and record.result["payload"] == ended.id
    assert said == [(ended.id, "from the first run")]
    assert _errors(ended) == []
    # Recorded on the run whose process made the connection.
    assert _errors(record) == [
        f"hello for unknown run {ended.id!r} (no run by that id listens here)"
    ]


async def test_tasks_that_write_1000_messages_and_exit_at_once_lose_none(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        FRAMES
        + """
    s = connect(os.environ["LUTE_ASYNC_SOCKET"])
    run = os.environ["LUTE_ASYNC_RUN"]
    s.sendall(hello(run, os.environ["LUTE_ASYNC_SECRET"])
              + b"".join(message("n", i + 1, [run, i]) for i in range(1000)))
    os._exit(0)  # no close, no flush: the executor finds the connection after the exit
    """
    )
    seen: dict[str, list[Any]] = {}
    async with _executor(tmp_path) as ex:
        ex.on("n", lambda e: seen.setdefault(e.run.id, []).append(e.data))
        records: list[Any] = []

        async def one() -> None:
            records.append(await ex.run(argv))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
    for record in records:
        assert record.status == "COMPLETED", record.error
        assert seen[record.id] == [[record.id, i] for i in range(1000)]
        assert _errors(record) == []


async def test_a_socket_communicator_given_by_hand_keeps_a_listener_of_its_own(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
    import os
    from lute_async.task import Reporter
    with Reporter.connect(prefer=("socket",), required=True) as report:
        report.result(os.environ["LUTE_ASYNC_SOCKET"])
    """
    )
    own = tmp_path / "own"
    own.mkdir()
    async with _executor(tmp_path) as ex:
        shared = await ex.run(argv, communicators=["socket"])
        mine = await ex.run(argv, communicators=[SocketCommunicator(directory=own)])
    assert shared.result is not None and mine.result is not None
    path = Path(mine.result["payload"])
    assert path.parent.parent == own and path != Path(shared.result["payload"])
    assert mine.communicators == [{"kind": "socket", "path": os.fspath(path)}]
    assert shared.communicators[0]["shared"] is True
    assert list(own.iterdir()) == []  # its directory went with its run


def _sockets() -> int:
    """Sockets this process holds open."""
    fds = Path("/proc/self/fd")
    return sum(os.readlink(fd).startswith("socket:") for fd in list(fds.iterdir()) if fd.exists())


async def test_a_deleted_socket_file_is_bound_afresh_and_the_old_listener_closed(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
    import os, sys
    from lute_async.task import Reporter
    if len(sys.argv) > 1:
        os.unlink(os.environ["LUTE_ASYNC_SOCKET"])
    with Reporter.connect(prefer=("socket", "pipe"), required=True) as report:
        report.result(os.environ["LUTE_ASYNC_SOCKET"])
    """
    )
    async with _executor(tmp_path) as ex:
        first = await ex.run(argv)
        sockets = _sockets()
        deleting = await ex.run([*argv, "delete"])
        after = await ex.run(argv)
        assert _sockets() == sockets  # a new listener, the old one closed
    assert first.result is not None and after.result is not None
    assert deleting.status == after.status == "COMPLETED"
    assert after.result["payload"] != first.result["payload"]


# --- the listener's own bounds, served for a pretend run -----------------------------------

RUN, SECRET = "run-1", "s3cret"


@dataclass
class Served:
    """One pretend run on a shared socket: what it got and what it was told."""

    path: str
    channel: RunChannel
    messages: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def error(self, source: str, conn: int, error: ProtocolError) -> None:
        self.errors.append(str(error))

    async def client(self, code: str, env: dict[str, str] | None = None) -> None:
        """Run ``code`` (with FRAMES) in a process of its own against the socket; by default a
        process of the pretend run (its ``LUTE_ASYNC_RUN``)."""
        source = textwrap.dedent(FRAMES) + textwrap.dedent(code)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LUTE_ASYNC_")}
        env = {**clean, ENV_RUN: RUN, ENV_SOCKET: self.path} if env is None else env
        await anyio.run_process([sys.executable, "-c", source], env=env, check=True)


@asynccontextmanager
async def serving(home: SocketHome, **channel: Any) -> AsyncIterator[Served]:
    """Serve a pretend run ``RUN`` on ``home``'s shared socket until the block ends (its
    pretend task exits then); afterwards ``served.messages`` holds what it delivered."""
    send, receive = anyio.create_memory_object_stream[Batch](math.inf)
    communicator = SharedSocketCommunicator(home)
    served = Served("", None)  # type: ignore[arg-type]  # set just below
    served.channel = RunChannel(
        RUN, SECRET, send, max_frame=1 << 20, on_protocol_error=served.error, **channel
    )
    setup = await communicator.open(served.channel)
    served.path = setup.env[ENV_SOCKET]
    exited = anyio.Event()
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(communicator.serve, exited)
                yield served
                exited.set()
    finally:
        await communicator.aclose()
        home.close()
    send.close()
    async with receive:
        async for batch in receive:
            served.messages += batch


async def test_connections_past_the_pending_hello_cap_are_refused_and_told_to_their_run() -> None:
    async with serving(SocketHome(max_pending_hellos=4)) as served:
        await served.client(
            f"""
            conns = [connect(os.environ["LUTE_ASYNC_SOCKET"]) for _ in range(6)]
            assert all(hung_up(s) for s in conns[4:])
            for seq, s in enumerate(conns[:4], 1):
                s.sendall(hello({RUN!r}, {SECRET!r}) + message("tick", 1, seq))
                s.close()
            """
        )
    assert served.errors == ["4 connections already wait for their hello"] * 2
    assert sorted(m.data for m in served.messages) == [1, 2, 3, 4]


async def test_connections_past_the_run_cap_are_refused() -> None:
    async with serving(SocketHome(), max_connections=2) as served:
        await served.client(
            f"""
            conns = []
            for seq in range(4):
                conns.append(connect(os.environ["LUTE_ASYNC_SOCKET"]))
                conns[-1].sendall(hello({RUN!r}, {SECRET!r}) + message("tick", 1, seq))
            assert all(hung_up(s) for s in conns[2:])
            """
        )
    assert served.errors == ["the run already has 2 connections open"] * 2
    assert sorted(m.data for m in served.messages) == [0, 1]


async def test_no_hello_within_hello_timeout_or_half_a_hello_is_dropped() -> None:
    async with serving(SocketHome(hello_timeout=0.2)) as served:
        await served.client(
            """
            silent = connect(os.environ["LUTE_ASYNC_SOCKET"])
            assert hung_up(silent)
            half = connect(os.environ["LUTE_ASYNC_SOCKET"])
            half.sendall(hello("run-1", "s3cret")[:10])
            half.shutdown(socket.SHUT_WR)
            assert hung_up(half)
            """
        )
    assert served.errors[0] == "no hello frame within 0.2 s; connection dropped"
    assert served.errors[1:] == ["connection ended inside a frame; 10 bytes discarded (at byte 0)"]
    assert served.messages == []


async def test_hellos_reaching_no_run_are_logged_within_an_error_budget(
    json_logs: io.StringIO,
) -> None:
    async with serving(SocketHome()) as served:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUTE_ASYNC_")}
        await served.client(
            f"""
            for _ in range(25):
                s = connect({served.path!r})
                s.sendall(hello("nobody", "x") + message("tick", 1))
                assert hung_up(s)
            s = connect({served.path!r})
            s.sendall(b"\\xc1")  # a byte msgpack never uses
            assert hung_up(s)
            """,
            env=env,
        )
    assert served.errors == [] and served.messages == []
    events = log_events(json_logs.getvalue())
    logged = [e for e in events if e["event"] == "protocol_error"]
    assert len(logged) == 20
    assert all(e["error"].startswith("hello for unknown run 'nobody'") for e in logged)
    assert all(e["run_id"] is None and e["socket"] == served.path for e in logged)
    dropped = [e for e in events if e["event"] == "protocol_errors_dropped"]
    assert [(e["dropped"], e["by_kind"]) for e in dropped] == [(1, {"HandshakeError": 1})]


EMFILE_SCRIPT = """
import anyio, json, math, os, resource, socket
import msgpack, structlog
from lute_async.communicators import (
    RunChannel,
    SharedSocketCommunicator,
    SocketCommunicator,
    SocketHome,
)

async def main():
    send, receive = anyio.create_memory_object_stream(math.inf)
    channel = RunChannel("r", "s", send, max_frame=1 << 20, on_protocol_error=print)
    home = SocketHome()
    shared = SharedSocketCommunicator(home)
    path = (await shared.open(channel)).env["LUTE_ASYNC_SOCKET"]
    hello = msgpack.packb({"v": 1, "run": "r", "pid": os.getpid(), "rank": None, "secret": "s"})
    exited = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(shared.serve, exited)
        clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]  # while fds are left
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest = os.dup(0)
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))  # no new fd from now on
        for seq, client in enumerate(clients):
            client.connect(path)  # completed by the kernel; accept() gets EMFILE
            client.sendall(hello + msgpack.packb({"sig": "t", "seq": 1, "ts": 1.0, "data": seq}))
        for _ in range(2000):  # event-loop turns at the fd limit: a busy accept loop spins
            await anyio.lowlevel.checkpoint()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        got = []
        async for batch in receive:  # the backed-off listener takes them once it can
            got += [m.data for m in batch]
            if len(got) == len(clients):
                break
        for client in clients:
            client.close()
        exited.set()
    await shared.aclose()
    home.close()
    return sorted(got)

with structlog.testing.capture_logs() as logs:
    got = anyio.run(main)
print(json.dumps({"got": got, "events": [e["event"] for e in logs],
                  "failures": [e.get("failed_accepts") for e in logs
                               if e["event"] == "accept_failures"]}))
"""


def test_at_the_fd_limit_the_shared_listener_backs_off_and_logs_once_per_episode() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", EMFILE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.fspath(root)},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["got"] == [0, 1, 2]
    assert outcome["events"].count("accept_failed") == 1
    assert outcome["events"].count("accept_failures") == 1
    # Backed off: a few retries over the 2,000 loop turns, not one failed accept per turn.
    assert 1 <= outcome["failures"][0] < 100


async def test_a_refused_hello_from_a_task_that_has_exited_is_still_its_runs(
    tmp_path: Path,
) -> None:
    # The task names a wrong run and exits before the executor reads its hello (the hook
    # holds the loop until the task is gone): its /proc environment is gone by then, so the
    # run is found by its task's pid, and the refusal is in the run's record, not only logged.
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    task = textwrap.dedent(
        f"""
        import os, socket, msgpack
        print("ready", flush=True)
        open({str(fifo)!r}).read()  # until the hook says go
        hello = {{"v": 1, "run": "someone-else", "pid": os.getpid(), "rank": None,
                 "secret": os.environ["LUTE_ASYNC_SECRET"]}}
        wrong = socket.socket(socket.AF_UNIX)
        wrong.connect(os.environ["{ENV_SOCKET}"])
        wrong.sendall(msgpack.packb(hello))
        wrong.close()
        """
    )

    def hold_the_loop_until_the_task_is_gone(event: Event) -> None:
        assert event.run.pid is not None
        pidfd = os.pidfd_open(event.run.pid)
        try:
            with open(fifo, "w") as go:
                go.write("go")
            # Blocking on purpose: nothing in the executor runs until the task has exited.
            assert select.select([pidfd], [], [], 60)[0] == [pidfd]
        finally:
            os.close(pidfd)

    async with Executor(db=tmp_path / "runs.db", workdir=tmp_path / "work") as executor:
        record = await executor.run(
            [sys.executable, "-c", task],
            communicators=("pipe", "socket"),
            hooks={"log": hold_the_loop_until_the_task_is_gone},
        )
    assert record.status == "COMPLETED"
    errors = [error["message"] for error in record.extra.get("protocol_errors", [])]
    assert any("unknown run" in message for message in errors), errors
