"""Workflows: dependencies, concurrency of independent branches, failure propagation,
after_any, cycle rejection and results flowing into dependants' params."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lute_async import Event, Executor
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
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    running = 0
    most = 0

    def started(event: Event) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)

    def ended(event: Event) -> None:
        nonlocal running
        running -= 1

    graph = Workflow(executor, max_concurrency=2)
    for i in range(5):
        graph.add(f"t{i}", script("print('x')"), hooks={"started": started, "done": ended})
    records = await graph.run()
    assert all(r.status == "COMPLETED" for r in records.values())
    assert most <= 2


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
