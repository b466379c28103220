"""Retries: one run, one record, up to ``attempts`` real processes, each attempt recorded.

Tasks count their attempts in a file, so an attempt's outcome depends on how many came before.
Every wait is on an event (a hook, a process exit), never on time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from lute_async import AnalysisRecord, Channel, Event, Executor, Message, Retry, TaskStatus
from lute_async.config import parse_config, parse_graph
from lute_async.errors import ConfigError
from lute_async.launchers.slurm import Slurm
from lute_async.records import RecordStore
from lute_async.records.keeper import RecordKeeper
from lute_async.retry import reason_for
from lute_async.workflow import load_graph
from tests.slurm_support import SlurmCluster, slurm_cluster  # noqa: F401 - a fixture

PYTHON = sys.executable
CLI = [PYTHON, "-m", "lute_async.cli"]
TERMINAL = {"done", "failed", "cancelled", "timed_out"}

#: Fails (exit 3) until its attempt number, kept in COUNT, reaches SUCCEED_AT.
FLAKY = """\
import os, sys, time
path = os.environ["COUNT"]
n = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(n))
print("attempt", n, flush=True)
if n < int(os.environ.get("SUCCEED_AT", "1000")):
    if os.environ.get("HANG"):
        time.sleep(3600)
    sys.exit(3)
"""


@pytest.fixture
def flaky(tmp_path: Path) -> Callable[..., tuple[list[str], dict[str, str]]]:
    """The argv of FLAKY and the env that makes it succeed at attempt ``succeed_at``."""
    path = tmp_path / "flaky.py"
    path.write_text(FLAKY)

    def make(succeed_at: int = 1000, **extra: str) -> tuple[list[str], dict[str, str]]:
        env = {"COUNT": os.fspath(tmp_path / "count"), "SUCCEED_AT": str(succeed_at), **extra}
        return [PYTHON, os.fspath(path)], env

    return make


def recorder(executor: Executor) -> list[Event]:
    events: list[Event] = []
    executor.on("*", events.append)
    return events


async def test_a_task_failing_twice_then_succeeding_completes_with_three_attempts(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    events = recorder(executor)
    argv, env = flaky(succeed_at=3)
    record = await executor.run(argv, env=env, retry=Retry(attempts=3, backoff=0))
    assert record.status == TaskStatus.COMPLETED and record.exit_code == 0
    assert [a["attempt"] for a in record.attempts] == [1, 2, 3]
    assert [a["status"] for a in record.attempts] == ["FAILED", "FAILED", "COMPLETED"]
    assert [a["exit_code"] for a in record.attempts] == [3, 3, 0]
    assert [a["reason"] for a in record.attempts] == ["failed", "failed", None]
    assert all(a["started_at"] <= a["ended_at"] for a in record.attempts)
    assert record.attempts[0]["next_at"] is not None and record.attempts[2]["next_at"] is None
    assert record.error is None and record.verdict == {"kind": "ok", "detail": None}
    # One run: every event is of this run's id, one start, two retries, one terminal event last.
    assert {event.run.id for event in events} == {record.id}
    names = [event.name for event in events if event.name != "log"]
    assert names == ["started", "retrying", "retrying", "done"]
    retrying = [event.data for event in events if event.name == "retrying"]
    assert [(d["attempt"], d["reason"], d["delay"]) for d in retrying] == [
        (1, "failed", 0.0),
        (2, "failed", 0.0),
    ]
    assert [e.data["message"] for e in events if e.name == "log"] == [
        "attempt 1",
        "attempt 2",
        "attempt 3",
    ]


async def test_the_final_status_is_the_last_attempts_when_every_attempt_fails(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    events = recorder(executor)
    argv, env = flaky()
    record = await executor.run(argv, env=env, retry=Retry(attempts=2, backoff=0))
    assert record.status == TaskStatus.FAILED and record.exit_code == 3
    assert [a["status"] for a in record.attempts] == ["FAILED", "FAILED"]
    assert record.error is not None and record.error["type"] == "NonZeroExit"
    assert [e.name for e in events if e.name in TERMINAL] == ["failed"]


def test_the_backoff_grows_by_the_multiplier_up_to_the_max_delay() -> None:
    retry = Retry(backoff=1, multiplier=2, max_delay=3)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]
    assert Retry().to_dict() == {
        "attempts": 3,
        "backoff": 1.0,
        "multiplier": 2.0,
        "max_delay": 60.0,
        "on": ["failed", "timed_out", "lost"],
    }


@pytest.mark.parametrize(
    ("event", "error", "reason"),
    [
        ("failed", {"type": "NonZeroExit"}, "failed"),
        ("failed", None, "failed"),
        ("timed_out", None, "timed_out"),
        ("failed", {"type": "SlurmJobLost"}, "lost"),
        ("failed", {"type": "NodeFail"}, "lost"),
        ("done", None, None),
        ("cancelled", None, None),
    ],
)
def test_an_attempts_ending_names_the_retry_reason(
    event: str, error: dict[str, str] | None, reason: str | None
) -> None:
    assert reason_for(event, error) == reason


def test_a_retry_follows_only_its_endings_and_only_while_attempts_are_left() -> None:
    retry = Retry(attempts=3, on=["failed"])
    assert retry.retries("failed", 1) and retry.retries("failed", 2)
    assert not retry.retries("failed", 3)
    assert not retry.retries("timed_out", 1) and not retry.retries(None, 1)


async def test_the_retrying_event_carries_each_backoff(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    events = recorder(executor)
    argv, env = flaky()
    retry = Retry(attempts=3, backoff=0.01, multiplier=3)
    record = await executor.run(argv, env=env, retry=retry)
    delays = [event.data["delay"] for event in events if event.name == "retrying"]
    assert delays == pytest.approx([0.01, 0.03])
    assert [a["delay"] for a in record.attempts] == [*delays, None]
    assert record.extra["retry"]["multiplier"] == 3.0


async def test_a_cancel_during_the_backoff_ends_the_run_cancelled_at_once(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    argv, env = flaky()
    retrying = anyio.Event()
    async with executor.start(argv, env=env, retry=Retry(backoff=3600)) as run:
        run.on("retrying", lambda event: retrying.set())
        await retrying.wait()  # the first attempt has failed: an hour's backoff begins
        await run.cancel()
        record = await run.wait()
    assert record.status == TaskStatus.CANCELLED
    assert record.error is not None
    assert "while waiting to start attempt 2" in record.error["message"]
    assert [a["status"] for a in record.attempts] == ["FAILED"]
    store = await executor.store()
    assert store.get(record.id).status == TaskStatus.CANCELLED


async def test_cancelling_the_caller_during_the_backoff_records_the_run_cancelled(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    argv, env = flaky()
    ids: list[str] = []
    async with anyio.create_task_group() as tg:

        def on_retrying(event: Event) -> None:
            ids.append(event.run.id)
            tg.cancel_scope.cancel()

        tg.start_soon(
            lambda: executor.run(
                argv, env=env, retry=Retry(backoff=3600), hooks={"retrying": on_retrying}
            )
        )
    store = await executor.store()
    record = store.get(ids[0])
    assert record.status == TaskStatus.CANCELLED
    assert [a["attempt"] for a in record.attempts] == [1]


async def test_a_missing_executable_is_not_retried(executor: Executor, tmp_path: Path) -> None:
    events = recorder(executor)
    record = await executor.run([os.fspath(tmp_path / "no-such-program")], retry=Retry(backoff=0))
    assert record.status == TaskStatus.FAILED
    assert record.error is not None and record.error["type"] == "LaunchError"
    assert [a["status"] for a in record.attempts] == ["FAILED"]
    assert "retrying" not in [event.name for event in events]


async def test_an_ending_the_retry_is_not_for_ends_the_run(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    argv, env = flaky()
    record = await executor.run(argv, env=env, retry=Retry(backoff=0, on=["timed_out"]))
    assert record.status == TaskStatus.FAILED and len(record.attempts) == 1


async def test_a_timed_out_attempt_is_retried_with_the_whole_timeout_again(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    argv, env = flaky(succeed_at=2, HANG="1")
    record = await executor.run(argv, env=env, timeout=2, retry=Retry(backoff=0))
    assert record.status == TaskStatus.COMPLETED
    assert [(a["status"], a["reason"]) for a in record.attempts] == [
        ("TIMEDOUT", "timed_out"),
        ("COMPLETED", None),
    ]
    assert record.attempts[0]["verdict"]["kind"] == "time_limit"
    assert record.verdict == {"kind": "ok", "detail": None}


async def test_a_run_without_retry_records_no_attempts(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    argv, env = flaky()
    record = await executor.run(argv, env=env)
    assert record.status == TaskStatus.FAILED and record.attempts == []


async def test_a_task_may_not_send_the_retrying_event(executor: Executor, tmp_path: Path) -> None:
    events = recorder(executor)
    task = tmp_path / "sends_retrying.py"
    task.write_text(
        "from lute_async.task import Reporter\n"
        "with Reporter.connect() as report:\n"
        "    report.emit('retrying', {'attempt': 1})\n"
    )
    record = await executor.run([PYTHON, os.fspath(task)], retry=Retry(backoff=0))
    assert record.status == TaskStatus.COMPLETED and len(record.attempts) == 1
    assert "retrying" not in [event.name for event in events]
    errors = record.extra["protocol_errors"]
    assert "tasks may not send the executor's own event 'retrying'" in errors[0]["message"]


async def test_the_attempts_survive_a_reload_of_the_database(
    executor: Executor,
    flaky: Callable[..., tuple[list[str], dict[str, str]]],
    tmp_path: Path,
) -> None:
    argv, env = flaky(succeed_at=2)
    record = await executor.run(argv, env=env, retry=Retry(backoff=0))
    await executor.aclose()
    with RecordStore(tmp_path / "runs.db") as store:
        loaded = store.get(record.id)
    assert loaded.attempts == record.attempts and len(loaded.attempts) == 2
    assert loaded.status == TaskStatus.COMPLETED


async def test_start_streams_the_retrying_message_and_one_terminal_event(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    argv, env = flaky(succeed_at=2)
    async with executor.start(argv, env=env, retry=Retry(backoff=0)) as run:
        names = [message.sig async for message in run.messages() if message.sig != "log"]
    assert names == ["started", "retrying", "done"]


async def test_run_function_retries_a_function_that_raises(
    executor: Executor, tmp_path: Path
) -> None:
    (tmp_path / "flaky_tasks.py").write_text(
        textwrap.dedent(
            """
            import os
            from lute_async.task import task

            @task
            def once_broken(path):
                if not os.path.exists(path):
                    open(path, "w").close()
                    raise RuntimeError("first attempt breaks")
                return {"ok": True}
            """
        )
    )
    record = await executor.run_function(
        "flaky_tasks:once_broken",
        params={"path": os.fspath(tmp_path / "mark")},
        env={"PYTHONPATH": os.pathsep.join([os.fspath(tmp_path), *sys.path])},
        retry={"attempts": 2, "backoff": 0},
    )
    assert record.status == TaskStatus.COMPLETED, record.error
    assert record.result is not None and record.result["payload"] == {"ok": True}
    first = record.attempts[0]
    assert first["status"] == "FAILED" and "first attempt breaks" in first["error"]["message"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"attempts": 0}, "retry.attempts"),
        ({"attempts": 1.5}, "retry.attempts"),
        ({"backoff": -1.0}, "retry.backoff"),
        ({"multiplier": 0.5}, "retry.multiplier"),
        ({"max_delay": -1.0}, "retry.max_delay"),
        ({"on": ("failed", "crashed")}, "retry.on"),
        ({"on": "failed"}, "retry.on"),
    ],
)
def test_a_bad_retry_value_is_a_config_error_naming_it(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"key '{named}'")):
        Retry(**values)


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("{attempts = 0}", "retry.attempts"),
        ("{backoff = -1}", "retry.backoff"),
        ('{on = ["failed", "crashed"]}', "retry.on"),
        ("{tries = 3}", "retry.tries"),
        ("3", "retry"),
    ],
)
def test_a_bad_retry_table_in_a_task_file_names_the_file_task_and_key(
    table: str, named: str
) -> None:
    text = f'[tasks.flaky]\ncommand = ["true"]\nretry = {table}\n'
    with pytest.raises(ConfigError, match=re.escape(f"tasks.toml: task 'flaky': key '{named}'")):
        parse_config(text, "tasks.toml")


async def test_a_run_with_a_channel_cannot_have_a_retry(executor: Executor) -> None:
    with pytest.raises(ConfigError, match="cannot be retried"):
        await executor.run(["true"], stdout=Channel(), retry=Retry())
    assert (await executor.store()).query() == []


async def test_a_bad_retry_option_starts_nothing(executor: Executor) -> None:
    with pytest.raises(ConfigError, match=re.escape("key 'retry.attempts'")):
        await executor.run(["true"], retry={"attempts": 0})
    store = await executor.store()
    assert store.query() == []


def test_a_task_files_retry_table_reaches_the_run_options() -> None:
    config = parse_config(
        '[tasks.flaky]\ncommand = ["true"]\nretry = {attempts = 5, backoff = 0.5}\n', "t.toml"
    )
    options = config.resolve("flaky").run_options()
    assert options["retry"] == Retry(attempts=5, backoff=0.5)


def test_a_graph_nodes_retry_is_checked_and_kept() -> None:
    config = parse_config('[graph.a]\ncommand = ["true"]\nretry = {attempts = 2}\n', "g.toml")
    assert parse_graph(config)[0].options["retry"] == Retry(attempts=2)
    bad = parse_config('[graph.a]\ncommand = ["true"]\nretry = {attempts = -1}\n', "g.toml")
    named = "g.toml: graph node 'a': key 'retry.attempts'"
    with pytest.raises(ConfigError, match=re.escape(named)):
        parse_graph(bad)


async def test_a_graph_node_is_retried_and_its_dependant_runs(
    executor: Executor, flaky: Callable[..., tuple[list[str], dict[str, str]]], tmp_path: Path
) -> None:
    argv, env = flaky(succeed_at=2)
    command = ["env", *(f"{key}={value}" for key, value in env.items()), *argv]
    graph = tmp_path / "graph.toml"
    graph.write_text(
        f"[graph.flaky]\ncommand = {json.dumps(command)}\nretry = {{attempts = 2, backoff = 0}}\n"
        '[graph.after]\ncommand = ["true"]\nafter = ["flaky"]\n'
    )
    records = await load_graph(graph, executor).run()
    assert records["flaky"].status == TaskStatus.COMPLETED
    assert len(records["flaky"].attempts) == 2
    assert records["after"].status == TaskStatus.COMPLETED


def test_records_show_lists_the_attempts_and_run_reads_retry_from_the_task_file(
    tmp_path: Path, flaky: Callable[..., tuple[list[str], dict[str, str]]]
) -> None:
    argv, env = flaky(succeed_at=3)
    (tmp_path / "lute-async.toml").write_text(
        f"[tasks.flaky]\ncommand = {json.dumps(argv)}\n"
        "retry = {attempts = 3, backoff = 0}\n"
        f"env = {{COUNT = {json.dumps(env['COUNT'])}, SUCCEED_AT = '3'}}\n"
    )
    cli_env = {
        **os.environ,
        "LUTE_ASYNC_DB": os.fspath(tmp_path / "runs.db"),
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
    }

    def lute(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], capture_output=True, text=True, cwd=tmp_path, env=cli_env, timeout=60
        )

    ran = lute("run", "flaky", "--json")
    assert ran.returncode == 0, ran.stderr
    record = json.loads(ran.stdout)
    assert record["status"] == "COMPLETED" and len(record["attempts"]) == 3
    shown = lute("records", "show", record["id"])
    assert shown.returncode == 0, shown.stderr
    assert "#1 FAILED exit code 3" in shown.stdout
    assert "#2 FAILED exit code 3" in shown.stdout
    assert "#3 COMPLETED exit code 0" in shown.stdout
    assert "retried (failed) after 0 s" in shown.stdout


@pytest.mark.slurm
async def test_a_slurm_job_that_fails_is_resubmitted_as_a_new_job_of_the_same_run(
    request: pytest.FixtureRequest,
    executor: Executor,
    flaky: Callable[..., tuple[list[str], dict[str, str]]],
) -> None:
    cluster: SlurmCluster = request.getfixturevalue("slurm_cluster")  # skips without it
    events = recorder(executor)
    argv, env = flaky(succeed_at=2)
    launcher = Slurm(tcp_host="127.0.0.1")
    record = await executor.run(argv, env=env, launcher=launcher, retry=Retry(backoff=0))
    assert record.status == TaskStatus.COMPLETED, record.error
    jobs = [attempt["slurm_job_id"] for attempt in record.attempts]
    assert [a["status"] for a in record.attempts] == ["FAILED", "COMPLETED"]
    assert len(set(jobs)) == 2 and record.slurm_job_id == jobs[1]
    assert cluster.job_state(jobs[0]) == "FAILED"
    assert cluster.job_state(jobs[1]) == "COMPLETED"
    lifecycle = [e.name for e in events if e.name in {"queued", "retrying", *TERMINAL}]
    assert lifecycle == ["queued", "retrying", "queued", "done"]


def test_the_keeper_files_each_attempt_and_clears_what_was_its_own() -> None:
    record = AnalysisRecord(name="flaky")
    keeper = RecordKeeper(record)
    keeper.apply(Message("started", {"pid": 10}, ts=1.0))
    keeper.apply(Message("result", {"payload": 1, "summary": None}, source="pipe", ts=1.5))
    keeper.apply(Message("error", {"type": "OSError", "message": "disk"}, source="pipe", ts=2))
    failed = {"exit_code": 3, "signal": None, "usage": None, "error": None, "extra": {}}
    retrying = {**failed, "attempt": 1, "reason": "failed", "event": "failed", "delay": 0.5}
    assert keeper.apply(Message("retrying", {**retrying, "next_at": 3.5}, ts=3.0))
    assert record.status == TaskStatus.PENDING
    assert record.error is None and record.result is None and record.exit_code is None
    keeper.apply(Message("started", {"pid": 11}, ts=4.0))
    done = {"exit_code": 0, "signal": None, "usage": None, "error": None, "attempt": 2}
    keeper.apply(Message("done", done, ts=5.0))
    assert record.status == TaskStatus.COMPLETED and record.error is None and record.pid == 11
    first, second = record.attempts
    assert first["error"]["type"] == "OSError" and first["exit_code"] == 3
    assert (first["started_at"], first["ended_at"], first["next_at"]) == (1.0, 3.0, 3.5)
    assert first["verdict"]["kind"] == "runtime_error"
    assert (second["attempt"], second["status"], second["started_at"]) == (2, "COMPLETED", 4.0)
    assert second["verdict"] == {"kind": "ok", "detail": None}


#: Attempt 1 keeps its secret in a file and fails; attempt 2 reports over the shared socket
#: with attempt 1's secret (a process attempt 1 left behind would), then with its own.
STALE_SECRET = """\
import os, sys
from lute_async.task import Reporter
kept = os.environ["KEPT"]
mine = os.environ["LUTE_ASYNC_SECRET"]
if not os.path.exists(kept):
    open(kept, "w").write(mine)
    sys.exit(3)
open(kept + ".2", "w").write(mine)
os.environ["LUTE_ASYNC_SECRET"] = open(kept).read()
with Reporter.connect(prefer=("socket",), required=True) as stale:
    stale.emit("stale", {"from": "attempt 1"})
os.environ["LUTE_ASYNC_SECRET"] = mine
with Reporter.connect(required=True) as report:
    report.emit("fresh", {"from": "attempt 2"})
"""


async def test_each_attempt_has_its_own_secret_and_an_earlier_ones_is_refused(
    executor: Executor, tmp_path: Path
) -> None:
    script = tmp_path / "stale.py"
    script.write_text(STALE_SECRET)
    kept = tmp_path / "secret"
    events = recorder(executor)
    record = await executor.run(
        [PYTHON, os.fspath(script)],
        env={"KEPT": os.fspath(kept)},
        communicators=["pipe", "socket"],
        retry=Retry(attempts=2, backoff=0),
    )
    assert record.status == TaskStatus.COMPLETED, record.error
    first, second = kept.read_text(), (tmp_path / "secret.2").read_text()
    assert first != second and len(first) >= 24
    names = [event.name for event in events if event.run.id == record.id]
    assert "fresh" in names and "stale" not in names
    refused = [error["message"] for error in record.extra.get("protocol_errors", [])]
    assert any("secret" in message for message in refused), refused
    # Neither attempt's secret is kept anywhere in the stored record.
    await executor.aclose()
    with RecordStore(tmp_path / "runs.db") as store:
        stored = json.dumps(store.get(record.id).to_dict())
    assert first not in stored and second not in stored
