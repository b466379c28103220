"""Security: nothing but plain data on the wire, private sockets, strangers refused, TCP
secrets enforced, frames bounded, and secrets kept out of records and logs."""

from __future__ import annotations

import ast
import io
import json
import os
import pwd
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import lute_async
from lute_async import Event, Executor, logs
from lute_async.communicators import TcpCommunicator

PACKAGE = Path(lute_async.__file__).parent
#: Modules that turn bytes into code or arbitrary objects.
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__"}


def test_the_package_never_unpickles_unmarshals_or_evaluates_code() -> None:
    offences: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=os.fspath(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            offences += [f"{where} imports {name}" for name in names & FORBIDDEN_MODULES]
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else None
                if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_CALLS:
                    name = func.attr
                if name in FORBIDDEN_CALLS:
                    offences.append(f"{where} calls {name}()")
    assert offences == []
    # Also as plain text, so nothing hides behind getattr(builtins, "eval") and the like.
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for word in ("pickle", "marshal"):
            for line in text.splitlines():
                if word in line and "import" in line:
                    offences.append(f"{path.name}: {line.strip()}")
    assert offences == []


async def test_socket_directory_is_0700_and_socket_0600_seen_from_the_task(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os, stat
        from lute_async.task import Reporter
        path = os.environ["LUTE_ASYNC_SOCKET"]
        modes = {
            "dir": stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
            "socket": stat.S_IMODE(os.stat(path).st_mode),
            "is_socket": stat.S_ISSOCK(os.stat(path).st_mode),
        }
        with Reporter.connect(prefer=("socket",)) as report:
            report.result(modes)
        """
    )
    record = await executor.run(argv, communicators=("socket",))
    assert record.status == "COMPLETED" and record.result is not None
    assert record.result["payload"] == {"dir": 0o700, "socket": 0o600, "is_socket": True}


async def test_runs_share_one_socket_in_a_private_directory_removed_with_the_executor(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os
        from lute_async.task import Reporter
        with Reporter.connect(prefer=("socket",)) as report:
            report.result(os.environ["LUTE_ASYNC_SOCKET"])
        """
    )
    async with Executor(db=tmp_path / "runs.db", workdir=tmp_path / "work") as executor:
        first, second = [await executor.run(argv, communicators=("socket",)) for _ in range(2)]
        paths = [Path(run.result["payload"]) for run in (first, second) if run.result]
        assert len(paths) == 2 and paths[0] == paths[1]  # the executor's one socket
        home = paths[0].parent
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert home.owner() == pwd.getpwuid(os.getuid()).pw_name
        assert list(home.iterdir()) == [paths[0]]  # kept for the next run, alone
    assert not home.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="running a process as nobody needs root")
async def test_a_connection_from_another_uid_is_refused_by_peer_credentials(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os, subprocess, time, msgpack
        from lute_async.task import Reporter
        path = os.environ["LUTE_ASYNC_SOCKET"]
        run, secret = os.environ["LUTE_ASYNC_RUN"], os.environ["LUTE_ASYNC_SECRET"]
        # Open the directory and socket to everyone: only SO_PEERCRED stands in the way now.
        os.chmod(os.path.dirname(path), 0o755)
        os.chmod(path, 0o777)
        frames = msgpack.packb({"v": 1, "run": run, "pid": 1, "rank": None, "secret": secret})
        frames += msgpack.packb({"sig": "result", "seq": 1, "ts": time.time(),
                                 "data": {"payload": "from nobody", "summary": None}})
        intruder = '''
        import os, socket, sys
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        try:
            s.sendall(bytes.fromhex(sys.argv[2]))
            s.recv(1)  # until the executor hangs up
        except OSError:
            pass
        print(os.getuid())
        '''.replace("\\n        ", "\\n")
        done = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             "/usr/bin/python3", "-I", "-c", intruder, path, frames.hex()],
            capture_output=True, text=True, check=True,
        )
        with Reporter.connect(prefer=("pipe",)) as report:
            report.result({"intruder_uid": int(done.stdout)})
        """
    )
    record = await executor.run(argv, communicators=("pipe", "socket"))
    assert record.status == "COMPLETED"
    assert record.result == {"payload": {"intruder_uid": 65534}, "summary": None}
    errors = [e["message"] for e in record.extra["protocol_errors"]]
    assert len(errors) == 1
    assert "connection from uid 65534" in errors[0] and "refused" in errors[0]


TCP_INTRUDER = """
    import os, socket, time, msgpack
    from lute_async.task import Reporter
    from lute_async.task.handshake import read_nonce
    host, _, port = os.environ["LUTE_ASYNC_TCP"].rpartition(":")
    run = os.environ["LUTE_ASYNC_RUN"]
    result = msgpack.packb({"sig": "result", "seq": 1, "ts": time.time(),
                            "data": {"payload": "forged", "summary": None}})

    def attempt(hello):
        s = socket.create_connection((host, int(port)))
        try:
            read_nonce(s)  # the executor's challenge, ignored: an old (v1) task
            s.sendall(hello + result)
            return s.recv(1)  # b"" once the executor drops us
        except OSError:
            return b""
        finally:
            s.close()

    hello = {"v": 1, "run": run, "pid": os.getpid(), "rank": None}
    dropped = [
        attempt(msgpack.packb({**hello, "secret": "guessed-" + "x" * 24})),
        attempt(msgpack.packb(hello)),
        attempt(msgpack.packb({**hello, "secret": None})),
    ]
    with Reporter.connect(prefer=("tcp",)) as report:
        report.result({"dropped": [d == b"" for d in dropped]})
"""


async def test_tcp_connections_with_a_wrong_or_no_secret_are_dropped_and_the_run_completes(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    results: list[Any] = []
    executor.on("result", lambda e: results.append(e.data))
    record = await executor.run(
        script(TCP_INTRUDER), communicators=[TcpCommunicator(host="127.0.0.1")]
    )
    assert record.status == "COMPLETED"
    assert results == [{"payload": {"dropped": [True, True, True]}, "summary": None}]
    errors = [e["message"] for e in record.extra["protocol_errors"]]
    assert len(errors) == 3
    assert "wrong secret" in errors[0]
    assert all("no secret" in e for e in errors[1:])
    assert "guessed-" not in json.dumps(record.extra)


async def _completes_beside_a_dropped_slow_loris(executor: Executor, argv: list[str]) -> None:
    """Run ``argv`` (which opens a slow-loris TCP connection and reports whether it was hung
    up on) with a 0.5 s hello timeout: the run completes and only that connection is dropped."""
    tcp = TcpCommunicator(host="127.0.0.1", hello_timeout=0.5)
    record = await executor.run(argv, communicators=[tcp])
    assert record.status == "COMPLETED"
    assert record.result == {"payload": {"hung_up": True}, "summary": None}
    errors = [e["message"] for e in record.extra["protocol_errors"]]
    assert errors == ["no hello frame within 0.5 s; connection dropped"]


async def test_tcp_slow_loris_hello_is_dropped_after_hello_timeout_and_the_run_completes(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os, socket, msgpack
        from lute_async.task import Reporter
        from lute_async.task.handshake import read_nonce, tcp_hello
        host, _, port = os.environ["LUTE_ASYNC_TCP"].rpartition(":")
        slow = socket.create_connection((host, int(port)))
        hello = msgpack.packb(tcp_hello(read_nonce(slow), {
            "run": os.environ["LUTE_ASYNC_RUN"], "pid": os.getpid(), "rank": None,
            "secret": os.environ["LUTE_ASYNC_SECRET"]}))
        slow.sendall(hello[: len(hello) // 2])
        hung_up = slow.recv(1) == b""  # blocks until the executor gives up on us
        slow.close()
        with Reporter.connect(prefer=("tcp",)) as report:
            report.result({"hung_up": hung_up})
        """
    )
    await _completes_beside_a_dropped_slow_loris(executor, argv)


async def test_a_reporter_silent_past_hello_timeout_keeps_its_tcp_connection(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # The reporter connects first and sends nothing more until a slow-loris connection opened
    # after it has been dropped: past the hello timeout of the reporter's own connection too.
    argv = script(
        """
        import os, socket
        from lute_async.task import Reporter
        from lute_async.task.handshake import read_nonce
        report = Reporter.connect(prefer=("tcp",), required=True)
        host, _, port = os.environ["LUTE_ASYNC_TCP"].rpartition(":")
        slow = socket.create_connection((host, int(port)))
        read_nonce(slow)
        slow.sendall(b"\\x85")  # a map header, then silence
        hung_up = slow.recv(1) == b""
        slow.close()
        report.result({"hung_up": hung_up})
        report.close()
        """
    )
    await _completes_beside_a_dropped_slow_loris(executor, argv)


async def test_a_hello_held_up_by_back_pressure_from_another_channel_is_not_timed_out(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    # The pipe's messages fill the run's buffer while a slow hook holds the dispatcher; the TCP
    # hello arrives with a message behind it, whose hand-over waits past the hello timeout.
    argv = script(
        """
        from lute_async.task import Reporter
        pipe = Reporter.connect(prefer=("pipe",), required=True)
        for i in range(2000):
            pipe.emit("fill", i)
        pipe.flush()
        tcp = Reporter.connect(prefer=("tcp",), required=True)
        tcp.emit("over_tcp", "hello and a message in one read")
        tcp.close()
        pipe.close()
        """
    )
    over_tcp: list[str] = []

    async def slow_once(event: Event) -> None:
        if event.data == 0:
            await anyio.sleep(1.0)  # a slow hook, well past the 0.2 s hello timeout

    tcp = TcpCommunicator(host="127.0.0.1", hello_timeout=0.2)
    record = await executor.run(
        argv,
        communicators=["pipe", tcp],
        hooks={"fill": slow_once, "over_tcp": lambda e: over_tcp.append(e.data)},
    )
    assert record.status == "COMPLETED"
    assert over_tcp == ["hello and a message in one read"]
    assert not record.extra.get("protocol_errors")


async def test_a_frame_over_max_frame_is_reported_and_other_connections_are_delivered(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os, socket, time, msgpack
        from lute_async.task import Reporter
        path, run, secret = (os.environ[k] for k in
            ("LUTE_ASYNC_SOCKET", "LUTE_ASYNC_RUN", "LUTE_ASYNC_SECRET"))
        hello = msgpack.packb({"v": 1, "run": run, "pid": os.getpid(), "rank": None,
                               "secret": secret})
        big = socket.socket(socket.AF_UNIX); big.connect(path)
        try:
            big.sendall(hello + msgpack.packb({"sig": "blob", "seq": 1, "ts": time.time(),
                                               "data": "x" * 100_000}))
            big.recv(1)
        except OSError:
            pass  # the executor may hang up before it has read everything
        big.close()
        with Reporter.connect(prefer=("socket",)) as report:
            for i in range(100):
                report.emit("tick", i)
            report.result("after the big frame")
        """
    )
    ticks: list[int] = []
    blobs: list[Event] = []
    async with Executor(db=tmp_path / "runs.db", max_frame=4096) as executor:
        executor.on("tick", lambda e: ticks.append(e.data))
        executor.on("blob", blobs.append)
        record = await executor.run(argv, communicators=("pipe", "socket"))
    assert record.status == "COMPLETED"
    assert record.result == {"payload": "after the big frame", "summary": None}
    assert ticks == list(range(100)) and blobs == []
    errors = [e["message"] for e in record.extra["protocol_errors"]]
    assert len(errors) == 1 and "larger than the 4096-byte limit" in errors[0]


async def test_secrets_stay_out_of_the_database_and_the_logs(
    tmp_path: Path, script: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(logs, "_logger", logs._logger)
    logs.configure(renderer="json", level="DEBUG")
    leak = tmp_path / "run-secret"
    argv = script(
        f"""
        import os, socket, msgpack
        from lute_async.task import Reporter
        secret = os.environ["LUTE_ASYNC_SECRET"]
        open({os.fspath(leak)!r}, "w").write(secret)
        # A hello from a future protocol version, carrying the real secret: refused, and the
        # refusal must not echo the secret.
        s = socket.socket(socket.AF_UNIX); s.connect(os.environ["LUTE_ASYNC_SOCKET"])
        s.sendall(msgpack.packb({{"secret": secret, "v": 2, "run": os.environ["LUTE_ASYNC_RUN"],
                                  "pid": 1}}))
        s.close()
        with Reporter.connect(prefer=("pipe",)) as report:
            report.log("working")
            report.result("ok")
        """
    )
    env = {
        "API_TOKEN": "tok-0123456789abcdef",
        "DB_PASSWORD": "hunter2hunter2",
        "DATABASE_URL": "postgres://me:pa55w0rd-xyz@db.example/x",
    }
    db = tmp_path / "runs.db"
    async with Executor(db=db) as executor:
        record = await executor.run(argv, env=env, communicators=("pipe", "socket"))
    assert record.status == "COMPLETED"
    assert any("v1 hello" in e["message"] for e in record.extra["protocol_errors"])
    run_secret = leak.read_text()
    assert len(run_secret) >= 24
    assert record.env["LUTE_ASYNC_SECRET"] == "***" and record.env["API_TOKEN"] == "***"
    assert record.env["DATABASE_URL"] == "postgres://me:***@db.example/x"
    log_text = stderr.getvalue()
    assert '"event": "protocol_error"' in log_text  # the logs were captured
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("runs.db*"))
    for value in (run_secret, *env.values()):
        if "://" in value:
            value = "pa55w0rd-xyz"
        assert value not in log_text
        assert value.encode() not in stored
        assert value not in json.dumps(record.to_dict())


def test_slurm_batch_script_carries_no_secret(tmp_path: Path) -> None:
    slurm = pytest.importorskip("lute_async.launchers.slurm")
    from lute_async.launchers.base import LaunchSpec

    secrets = {"LUTE_ASYNC_SECRET": "run-secret-0123456789", "API_TOKEN": "tok-0123456789abc"}
    spec = LaunchSpec(
        argv=["python", "task.py"],
        env={"PATH": "/usr/bin", **secrets},
        run_id="0" * 32,
        name="peaks",
        run_dir=tmp_path,
    )
    text = slurm.Slurm(partition="debug", ntasks=4).batch_script(spec, tmp_path / "out")
    assert "#SBATCH --partition=debug" in text
    assert all(value not in text for value in secrets.values())


def test_records_planted_in_a_shared_journal_directory_are_never_replayed(tmp_path: Path) -> None:
    from lute_async import AnalysisRecord, RecordStore
    from lute_async.records import RecordJournal

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # like /tmp: anyone could have written here
    db = tmp_path / "db" / "runs.db"
    planted = RecordJournal(db, shared).fallback
    forged = AnalysisRecord(name="forged", status="COMPLETED")
    planted.write_text(json.dumps(forged.to_dict()) + "\n")
    with RecordStore(db, journal_dir=shared) as store:
        assert store.replayed_on_open == []
        assert store.query(name="forged") == []
    assert planted.exists()
