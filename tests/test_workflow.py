"""Workflows: dependencies, concurrency of independent branches, failure propagation,
after_any, cycle rejection and results flowing into dependants' params."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from lute_async import Event, Executor
from lute_async.errors import ConfigError
from lute_async.workflow import GraphCycleError, GraphError, Workflow, run_graph_from_config


def _order_hook(log: list[tuple[str, str]]) -> Callable[[Event], None]:
    def hook(event: Event) -> None:
        log.append((event.name, event.run.name))

    return hook


async def test_a_diamond_runs_its_middle_pair_concurrently(
    executor: Executor, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    # b and c meet at a FIFO: opening it for writing blocks until a reader opens it, and the
    # other way round, so neither can finish unless both are running at the same time.
    fifo = tmp_path / "rendezvous"
    os.mkfifo(fifo)
    log: list[tuple[str, str]] = []
    for event in ("started", "done", "failed", "cancelled", "timed_out"):
        executor.on(event, _order_hook(log))
    graph = executor.graph()
    graph.add("a", script("print('a')"))
    graph.add("b", script(f"open({str(fifo)!r}, 'w').write('b')"), after=["a"], timeout=30)
    graph.add("c", script(f"print(open({str(fifo)!r}).read())"), after=["a"], timeout=30)
    graph.add("d", script("print('d')"), after=["b", "c"])
    records = await graph.run()
    assert {name: r.status for name, r in records.items()} == dict.fromkeys("abcd", "COMPLETED")
    first_middle_done = min(log.index(("done", "b")), log.index(("done", "c")))
    assert log.index(("started", "b")) < first_middle_done
    assert log.index(("started", "c")) < first_middle_done
    assert log.index(("done", "a")) < log.index(("started", "b"))
    assert max(log.index(("done", "b")), log.index(("done", "c"))) < log.index(("started", "d"))


async def test_max_concurrency_bounds_independent_branches(
    executor: Executor, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    # Each task blocks on its own FIFO until the test releases it, and the test releases the
    # started tasks only once two run at the same time (or the last one has started): a graph
    # that ran its branches one by one would leave each task blocked (SIGALRM ends it FAILED),
    # one that ran three at once would show most == 3.
    total = 4
    running = 0
    most = 0
    started_names: list[str] = []
    released: set[str] = set()

    def release(name: str) -> None:
        with open(tmp_path / name, "w") as fifo:  # blocks until the task opens its end
            fifo.write("go")

    async def started(event: Event) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        started_names.append(event.run.name)
        if running == 2 or len(started_names) == total:
            for name in started_names:
                if name not in released:
                    released.add(name)
                    await anyio.to_thread.run_sync(release, name)

    def ended(event: Event) -> None:
        nonlocal running
        running -= 1

    graph = Workflow(executor, max_concurrency=2)
    for i in range(total):
        os.mkfifo(tmp_path / f"t{i}")
        task = script(
            f"""
            import signal
            signal.alarm(30)  # a hang guard: never released means the bound was not used
            print(open({str(tmp_path / f"t{i}")!r}).read())
            """
        )
        graph.add(f"t{i}", task, hooks={"started": started, "done": ended, "failed": ended})
    records = await graph.run()
    assert {name: r.status for name, r in records.items()} == {
        f"t{i}": "COMPLETED" for i in range(total)
    }
    assert most == 2


async def test_a_failed_dependency_cancels_its_dependants_with_the_reason(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    graph = executor.graph()
    graph.add("a", script("raise SystemExit(2)"))
    graph.add("b", script("print('never')"), after=["a"])
    graph.add("c", script("print('never')"), after=["b"])
    records = await graph.run()
    assert records["a"].status == "FAILED"
    for name, reason in (("b", "'a' ended FAILED"), ("c", "'b' ended CANCELLED")):
        record = records[name]
        assert record.status == "CANCELLED"
        assert record.pid is None and record.started_at is None
        assert record.error is not None and record.error["type"] == "DependencyFailed"
        assert reason in record.error["message"]
    stored = (await executor.store()).get(records["b"].id)
    assert stored.status == "CANCELLED" and stored.error == records["b"].error


async def test_after_any_runs_once_dependencies_end_whatever_their_outcome(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    graph = executor.graph()
    graph.add("a", script("raise SystemExit(2)"))
    graph.add("ok", script("print('ok')"))
    graph.add("cleanup", script("print('cleaning')"), after=["a", "ok"], after_any=True)
    records = await graph.run()
    assert records["a"].status == "FAILED"
    assert records["cleanup"].status == "COMPLETED"


async def test_a_cycle_is_rejected_before_anything_starts(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    graph = executor.graph()
    graph.add("free", script("print('free')"))
    graph.add("a", script("print('a')"), after=["c"])
    graph.add("b", script("print('b')"), after=["a"])
    graph.add("c", script("print('c')"), after=["b"])
    with pytest.raises(GraphCycleError) as caught:
        await graph.run()
    assert caught.value.cycle == ["a", "c", "b", "a"]
    assert "a -> c -> b -> a" in str(caught.value)
    assert (await executor.store()).query() == []


async def test_an_unknown_dependency_is_rejected(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    graph = executor.graph()
    graph.add("a", script("print('a')"), after=["ghost"])
    with pytest.raises(GraphError, match="unknown task 'ghost'"):
        await graph.run()


async def test_a_dependants_params_use_the_results_of_finished_tasks(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    producer = script(
        """
        from lute_async.task import Reporter
        with Reporter.connect() as report:
            report.result({"x": 7, "name": "run42"})
        """
    )
    graph = executor.graph()
    graph.add("a", producer)
    graph.add(
        "b",
        script("print('b')"),
        after=["a"],
        params={
            "x": "{{ a.result.payload.x }}",
            "label": "{{ a.result.payload.name }}-{{ a.status }}",
        },
    )
    records = await graph.run()
    assert records["b"].params == {"x": 7, "label": "run42-COMPLETED"}


async def test_using_a_result_of_a_task_not_upstream_is_rejected(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    graph = executor.graph()
    graph.add("a", script("print('a')"))
    graph.add("b", script("print('b')"), params={"x": "{{ a.result.payload }}"})
    with pytest.raises(GraphError, match="does not run after it"):
        graph.check()


async def test_a_graph_file_runs_with_live_states(
    executor: Executor, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    first, second = script("print('one')"), script("print('two')")
    path = tmp_path / "graph.toml"
    path.write_text(
        f"""
[graph.one]
command = {first!r}

[graph.two]
command = {second!r}
after = ["one"]
""".replace("'", '"')
    )
    changes: list[tuple[str, str]] = []
    records = await run_graph_from_config(
        path, executor, on_state=lambda name, status: changes.append((name, status))
    )
    assert records["two"].status == "COMPLETED"
    assert changes.index(("one", "COMPLETED")) < changes.index(("two", "RUNNING"))


DEFINED_GRAPH = """
[tasks.scale]
command = [
    "{python}", "-c", "import os, sys; print(os.environ['GAIN_UNITS'], sys.argv[1])",
    "{{{{ scaled }}}}",
]
env = {{ GAIN_UNITS = "adu/keV" }}
tags = ["defined"]
timeout = 60

[tasks.scale.params]
gain = 1
scaled = "{{{{ gain }}}}x"

[graph.calibrate]
command = [
    "{python}", "-c",
    "from lute_async.task import Reporter\\nwith Reporter.connect() as r: r.result({{'gain': 7}})",
]

[graph.apply]
task = "scale"
after = ["calibrate"]
params = {{ gain = "{{{{ calibrate.result.payload.gain }}}}" }}
"""


async def test_a_graph_task_runs_a_defined_task_with_upstream_results_as_its_params(
    executor: Executor, tmp_path: Path
) -> None:
    path = tmp_path / "graph.toml"
    path.write_text(DEFINED_GRAPH.format(python=sys.executable))
    lines: list[str] = []
    executor.on("log", lambda event: lines.append(f"{event.run.name}: {event.data['message']}"))
    records = await run_graph_from_config(path, executor)
    apply = records["apply"]
    assert apply.status == "COMPLETED", apply.error
    # The upstream result fills the graph's param, which the definition's templates then use.
    assert apply.params == {"gain": 7, "scaled": "7x"}
    assert apply.command[-1] == "7x" and "apply: adu/keV 7x" in lines
    assert apply.env["GAIN_UNITS"] == "adu/keV" and apply.tags[:-1] == ["defined"]


@pytest.mark.parametrize(
    ("graph", "error"),
    [
        ('[graph.a]\ntask = "nope"\n', "no task 'nope'"),
        (
            '[tasks.t]\ncommand = ["true"]\n[graph.a]\ntask = "t"\ncommand = ["true"]\n',
            "exactly one of command, function or task",
        ),
        ("[graph]\n", "expected [graph.NAME] tables"),
        ('graph = "x"\n', "tables [graph.NAME]"),
    ],
)
async def test_a_bad_graph_file_is_refused_before_anything_runs(
    executor: Executor, tmp_path: Path, graph: str, error: str
) -> None:
    path = tmp_path / "graph.toml"
    path.write_text(graph)
    with pytest.raises(ConfigError, match=re.escape(error)):
        await run_graph_from_config(path, executor)
    assert (await executor.store()).query() == []


async def test_a_task_that_cannot_be_prepared_ends_unstarted_and_the_rest_of_the_graph_runs(
    executor: Executor, tmp_path: Path
) -> None:
    path = tmp_path / "graph.toml"
    path.write_text(
        f"""
[tasks.needs_env]
command = ["true", "{{{{ $LUTE_ASYNC_TEST_UNSET_VARIABLE }}}}"]

[graph.calibrate]
command = ["{sys.executable}", "-c", "import lute_async.task as t; t.Reporter.connect().result(1)"]

[graph.bad_env]
task = "needs_env"

[graph.bad_template]
command = ["echo", "{{{{ calibrate.result.payload.missing }}}}"]
after = ["calibrate"]

[graph.after_bad]
command = ["echo", "never"]
after = ["bad_env"]

[graph.fine]
command = ["echo", "fine"]
after = ["calibrate"]
"""
    )
    records = await run_graph_from_config(path, executor)
    assert {name: r.status for name, r in records.items()} == {
        "calibrate": "COMPLETED",
        "bad_env": "CANCELLED",
        "bad_template": "CANCELLED",
        "after_bad": "CANCELLED",
        "fine": "COMPLETED",
    }
    errors = {name: records[name].error or {} for name in ("bad_env", "bad_template", "after_bad")}
    assert errors["bad_env"]["type"] == "GraphError"
    assert "LUTE_ASYNC_TEST_UNSET_VARIABLE" in errors["bad_env"]["message"]
    assert errors["bad_template"]["type"] == "GraphError"
    assert "'missing'" in errors["bad_template"]["message"]
    assert errors["after_bad"]["type"] == "DependencyFailed"
    assert all(records[name].started_at is None for name in errors)


async def test_the_example_graph_runs_and_its_defined_task_gets_the_upstream_gain(
    executor: Executor,
) -> None:
    example = Path(__file__).parent.parent / "examples" / "graph.toml"
    records = await run_graph_from_config(example, executor)
    assert {r.status for r in records.values()} == {"COMPLETED"}
    assert records["report"].params == {"greeting": "hello", "gain": 2}


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('after = "calib"', "key 'after': expected a list of task names, got a string ('calib')"),
        (
            'timeout = "soon"',
            "key 'timeout': expected a positive number of seconds, got a string ('soon')",
        ),
        ('tags = "nightly"', "key 'tags': expected a list of strings, got a string ('nightly')"),
        ("after_any = 1", "key 'after_any': expected true or false, got an integer (1)"),
        ("retries = 3", "key 'retries': unknown key; expected one of command, function, task, "),
    ],
)
async def test_a_bad_graph_value_names_the_node_the_key_and_the_value(
    executor: Executor, tmp_path: Path, table: str, error: str
) -> None:
    path = tmp_path / "graph.toml"
    path.write_text(f'[graph.calib]\ncommand = ["true"]\n[graph.b]\ncommand = ["true"]\n{table}\n')
    with pytest.raises(ConfigError) as caught:
        await run_graph_from_config(path, executor)
    assert str(caught.value).startswith(f"{path}: graph node 'b': {error}")
    assert (await executor.store()).query() == []


async def test_a_string_after_is_refused_rather_than_read_letter_by_letter(
    executor: Executor,
) -> None:
    graph = executor.graph()
    graph.add("calib", ["true"])
    with pytest.raises(GraphError, match="'after' takes a list of task names, got a string"):
        graph.add("b", ["true"], after="calib")


async def test_run_options_are_checked_when_a_task_is_added(executor: Executor) -> None:
    graph = executor.graph()
    message = (
        "workflow task 'b': key 'timeout': expected a positive number of seconds, "
        "got a string ('1')"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        graph.add("b", ["true"], timeout="1")
    assert graph.nodes == {}


async def test_a_result_that_cannot_be_formatted_ends_its_dependant_unstarted(
    executor: Executor,
) -> None:
    # Before the one template engine, the ValueError from format() escaped the workflow.
    graph = executor.graph()
    report = "import lute_async.task as t; t.Reporter.connect().result({'x': 'ab'})"
    graph.add("a", [sys.executable, "-c", report])
    graph.add("b", ["echo", "{{ a.result.payload.x:04d }}"], after=["a"])
    records = await graph.run()
    assert records["a"].status == "COMPLETED" and records["b"].status == "CANCELLED"
    error = records["b"].error or {}
    assert "cannot format {{ a.result.payload.x:04d }}" in error["message"]
    assert records["b"].started_at is None


async def test_a_graph_command_string_is_split_like_a_shell_as_in_a_task_table(
    executor: Executor, tmp_path: Path
) -> None:
    # It used to be run as one program named "echo split 'like a' shell".
    path = tmp_path / "graph.toml"
    path.write_text("[graph.a]\ncommand = \"echo split 'like a' shell\"\n")
    records = await run_graph_from_config(path, executor)
    assert records["a"].status == "COMPLETED"
    assert records["a"].command == ["echo", "split", "like a", "shell"]
