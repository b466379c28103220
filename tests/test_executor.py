"""The executor end to end with real subprocesses: events, hooks, terminal states, records."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from conftest import PYTHON, cyclic_garbage, ends_within, process_exists

from lute_async import Event, Executor, RecordStore

REPORTING_TASK = """
    from lute_async.task import Reporter
    with Reporter.connect() as report:
        report.started({"n": 3})
        for i in range(3):
            report.progress((i + 1) / 3, f"step {i}")
        report.emit("peaks", {"n": 42})
        report.result({"peaks": 42}, summary="42 peaks")
"""


async def test_hooks_fire_in_order_for_started_progress_result_done(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    seen: list[str] = []
    for name in ("started", "progress", "peaks", "result", "done"):
        executor.on(name, lambda e: seen.append(e.name))
    record = await executor.run(script(REPORTING_TASK), name="report")
    assert seen == ["started", "progress", "progress", "progress", "peaks", "result", "done"]
    assert record.status == "COMPLETED"
    assert record.result == {"payload": {"peaks": 42}, "summary": "42 peaks"}
    assert record.extra["reported_params"] == {"n": 3}
    assert record.exit_code == 0 and record.signal is None


async def test_async_and_sync_hooks_run_in_registration_order(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    calls: list[str] = []

    async def first(event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append("async-1")

    executor.on("result", first)
    executor.on("result", lambda e: calls.append("sync-2"))
    await executor.run(script(REPORTING_TASK), hooks={"result": lambda e: calls.append("run-3")})
    assert calls == ["async-1", "sync-2", "run-3"]


@pytest.mark.parametrize("channel", ["pipe", "socket"])
async def test_burst_of_100000_messages_arrives_complete_and_in_order(
    executor: Executor, script: Callable[[str], list[str]], channel: str
) -> None:
    received: list[int] = []
    executor.on("tick", lambda e: received.append(e.data))
    argv = script(
        f"""
        from lute_async.task import Reporter
        with Reporter.connect(prefer=({channel!r},)) as report:
            for i in range(100_000):
                report.emit("tick", i)
            report.result("sent")
        """
    )
    record = await executor.run(argv, name=f"burst-{channel}")
    assert record.status == "COMPLETED"
    assert received == list(range(100_000))
    assert "protocol_errors" not in record.extra


async def test_stdout_garbage_and_pickle_bytes_become_log_lines_only(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    logs: list[dict[str, Any]] = []
    other: list[str] = []
    executor.on("log", lambda e: logs.append(e.data))
    executor.on("*", lambda e: other.append(e.name) if e.name not in ("log",) else None)
    argv = script(
        """
        import os, pickle, sys
        sys.stdout.buffer.write(pickle.dumps({"sig": "result", "data": 1}) + b"\\n")
        sys.stdout.buffer.write(b"\\x82\\xa3sig\\xa6result\\n")  # a msgpack map on stdout
        sys.stderr.buffer.write(b"\\xff\\xfe not utf-8\\n")
        print("plain line")
        """
    )
    record = await executor.run(argv)
    assert record.status == "COMPLETED"
    assert record.result is None
    assert "result" not in other
    streams = [entry["stream"] for entry in logs]
    assert streams.count("stdout") == 3 and streams.count("stderr") == 1
    assert {"message": "plain line", "level": "info", "stream": "stdout"} in logs


async def test_exit_code_3_fails_with_exit_code_recorded(executor: Executor) -> None:
    fired: list[str] = []
    executor.on("failed", lambda e: fired.append(e.name))
    record = await executor.run([PYTHON, "-c", "raise SystemExit(3)"])
    assert record.status == "FAILED" and record.exit_code == 3
    assert record.error is not None and "code 3" in record.error["message"]
    assert fired == ["failed"]


async def test_task_killed_by_sigkill_fails_with_signal_9(executor: Executor) -> None:
    record = await executor.run([PYTHON, "-c", "import os; os.kill(os.getpid(), 9)"])
    assert record.status == "FAILED"
    assert record.signal == signal.SIGKILL and record.exit_code is None
    assert record.error is not None and "SIGKILL" in record.error["message"]


async def test_missing_binary_fails_with_clear_error_and_one_terminal_event(
    executor: Executor,
) -> None:
    events: list[str] = []
    executor.on("*", lambda e: events.append(e.name))
    record = await executor.run(["/nonexistent/analyse", "--fast"], name="missing")
    assert record.status == "FAILED"
    assert record.error is not None
    assert "command not found: '/nonexistent/analyse'" in record.error["message"]
    assert events == ["failed"]


async def test_missing_working_directory_fails_clearly(
    executor: Executor, tmp_path: Path
) -> None:
    record = await executor.run([PYTHON, "-c", "pass"], cwd="/nonexistent/dir")
    assert record.status == "FAILED"
    assert record.error is not None
    assert "working directory '/nonexistent/dir'" in record.error["message"]
    assert "does not exist" in record.error["message"]
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    record = await executor.run([PYTHON, "-c", "pass"], cwd=a_file)
    assert record.status == "FAILED" and record.error is not None
    assert f"working directory {str(a_file)!r}" in record.error["message"]


async def test_timeout_ends_the_task_and_its_grandchild(
    executor: Executor, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    grandchildren: list[int] = []

    def remember(event: Event) -> None:
        if event.data.get("stream") == "stdout":
            grandchildren.append(int(event.data["message"]))

    argv = ["sh", "-c", "sleep 300 & echo $!; wait"]
    record = await executor.run(argv, timeout=1.0, grace=1.0, hooks={"log": remember})
    assert record.status == "TIMEDOUT"
    assert record.error is not None and record.error["type"] == "Timeout"
    assert len(grandchildren) == 1
    assert await ends_within(grandchildren[0])  # SIGKILLed with its group, not left running


async def test_raising_hook_is_recorded_and_other_hooks_and_run_continue(
    executor: Executor,
) -> None:
    later: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("hook exploded")

    executor.on("started", broken)
    executor.on("started", lambda e: later.append("second hook"))
    executor.on("done", lambda e: later.append("done"))
    record = await executor.run([PYTHON, "-c", "pass"])
    assert record.status == "COMPLETED"
    assert later == ["second hook", "done"]
    assert len(record.hook_errors) == 1
    error = record.hook_errors[0]
    assert error["event"] == "started" and error["type"] == "RuntimeError"
    assert "hook exploded" in error["traceback"]
    stored = (await executor.store()).get(record.id)
    assert stored.hook_errors == record.hook_errors


async def test_a_hook_failing_on_every_message_leaves_a_bounded_record(
    executor: Executor, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    argv = script(
        """
        from lute_async.task import Reporter
        with Reporter.connect() as report:
            for i in range(2000):
                report.emit("peaks", {"i": i})
        """
    )

    def broken(event: Event) -> None:
        raise ValueError(f"cannot take peak {event.data['i']}")

    record = await executor.run(argv, hooks={"peaks": broken})
    assert record.status == "COMPLETED"
    assert len(record.hook_errors) == 20  # the first ones whole, with their tracebacks
    assert [e["message"] for e in record.hook_errors[:2]] == [
        "cannot take peak 0",
        "cannot take peak 1",
    ]
    (kind,) = record.extra["hook_errors_dropped"]["dropped"]
    assert kind.endswith("broken (peaks)")
    assert record.extra["hook_errors_dropped"] == {
        "total": 2000,
        "kept": 20,
        "dropped": {kind: 1980},
    }
    stored = (await executor.store()).get(record.id)
    assert stored.extra["hook_errors_dropped"] == record.extra["hook_errors_dropped"]
    assert len(json.dumps(stored.to_dict())) < 64 * 1024  # 2,000 tracebacks made ~1 MB


async def test_malformed_frames_on_the_socket_are_logged_and_the_run_completes(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os, socket, time, msgpack
        path, run, secret = (os.environ[k] for k in
            ("LUTE_ASYNC_SOCKET", "LUTE_ASYNC_RUN", "LUTE_ASYNC_SECRET"))
        hello = {"v": 1, "run": run, "pid": os.getpid(), "rank": None, "secret": secret}
        bad = socket.socket(socket.AF_UNIX); bad.connect(path)
        bad.sendall(msgpack.packb(hello) + b"\\xc1\\xc1 garbage"); bad.close()
        wrong = socket.socket(socket.AF_UNIX); wrong.connect(path)
        wrong.sendall(msgpack.packb({**hello, "run": "someone-else"})); wrong.close()
        good = socket.socket(socket.AF_UNIX); good.connect(path)
        frames = [hello,
                  {"seq": 1, "ts": time.time(), "data": "no sig"},
                  {"sig": "result", "seq": 2, "ts": time.time(),
                   "data": {"payload": 7, "summary": None}}]
        good.sendall(b"".join(msgpack.packb(f) for f in frames)); good.close()
        """
    )
    record = await executor.run(argv, communicators=("socket",))
    assert record.status == "COMPLETED"
    assert record.result == {"payload": 7, "summary": None}
    messages = sorted(error["message"] for error in record.extra["protocol_errors"])
    assert any("undecodable" in m for m in messages)
    assert any("unknown run" in m for m in messages)
    assert any("malformed message frame" in m for m in messages)


async def test_task_dying_mid_frame_keeps_earlier_messages_and_reports_the_partial_frame(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    got: list[int] = []
    executor.on("tick", lambda e: got.append(e.data))
    argv = script(
        """
        import os, msgpack
        from lute_async.task import Reporter
        report = Reporter.connect(prefer=("pipe",))
        for i in range(10):
            report.emit("tick", i)
        report.flush()
        fd = int(os.environ["LUTE_ASYNC_FD"].split(":")[0])
        frame = msgpack.packb({"sig": "tick", "seq": 11, "ts": 0.0, "data": "x" * 1000})
        os.write(fd, frame[:500])
        os.kill(os.getpid(), 9)
        """
    )
    record = await executor.run(argv)
    assert got == list(range(10))
    assert record.status == "FAILED" and record.signal == 9
    errors = record.extra["protocol_errors"]
    assert len(errors) == 1 and "ended inside a frame; 500 bytes discarded" in errors[0]["message"]


async def test_two_executors_in_one_process_share_neither_hooks_nor_sockets(
    tmp_path: Path,
) -> None:
    seen_a: list[str] = []
    seen_b: list[str] = []
    sockets: list[str] = []
    async with (
        Executor(db=tmp_path / "a.db") as a,
        Executor(db=tmp_path / "b.db") as b,
    ):
        a.on("started", lambda e: seen_a.append(e.run.id))
        b.on("started", lambda e: seen_b.append(e.run.id))
        for ex in (a, b):
            ex.on("started", lambda e: sockets.append(e.run.record.communicators[1]["path"]))
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.run, [PYTHON, "-c", "pass"])
            tg.start_soon(b.run, [PYTHON, "-c", "pass"])
    assert len(seen_a) == 1 and len(seen_b) == 1 and seen_a != seen_b
    assert len(set(sockets)) == 2
    assert all(not os.path.exists(path) for path in sockets)


async def test_fifty_concurrent_runs_complete_with_correct_records(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        from lute_async.task import Reporter, read_params
        with Reporter.connect() as report:
            report.result(read_params()["i"] * 2)
        """
    )
    records: dict[int, Any] = {}

    async def one(i: int) -> None:
        records[i] = await executor.run(argv, name=f"run-{i}", params={"i": i})

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)
    assert all(records[i].status == "COMPLETED" for i in range(50))
    assert [records[i].result["payload"] for i in range(50)] == [i * 2 for i in range(50)]
    stored = (await executor.store()).query(limit=100)
    assert len(stored) == 50 and {r.status for r in stored} == {"COMPLETED"}


async def test_max_concurrency_bounds_runs_executing_at_once(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    # Each task connects to the test's socket and holds until released; the test releases the
    # tasks it holds only once two are connected, so a second slot is always used (no timing)
    # and a third task executing at once would show as a third connection.
    gate = tmp_path / "gate.sock"
    argv = script(
        f"""
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect({os.fspath(gate)!r})
        s.recv(1)
        """
    )
    connected = peak = arrived = 0
    waiting: list[anyio.abc.SocketStream] = []

    async def hold(stream: anyio.abc.SocketStream) -> None:
        nonlocal connected, peak, arrived
        async with stream:
            connected += 1
            arrived += 1
            peak = max(peak, connected)
            waiting.append(stream)
            if connected == 2 or arrived == 6:  # the last task may find itself alone
                for held in waiting:
                    await held.send(b"!")
                waiting.clear()
            with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive()  # the task exits
            connected -= 1

    async with (
        Executor(db=tmp_path / "r.db", max_concurrency=2) as ex,
        await anyio.create_unix_listener(gate) as listener,
        anyio.create_task_group() as serving,
    ):
        serving.start_soon(listener.serve, hold)
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(ex.run, argv)
        serving.cancel_scope.cancel()
    assert peak == 2


async def test_cancelling_a_run_waiting_for_a_slot_ends_it_without_waiting_for_the_slot(
    tmp_path: Path, script: Callable[[str], list[str]]
) -> None:
    holder = script(
        """
        import time
        print("holding", flush=True)
        time.sleep(300)  # holds the only slot until the test cancels it
        """
    )
    async with Executor(db=tmp_path / "r.db", max_concurrency=1) as ex:
        async with ex.start(holder, name="holder") as first:
            async for message in first.messages():
                if message.sig == "log" and message.data["message"] == "holding":
                    break
            ran: list[str] = []
            async with ex.start([PYTHON, "-c", "pass"], name="queued") as queued:
                queued.on("started", lambda event: ran.append(event.sig))
                await queued.cancel()
                with anyio.fail_after(30):  # a hang guard: the slot is never freed before this
                    record = await queued.wait()
            assert not first.done and first.status == "RUNNING"
            await first.cancel()
        assert record.status == "CANCELLED" and record.started_at is None and ran == []
        assert (await first.wait()).status == "CANCELLED"
        stored = (await ex.store()).get(record.id)
        assert stored.status == "CANCELLED"


async def test_records_survive_reopening_the_store(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with Executor(db=db) as ex:
        record = await ex.run([PYTHON, "-c", "print('hi')"], name="keep", params={"a": 1})
    with RecordStore(db) as store:
        again = store.get(record.id)
    assert again.status == "COMPLETED" and again.params == {"a": 1}
    assert again.started_at is not None and again.ended_at is not None
    assert again.ended_at >= again.started_at >= again.submitted_at


async def test_secrets_in_the_environment_are_redacted_in_records(
    executor: Executor, tmp_path: Path
) -> None:
    env = {"API_TOKEN": "tok-123456789", "DB_PASSWORD": "hunter2hunter2", "THRESHOLD": "3"}
    record = await executor.run([PYTHON, "-c", "pass"], env=env)
    stored = (await executor.store()).get(record.id)
    for rec in (record, stored):
        assert rec.env["API_TOKEN"] != "tok-123456789"
        assert rec.env["DB_PASSWORD"] != "hunter2hunter2"
        assert rec.env["LUTE_ASYNC_SECRET"] != dict(os.environ).get("LUTE_ASYNC_SECRET", "x")
        assert rec.env["THRESHOLD"] == "3"
    raw = (tmp_path / "runs.db").read_bytes()
    assert b"hunter2hunter2" not in raw and b"tok-123456789" not in raw


async def test_run_function_returns_the_functions_value(
    executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mytasks.py").write_text(
        "from lute_async.task import task\n"
        "@task\n"
        "def double(n, report):\n"
        "    report.progress(0.5, 'half')\n"
        "    return {'twice': n * 2}\n"
        "@task\n"
        "def broken(n):\n"
        "    raise ValueError(f'bad n={n}')\n"
        "def plain():\n"
        "    return 1\n"
    )
    # the worker imports nothing from its cwd: a task module must be on PYTHONPATH
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    record = await executor.run_function("mytasks:double", params={"n": 21})
    assert record.status == "COMPLETED" and record.result is not None
    assert record.result["payload"] == {"twice": 42}

    failed = await executor.run_function("mytasks:broken", params={"n": 5})
    assert failed.status == "FAILED" and failed.error is not None
    assert failed.error["type"] == "ValueError" and failed.error["message"] == "bad n=5"
    assert "raise ValueError" in failed.error["traceback"]

    refused = await executor.run_function("mytasks:plain")
    assert refused.status == "FAILED" and refused.error is not None
    assert "not marked as a task" in refused.error["message"]


async def test_async_task_functions_run_too(
    executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "asynctasks.py").write_text(
        "import asyncio\n"
        "from lute_async.task import task\n"
        "@task\n"
        "async def wait_and_sum(values, report):\n"
        "    await report.progress(1.0, 'summed')\n"
        "    await asyncio.sleep(0)\n"
        "    return sum(values)\n"
    )
    # the worker imports nothing from its cwd: a task module must be on PYTHONPATH
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    progress: list[float] = []
    executor.on("progress", lambda e: progress.append(e.data["fraction"]))
    record = await executor.run_function("asynctasks:wait_and_sum", params={"values": [1, 2, 3]})
    assert record.status == "COMPLETED" and record.result is not None
    assert record.result["payload"] == 6 and progress == [1.0]


async def test_large_params_reach_the_task_through_a_file(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    params = {"blob": "x" * 200_000}
    argv = script(
        """
        from lute_async.task import Reporter, read_params
        with Reporter.connect() as report:
            report.result(len(read_params()["blob"]))
        """
    )
    record = await executor.run(argv, params=params)
    assert record.result is not None and record.result["payload"] == 200_000
    assert not any((executor.workdir / record.id).glob("params.json"))


async def test_start_streams_messages_in_order_ending_with_the_terminal_event(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    async with executor.start(script(REPORTING_TASK), name="live") as run:
        names = [message.sig async for message in run.messages()]
        record = await run.wait()
    assert names[0] == "started" and names[-1] == "done"
    assert names.count("progress") == 3 and "result" in names
    assert record.status == "COMPLETED" and run.status == "COMPLETED"


async def test_stop_and_resume_fire_events_and_pause_the_process(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import time
        print("ready", flush=True)
        time.sleep(300)  # the test cancels it once stop and resume were observed
        """
    )
    states: list[str] = []
    async with executor.start(argv, name="pausable") as run:
        async for message in run.messages():
            if message.sig == "log" and message.data["message"] == "ready":
                await run.stop()
            elif message.sig == "stopped":
                states.append(_proc_state(run.pid))
                await run.resume()
            elif message.sig == "continued":
                states.append(_proc_state(run.pid))
                await run.cancel()
        record = await run.wait()
    assert states[0] == "T" and states[1] != "T"
    assert record.status == "CANCELLED"


def _proc_state(pid: int | None) -> str:
    assert pid is not None
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


async def test_cancelling_the_caller_cancels_the_run_and_ends_the_process(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    pids: list[int] = []
    cancelled: list[str] = []
    ready = anyio.Event()

    def on_started(event: Event) -> None:
        pids.append(event.data["pid"])

    def on_log(event: Event) -> None:
        ready.set()

    argv = script("import time\nprint('ready', flush=True)\ntime.sleep(300)\n")
    executor.on("cancelled", lambda e: cancelled.append(e.run.status))
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: executor.run(argv, hooks={"started": on_started, "log": on_log}, grace=1)
        )
        await ready.wait()
        tg.cancel_scope.cancel()
    assert cancelled == ["CANCELLED"]
    assert not process_exists(pids[0])
    rows = (await executor.store()).query(status="CANCELLED")
    assert len(rows) == 1


async def test_exception_in_start_block_cancels_the_run(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script("import time\ntime.sleep(300)\n")
    with pytest.raises(KeyError):
        async with executor.start(argv, name="doomed", grace=1) as run:
            raise KeyError("user code failed")
    assert run.status == "CANCELLED"


async def test_slow_hook_back_pressures_without_dropping_messages(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    received: list[int] = []

    async def slow(event: Event) -> None:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        received.append(event.data)

    executor.on("tick", slow)
    argv = script(
        """
        from lute_async.task import Reporter
        with Reporter.connect() as report:
            for i in range(20_000):
                report.emit("tick", i)
        """
    )
    record = await executor.run(argv)
    assert record.status == "COMPLETED"
    assert received == list(range(20_000))


def test_task_script_runs_standalone_logging_to_stderr(tmp_path: Path) -> None:
    import json
    import subprocess

    path = tmp_path / "alone.py"
    path.write_text(
        "from lute_async.task import Reporter\n"
        "with Reporter.connect() as r:\n"
        "    r.progress(0.5, 'half')\n"
        "    r.result({'x': 1})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUTE_ASYNC_")}
    out = subprocess.run([sys.executable, path], env=env, capture_output=True, check=True)
    lines = [json.loads(line) for line in out.stderr.decode().splitlines()]
    assert [line["event"] for line in lines] == ["progress", "result"]
    assert lines[1]["data"]["payload"] == {"x": 1}


def test_task_script_sending_bytes_runs_standalone(tmp_path: Path) -> None:
    import json
    import subprocess

    path = tmp_path / "alone.py"
    path.write_text(
        "from lute_async.task import Reporter\n"
        "with Reporter.connect() as r:\n"
        "    r.emit('chunk', bytearray(b'raw'))\n"
        "    r.result(b'ab\\xff')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUTE_ASYNC_")}
    out = subprocess.run([sys.executable, path], env=env, capture_output=True, check=True)
    lines = [json.loads(line) for line in out.stderr.decode().splitlines()]
    assert [line["data"] for line in lines] == [
        "raw",
        {"payload": "ab\\xff", "summary": None},
    ]


async def test_reporter_falls_back_to_the_pipe_when_the_socket_is_gone(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    argv = script(
        """
        import os
        from lute_async.task import Reporter
        os.unlink(os.environ["LUTE_ASYNC_SOCKET"])
        with Reporter.connect(prefer=("socket", "pipe")) as report:
            report.result("via the pipe")
        """
    )
    record = await executor.run(argv)
    assert record.status == "COMPLETED" and record.result is not None
    assert record.result["payload"] == "via the pipe"


async def test_a_run_with_inherit_env_false_gets_its_env_alone(
    executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inherit_env=False`` for one run: the task sees its ``env`` and lute-async's own
    variables, nothing the executor inherited; other runs still inherit."""
    monkeypatch.setenv("LUTE_TEST_INHERITED", "from the executor")
    seen: dict[str, list[str]] = {}
    show = [sys.executable, "-c", "import os; print(' '.join(sorted(os.environ)))"]
    for inherit in (None, False):
        lines: list[str] = []
        record = await executor.run(
            show,
            env={"GREETING": "hello"},
            hooks={"log": lambda event, kept=lines: kept.append(event.data["message"])},
            **({} if inherit is None else {"inherit_env": inherit}),
        )
        assert record.status == "COMPLETED", record.error
        seen[str(inherit)] = lines[0].split()
    assert {"GREETING", "LUTE_TEST_INHERITED", "PATH"} <= set(seen["None"])
    alone = set(seen["False"])
    assert "GREETING" in alone and "LUTE_TEST_INHERITED" not in alone and "PATH" not in alone
    assert {name for name in alone if not name.startswith("LUTE_ASYNC_")} <= {
        "GREETING", "PYTHONUNBUFFERED", "LC_CTYPE",
    }  # fmt: skip


async def test_a_finished_run_is_freed_without_the_garbage_collector(tmp_path: Path) -> None:
    # A run's objects in a reference cycle wait for the collector: thousands of short runs
    # then trigger full collections (a run's whole graph of ~70 objects each time, measured
    # at ~4% of the executor's loop). Refcounting alone must free a finished run.
    async with Executor(db=tmp_path / "runs.db", workdir=tmp_path / "runs") as executor:
        await executor.run(["true"])  # what a process keeps from its first run on
        with cyclic_garbage() as left:
            for communicators in (("pipe",), ("pipe", "socket"), ("socket",)):
                record = await executor.run(["true"], communicators=communicators)
                assert record.status == "COMPLETED"
    assert left == []
