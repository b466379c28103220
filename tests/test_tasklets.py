"""Tasklets: before and after steps around real task processes, declared in Python and in
task files; every bad step is a ConfigError before anything starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from lute_async import Event, Executor, Retry, Tasklet, TaskletContext, TaskStatus
from lute_async.config import parse_config
from lute_async.errors import ConfigError

PYTHON = sys.executable
CLI = [PYTHON, "-m", "lute_async.cli"]

#: Reports its params and two environment variables as its result.
ECHO = """\
import os
from lute_async.task import Reporter, read_params
with Reporter.connect() as report:
    report.result({"params": read_params(), "STAGE": os.environ.get("STAGE")})
"""

#: Steps imported by name ("tasklet_steps:NAME").
STEPS = """\
import os

def stage(context, source, copies=1):
    context.params["staged"] = f"{source}x{copies}"
    context.env["STAGE"] = "ready"

def broken(context):
    raise ValueError("no input files")

def skip_when_done(context, marker):
    if os.path.exists(marker):
        context.skip(f"{marker} exists")

def summarise(context):
    payload = context.record.result["payload"]
    context.set_summary(f"{len(payload['params'])} params")

NOT_CALLABLE = 3
"""


@pytest.fixture(scope="module", autouse=True)
def step_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``tasklet_steps`` importable, and on the PYTHONPATH of CLI subprocesses."""
    where = tmp_path_factory.mktemp("steps")
    (where / "tasklet_steps.py").write_text(STEPS)
    sys.path.insert(0, os.fspath(where))
    yield where
    sys.path.remove(os.fspath(where))
    sys.modules.pop("tasklet_steps", None)


@pytest.fixture
def echo(tmp_path: Path) -> list[str]:
    path = tmp_path / "echo.py"
    path.write_text(ECHO)
    return [PYTHON, os.fspath(path)]


def names(events: list[Event]) -> list[str]:
    return [event.name for event in events if event.name != "log"]


async def test_a_before_step_changes_the_params_and_env_the_task_gets(
    executor: Executor, echo: list[str]
) -> None:
    step = Tasklet("tasklet_steps:stage", args={"source": "{{ run }}", "copies": "{{ n }}"})
    record = await executor.run(echo, params={"run": "r42", "n": 2}, before=[step])
    assert record.status == TaskStatus.COMPLETED, record.error
    assert record.result is not None
    assert record.result["payload"] == {
        "params": {"run": "r42", "n": 2, "staged": "r42x2"},
        "STAGE": "ready",
    }
    assert record.params["staged"] == "r42x2"  # the record keeps what the task got


async def test_step_args_are_filled_from_the_params_with_paths_formats_and_variables(
    executor: Executor, echo: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEAMLINE", "mfx")
    seen: list[dict[str, Any]] = []

    def keep(context: TaskletContext, **args: Any) -> None:
        seen.append(args)

    args = {"n": "{{ n }}", "first": "{{ files.0 }}", "run": "{{ n:04d }}", "bl": "{{ $BEAMLINE }}"}
    await executor.run(echo, params={"n": 7, "files": ["a.h5"]}, before=[Tasklet(keep, args=args)])
    assert seen == [{"n": 7, "first": "a.h5", "run": "0007", "bl": "mfx"}]


async def test_a_before_step_can_skip_the_run_which_is_recorded_cancelled(
    executor: Executor, echo: list[str], tmp_path: Path
) -> None:
    events: list[Event] = []
    executor.on("*", events.append)
    marker = tmp_path / "done.marker"
    marker.touch()
    step = Tasklet("tasklet_steps:skip_when_done", args={"marker": os.fspath(marker)})
    record = await executor.run(echo, before=[step])
    assert record.status == TaskStatus.CANCELLED
    assert record.error is not None and record.error["type"] == "Skipped"
    assert "'tasklet_steps:skip_when_done'" in record.error["message"]
    assert f"{marker} exists" in record.error["message"]
    assert record.pid is None and names(events) == ["cancelled"]  # no process started
    stored = (await executor.store()).get(record.id)
    assert stored.status == TaskStatus.CANCELLED


async def test_a_before_step_that_raises_fails_the_run_naming_the_step(
    executor: Executor, echo: list[str]
) -> None:
    record = await executor.run(echo, before=["tasklet_steps:broken"])
    assert record.status == TaskStatus.FAILED and record.pid is None
    assert record.error is not None and record.error["type"] == "TaskletError"
    assert record.error["message"] == (
        "before step 'tasklet_steps:broken' failed: ValueError: no input files"
    )
    assert "raise ValueError" in record.error["traceback"]
    assert (await executor.store()).get(record.id).status == TaskStatus.FAILED


async def test_an_after_step_sets_the_summary_from_the_tasks_result(
    executor: Executor, echo: list[str]
) -> None:
    record = await executor.run(echo, params={"a": 1}, after=["tasklet_steps:summarise"])
    assert record.status == TaskStatus.COMPLETED
    assert record.result is not None and record.result["summary"] == "1 params"
    assert record.result["payload"]["params"] == {"a": 1}
    stored = (await executor.store()).get(record.id)
    assert stored.result is not None and stored.result["summary"] == "1 params"


async def test_an_after_step_sets_the_result_of_a_task_that_reported_none(
    executor: Executor,
) -> None:
    def count(context: TaskletContext, word: str) -> None:
        context.set_result({"word": word}, summary=f"said {word}")

    after = [Tasklet(count, args={"word": "{{ word }}"})]
    record = await executor.run(["true"], params={"word": "hi"}, after=after)
    assert record.result == {"payload": {"word": "hi"}, "summary": "said hi"}


async def test_an_after_step_that_raises_fails_the_run_with_one_terminal_event(
    executor: Executor, echo: list[str]
) -> None:
    events: list[Event] = []
    executor.on("*", events.append)
    record = await executor.run(echo, after=["tasklet_steps:broken"])
    assert record.status == TaskStatus.FAILED and record.exit_code == 0
    assert record.error is not None
    assert record.error["message"].startswith("after step 'tasklet_steps:broken' failed")
    assert names(events) == ["started", "result", "failed"]
    assert (await executor.store()).get(record.id).status == TaskStatus.FAILED


async def test_after_steps_do_not_run_when_the_task_failed(executor: Executor) -> None:
    ran: list[str] = []
    record = await executor.run(["false"], after=[lambda context: ran.append(context.step)])
    assert record.status == TaskStatus.FAILED and ran == []


async def test_command_steps_get_templated_arguments_and_the_runs_env(
    executor: Executor, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    write = "import os, sys; open(sys.argv[1], 'w').write(sys.argv[2] + os.environ['MODE'])"
    record = await executor.run(
        ["true"],
        params={"out": os.fspath(out), "word": "calibrated-"},
        env={"MODE": "fast"},
        before=[[PYTHON, "-c", write, "{{ out }}", "{{ word }}"]],
    )
    assert record.status == TaskStatus.COMPLETED
    assert out.read_text() == "calibrated-fast"


async def test_a_failing_command_step_fails_the_run_with_its_exit_code_and_stderr(
    executor: Executor,
) -> None:
    failing = Tasklet(command=[PYTHON, "-c", "import sys; sys.exit('disk full')"], name="stage")
    record = await executor.run(["true"], before=[failing])
    assert record.status == TaskStatus.FAILED and record.error is not None
    assert record.error["message"] == "before step 'stage' failed: exited with code 1: disk full"


async def test_a_template_naming_a_missing_param_fails_the_run_naming_the_step(
    executor: Executor,
) -> None:
    step = Tasklet(lambda context, path: None, args={"path": "{{ input }}"}, name="stage")
    record = await executor.run(["true"], params={"run": 1}, before=[step])
    assert record.status == TaskStatus.FAILED and record.error is not None
    assert "before step 'stage' failed" in record.error["message"]
    assert "no param 'input' (params: run)" in record.error["message"]


async def test_async_steps_are_awaited_and_steps_run_in_order(
    executor: Executor, echo: list[str]
) -> None:
    order: list[str] = []

    async def first(context: TaskletContext) -> None:
        await anyio.lowlevel.checkpoint()
        order.append("first")
        context.params["n"] = 1

    def second(context: TaskletContext) -> None:
        order.append(f"second saw {context.params['n']}")

    await executor.run(echo, before=[first, second], after=[lambda c: order.append("after")])
    assert order == ["first", "second saw 1", "after"]


async def test_a_cancel_during_a_before_step_ends_the_run_cancelled_at_once(
    executor: Executor, echo: list[str]
) -> None:
    entered = anyio.Event()

    async def wait_forever(context: TaskletContext) -> None:
        entered.set()
        await anyio.sleep_forever()

    async with executor.start(echo, before=[wait_forever]) as run:
        await entered.wait()
        await run.cancel()
        record = await run.wait()
    assert record.status == TaskStatus.CANCELLED and record.pid is None


async def test_cancelling_the_caller_during_an_after_step_records_the_run_cancelled(
    executor: Executor, echo: list[str]
) -> None:
    entered = anyio.Event()
    ids: list[str] = []

    async def wait_forever(context: TaskletContext) -> None:
        ids.append(context.run_id)
        entered.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: executor.run(echo, after=[wait_forever]))
        await entered.wait()
        tg.cancel_scope.cancel()
    record = (await executor.store()).get(ids[0])
    assert record.status == TaskStatus.CANCELLED


async def test_steps_run_once_around_all_the_attempts_of_a_retried_run(
    executor: Executor, tmp_path: Path
) -> None:
    ran: list[str] = []
    count = tmp_path / "count"
    flaky = (
        "import sys, pathlib; p = pathlib.Path(sys.argv[1]); "
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); sys.exit(n < 2)"
    )
    record = await executor.run(
        [PYTHON, "-c", flaky, os.fspath(count)],
        retry=Retry(backoff=0),
        before=[lambda c: ran.append("before")],
        after=[lambda c: ran.append("after")],
    )
    assert record.status == TaskStatus.COMPLETED and len(record.attempts) == 2
    assert ran == ["before", "after"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("tasklet_steps:stage", "key 'before': expected a list of steps"),
        (["no_such_module_xyz:step"], "cannot import module 'no_such_module_xyz'"),
        (["tasklet_steps:missing"], "module 'tasklet_steps' has no attribute 'missing'"),
        (["tasklet_steps:NOT_CALLABLE"], "step 'tasklet_steps:NOT_CALLABLE' is not callable"),
        (["stage"], "'stage' is not 'package.module:function'"),
        ([["no-such-program-xyz", "x"]], "command 'no-such-program-xyz' is not an executable"),
        ([[]], "a command is a non-empty list of strings"),
        ([{"function": "tasklet_steps:stage", "when": "now"}], "unknown key 'when'"),
        ([Tasklet("tasklet_steps:stage", command=["true"])], "exactly one of"),
        ([Tasklet(command=["true"], args={"a": 1})], "a command step takes no 'args'"),
        ([Tasklet("tasklet_steps:stage", args={"s": "{{ a b }}"})], "template {{ a b }}"),
        ([42], "expected a step"),
    ],
)
async def test_a_bad_step_is_a_config_error_naming_it_before_anything_starts(
    executor: Executor, steps: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        await executor.run(["true"], before=steps)
    assert "'before'" in str(info.value)
    with pytest.raises(ConfigError, match=r"key 'after'"):
        await executor.run(["true"], after=steps)
    assert (await executor.store()).query() == []


def test_a_bad_step_in_a_task_file_names_the_file_task_and_step() -> None:
    config = parse_config(
        '[tasks.peaks]\ncommand = ["true"]\nafter = ["tasklet_steps:summarise", "nope_xyz:f"]\n',
        "tasks.toml",
    )
    with pytest.raises(ConfigError) as info:
        config.resolve("peaks")
    assert str(info.value).startswith("tasks.toml: task 'peaks': key 'after' step 2: ")
    assert "cannot import module 'nope_xyz'" in str(info.value)
    with pytest.raises(ConfigError, match=re.escape("tasks.toml: task 'peaks': key 'before'")):
        parse_config('[tasks.peaks]\ncommand = ["true"]\nbefore = 3\n', "tasks.toml")


def test_a_task_files_steps_run_around_the_task(
    tmp_path: Path, step_module: Path, echo: list[str]
) -> None:
    out = tmp_path / "staged.txt"
    (tmp_path / "lute-async.toml").write_text(
        textwrap.dedent(
            f"""
            [tasks.echo]
            command = {json.dumps(echo)}
            before = [
                {{ function = "tasklet_steps:stage", args = {{ source = "{{{{ run }}}}" }} }},
                ["{PYTHON}", "-c", "import sys; open(sys.argv[1], 'w').write('ok')", "{out}"],
            ]
            after = ["tasklet_steps:summarise"]

            [tasks.echo.params]
            run = "r7"
            """
        )
    )
    env = {
        **os.environ,
        "LUTE_ASYNC_DB": os.fspath(tmp_path / "runs.db"),
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.fspath(step_module)]),
    }
    done = subprocess.run(
        [*CLI, "run", "echo", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "COMPLETED"
    assert record["result"]["payload"]["params"] == {"run": "r7", "staged": "r7x1"}
    assert record["result"]["summary"] == "2 params"
    assert out.read_text() == "ok"
