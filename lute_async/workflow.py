"""Workflow: a graph of runs where a task starts once the tasks it comes ``after`` have ended.

A node waits on its dependencies' completion events (no polling), so independent branches run
concurrently, bounded by the workflow's ``max_concurrency`` and the executor's own. A dependency
that does not complete cancels its dependants (recorded ``CANCELLED`` with the reason) unless
they were added with ``after_any=True``, which runs them once every dependency has ended,
whatever its outcome. Cycles and unknown dependencies are rejected before anything starts.

Params and command arguments may use ``{{ other.result.payload.key }}`` (also ``status``,
``exit_code``, ``verdict``, ``usage``, ``id``, with an optional ``:format`` spec) for any task the
node runs after, directly or not; a string that is exactly one template takes the value itself
(a number stays a number). Templates are rendered once, over the text as written: a value an
upstream task returned is inserted as a literal, never rendered again.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio

from lute_async.config import TaskConfig, parse_config, parse_graph
from lute_async.errors import ConfigError, LuteAsyncError
from lute_async.messages import TaskStatus
from lute_async.options import check_run_options
from lute_async.records import AnalysisRecord, RecordStore
from lute_async.templates import (
    LEAVE,
    NothingThere,
    Reference,
    Resolver,
    references,
    render,
    walk,
)

#: Record fields a template may read from a finished task.
TEMPLATE_FIELDS = ("result", "status", "exit_code", "verdict", "usage", "id")

GRAPH_TAG = "graph:"  # + Workflow.id tags its runs; their extra["graph"] holds the edges


class StartedRun(Protocol):
    """What a workflow needs of a started run: its record, and a way to cancel it."""

    record: AnalysisRecord

    async def cancel(self) -> None: ...


class Runner(Protocol):
    """What a workflow needs of an executor (:class:`~lute_async.executor.Executor` is one)."""

    async def run(self, cmd: list[str], **options: Any) -> AnalysisRecord: ...

    def start(self, cmd: list[str], **options: Any) -> AbstractAsyncContextManager[StartedRun]: ...

    def function_command(self, target: str, *, python: str | None = None) -> list[str]: ...

    async def store(self) -> RecordStore: ...


class GraphError(LuteAsyncError, ValueError):
    """The workflow's graph is invalid (unknown dependency, bad template reference)."""


class GraphCycleError(GraphError):
    """The workflow's ``after`` edges form a cycle; ``cycle`` lists it, first name repeated."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(
            f"workflow has a dependency cycle: {' -> '.join(cycle)}; remove one of these 'after' "
            "edges"
        )


#: Builds a node's command and run options once its dependencies have ended, from its params
#: as written and the resolver of its upstream results.
Prepare = Callable[[dict[str, Any], Resolver], Awaitable[tuple[list[str], dict[str, Any]]]]


@dataclass(slots=True)
class Node:
    """One task of a workflow and, once it has ended, its record."""

    name: str
    argv: list[str]
    after: tuple[str, ...] = ()
    after_any: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    #: For a defined task: its command and options, built from the params at start.
    prepare: Prepare | None = None
    record: AnalysisRecord | None = None
    status: str = TaskStatus.PENDING.value
    ended: anyio.Event = field(default_factory=anyio.Event)

    @property
    def stdout(self) -> tuple[Node, str]:
        """This task's stdout, as a :class:`~lute_async.channel.Channel` source."""
        return (self, "stdout")

    @property
    def stdin(self) -> tuple[Node, str]:
        """This task's stdin, as a :class:`~lute_async.channel.Channel` target."""
        return (self, "stdin")


StateListener = Callable[[str, str], None]


class Workflow:
    """Tasks with ``after`` dependencies, run by one executor; ``run()`` returns every record."""

    def __init__(
        self,
        executor: Runner,
        *,
        max_concurrency: int | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        self.executor = executor
        self.max_concurrency = max_concurrency
        self.nodes: dict[str, Node] = {}
        self._on_state = on_state
        self.id = uuid.uuid4().hex  # links the records of its runs (tagged graph:<id>)

    def add(
        self,
        name: str,
        cmd: str | Sequence[str],
        *,
        after: Iterable[str] = (),
        after_any: bool = False,
        **options: Any,
    ) -> Node:
        """Add task ``name`` running ``cmd``; ``options`` are those of :meth:`Executor.run`."""
        if name in self.nodes:
            raise GraphError(f"workflow already has a task named {name!r}")
        if isinstance(after, str):
            raise GraphError(
                f"task {name!r}: 'after' takes a list of task names, got a string ({after!r})"
            )
        options = check_run_options({"name": name, **options}, where=f"workflow task {name!r}")
        del options["name"]  # the node's name names its run
        argv = [cmd] if isinstance(cmd, str) else [str(part) for part in cmd]
        node = Node(name, argv, tuple(after), after_any, options)
        self.nodes[name] = node
        return node

    def add_function(self, name: str, target: str, **options: Any) -> Node:
        """Add a ``@task`` function ``"pkg.mod:func"`` run in a worker process."""
        python = options.pop("python", None)
        return self.add(name, self.executor.function_command(target, python=python), **options)

    def add_defined(self, name: str, config: TaskConfig, task: str, **options: Any) -> Node:
        """Add the task ``task`` defined in ``config``, run with all it defines; ``params``
        in ``options`` override its defaults and may use upstream results."""
        definition = config.task(task)  # an unknown task is refused now, not at its turn
        executor = self.executor

        async def prepare(
            params: dict[str, Any], upstream: Resolver
        ) -> tuple[list[str], dict[str, Any]]:
            store = await executor.store()
            try:
                resolved = config.resolve(task, written=params, upstream=upstream, store=store)
            except ConfigError as exc:
                raise GraphError(f"graph task {name!r}: {exc}") from None
            defined = resolved.run_options()
            del defined["name"]  # the node's name names the run
            return resolved.argv, defined

        node = self.add(name, list(definition.command or [definition.function or task]), **options)
        node.prepare = prepare
        return node

    @property
    def states(self) -> dict[str, str]:
        """Every task's current status, for a live view."""
        return {name: node.status for name, node in self.nodes.items()}

    def check(self) -> list[str]:
        """Validate the graph and return the task names in a dependency order.

        Raises :class:`GraphError` for an unknown dependency or a template naming a task that
        is not upstream, and :class:`GraphCycleError` (naming the cycle) for a cycle.
        """
        for node in self.nodes.values():
            for dep in node.after:
                if dep not in self.nodes:
                    raise GraphError(f"task {node.name!r} runs after unknown task {dep!r}")
        order: list[str] = []
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise GraphCycleError([*path[path.index(name) :], name])
            state[name] = 1
            path.append(name)
            for dep in self.nodes[name].after:
                visit(dep, path)
            path.pop()
            state[name] = 2
            order.append(name)

        for name in self.nodes:
            visit(name, [])
        for node in self.nodes.values():
            upstream = self._upstream(node.name)
            for ref in _references([node.argv, node.options.get("params")]):
                if ref not in upstream and ref in self.nodes:
                    raise GraphError(
                        f"task {node.name!r} uses the result of {ref!r} but does not run after it"
                    )
        return order

    def _upstream(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.nodes[name].after)
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(self.nodes[dep].after)
        return seen

    async def run(self) -> dict[str, AnalysisRecord]:
        """Run every task as its dependencies allow; return the records by task name."""
        self.check()
        limiter = anyio.CapacityLimiter(self.max_concurrency) if self.max_concurrency else None
        async with anyio.create_task_group() as tg:
            for node in self.nodes.values():
                tg.start_soon(self._run_node, node, limiter)
        return {name: node.record for name, node in self.nodes.items() if node.record}

    def _set_state(self, node: Node, status: str) -> None:
        node.status = status
        if self._on_state is not None:
            self._on_state(node.name, status)

    async def _run_node(self, node: Node, limiter: anyio.CapacityLimiter | None) -> None:
        try:
            for dep in node.after:
                await self.nodes[dep].ended.wait()
            unfinished = [
                dep for dep in node.after if self.nodes[dep].status != TaskStatus.COMPLETED.value
            ]
            if unfinished and not node.after_any:
                reasons = ", ".join(f"{d!r} ended {self.nodes[d].status}" for d in unfinished)
                await self._end_unstarted(node, "DependencyFailed", f"dependency {reasons}")
                return
            finished = {name: n.record for name, n in self.nodes.items() if n.record}
            options = dict(node.options)
            try:
                if node.prepare is not None:  # its params are rendered once, with its own
                    params = options.pop("params", None) or {}
                    argv, defined = await node.prepare(params, record_resolver(finished))
                    options = {**defined, **options}
                else:
                    if "params" in options:
                        options["params"] = resolve_templates(options["params"], finished)
                    argv = resolve_templates(node.argv, finished)
            except (GraphError, ConfigError) as exc:
                # Its own failure: the other branches go on, its dependants are cancelled.
                await self._end_unstarted(node, type(exc).__name__, str(exc))
                return
            hooks = _with_state_hooks(
                options.pop("hooks", None), lambda s: self._set_state(node, s)
            )
            hooks["started"].append(lambda event: self._link(node, event.run.record))
            options["tags"] = [*(options.get("tags") or ()), GRAPH_TAG + self.id]
            async with limiter if limiter is not None else contextlib.nullcontext():
                node.record = await self.executor.run(argv, name=node.name, hooks=hooks, **options)
            self._set_state(node, node.record.status)
        finally:
            node.ended.set()

    def _link(self, node: Node, record: AnalysisRecord) -> None:
        edges = {name: list(other.after) for name, other in self.nodes.items()}
        record.extra["graph"] = {"id": self.id, "node": node.name, "nodes": edges}

    async def _end_unstarted(self, node: Node, kind: str, why: str) -> None:
        """Record ``node`` CANCELLED without starting it, ``why`` in its error."""
        options = {k: v for k, v in node.options.items() if k != "hooks"}
        options["tags"] = [*(options.get("tags") or ()), GRAPH_TAG + self.id]
        async with self.executor.start(node.argv, name=node.name, **options) as run:
            run.record.error = {"type": kind, "message": f"not started: {why}", "traceback": None}
            self._link(node, run.record)
            await run.cancel()  # before launch: the run ends CANCELLED without starting
        node.record = run.record
        self._set_state(node, run.record.status)


def _with_state_hooks(hooks: Any, set_state: Callable[[str], None]) -> dict[str, Any]:
    merged: dict[str, list[Any]] = {}
    if isinstance(hooks, Mapping):
        for event, fns in hooks.items():
            merged[event] = list(fns) if isinstance(fns, list | tuple) else [fns]
    elif hooks is not None:
        raise GraphError("workflow tasks take hooks as a {event: fn or [fns]} mapping")
    merged.setdefault("started", []).append(lambda event: set_state(event.run.status))
    merged.setdefault("stopped", []).append(lambda event: set_state(event.run.status))
    merged.setdefault("continued", []).append(lambda event: set_state(event.run.status))
    return merged


def _record_reference(reference: Reference) -> tuple[str, str, tuple[str, ...]] | None:
    """``(task, field, path)`` for ``{{ task.field.path }}`` naming a record field, else None."""
    path = reference.path
    if len(path) >= 2 and path[1] in TEMPLATE_FIELDS:
        return path[0], path[1], path[2:]
    return None


def _references(value: Any) -> set[str]:
    """The tasks whose records the templates in ``value`` read."""
    return {found[0] for found in map(_record_reference, references(value)) if found is not None}


def _lookup(record: AnalysisRecord, fieldname: str, path: tuple[str, ...], template: str) -> Any:
    try:
        return walk(getattr(record, fieldname), path)
    except NothingThere as missing:
        raise GraphError(
            f"{template}: task {record.name!r} has no {missing.part!r} there"
        ) from None


def record_resolver(records: Mapping[str, AnalysisRecord]) -> Resolver:
    """Answers ``{{ task.result... }}`` (and the other :data:`TEMPLATE_FIELDS`) from finished
    ``records``; LEAVE for any other reference."""

    def resolve(reference: Reference, key: str) -> Any:
        found = _record_reference(reference)
        if found is None or found[0] not in records:
            return LEAVE
        name, fieldname, path = found
        return _lookup(records[name], fieldname, path, reference.text)

    return resolve


def resolve_templates(value: Any, records: Mapping[str, AnalysisRecord]) -> Any:
    """``value`` with ``{{ task.result... }}`` templates of finished ``records`` filled in, in
    one pass; templates naming other things are kept as written (literal text)."""
    return render(value, record_resolver(records), strict=False)


def load_graph(path: str | Path, executor: Runner, **options: Any) -> Workflow:
    """A workflow from a TOML graph file, one table per task::

    [graph.peaks]
    command = ["python", "peaks.py"]        # or: function = "pkg.mod:func"
    after = ["calibrate"]                   #  or: task = "find_peaks", a [tasks.NAME]
    after_any = false
    params = { threshold = "{{ calibrate.result.payload.threshold }}" }
    timeout = 600

    ``task`` runs a task defined in the same file's ``[tasks]`` (or installed) with everything
    it defines (launcher, env, limits, hooks...); the graph's ``params`` override its defaults
    and are rendered with them, once: upstream results first, then what the config knows.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the graph: {exc}") from None
    config = parse_config(text, str(path), Path(path).resolve().parent)
    workflow = Workflow(executor, **options)
    for node in parse_graph(config):
        edges: dict[str, Any] = {"after": node.after, "after_any": node.after_any}
        if node.function is not None:
            workflow.add_function(node.name, node.function, **edges, **node.options)
        elif node.command is not None:
            workflow.add(node.name, node.command, **edges, **node.options)
        else:
            assert node.task is not None
            workflow.add_defined(node.name, config, node.task, **edges, **node.options)
    return workflow


async def run_graph_from_config(
    path: str | Path,
    executor: Runner,
    *,
    max_concurrency: int | None = None,
    on_state: StateListener | None = None,
) -> dict[str, AnalysisRecord]:
    """Run the graph file ``path`` (see :func:`load_graph`); ``on_state(task, status)`` is
    called at each change, for a live view. Backs ``lute-async run-graph --config F``."""
    workflow = load_graph(path, executor, max_concurrency=max_concurrency, on_state=on_state)
    return await workflow.run()
