"""The ``[graph.NAME]`` tables of a graph file, checked into node definitions.

A node's run options (``params``, ``timeout``, ``cwd``, ``tags``) are checked by the one spec,
:mod:`lute_async.options`, and its command and function like a task's, so a value means the
same in a task table, a graph table and a Python call. Errors name the file, node and key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lute_async.config.parse import COMMAND, FUNCTION
from lute_async.config.resolve import TaskConfig
from lute_async.errors import ConfigError
from lute_async.options import NAME, RUN_OPTIONS, Option, check_options, describe, key_error

__all__ = ["GRAPH_OPTIONS", "GraphNodeDef", "parse_graph"]

#: Run options a graph node may set.
NODE_RUN_OPTIONS = ("params", "timeout", "cwd", "tags", "sandbox", "retry")
#: The keys of a ``[graph.NAME]`` table.
GRAPH_OPTIONS: dict[str, Option] = {
    "command": COMMAND,
    "function": FUNCTION,
    "task": Option("the name of a task in [tasks] (or an installed one)", str),
    "after": Option("a list of task names", list[str]),
    "after_any": Option("true or false", bool),
    **{key: RUN_OPTIONS[key] for key in NODE_RUN_OPTIONS},
}


@dataclass(frozen=True, slots=True)
class GraphNodeDef:
    """One node as written: exactly one of ``command``, ``function`` or ``task``."""

    name: str
    command: list[str] | None = None
    function: str | None = None
    task: str | None = None
    after: tuple[str, ...] = ()
    after_any: bool = False
    #: Checked run options (:data:`NODE_RUN_OPTIONS`).
    options: dict[str, Any] = field(default_factory=dict)


def parse_graph(config: TaskConfig) -> list[GraphNodeDef]:
    """The nodes of ``config``'s ``[graph.NAME]`` tables, in file order."""
    if not config.graph:
        raise ConfigError(f"{config.source}: expected [graph.NAME] tables, one per task")
    nodes = []
    for name, table in config.graph.items():
        where = f"{config.source}: graph node {name!r}"
        NAME.check("name", name, where)
        if not isinstance(table, dict):
            raise key_error(where, None, f"expected a table [graph.{name}], got {describe(table)}")
        values = check_options(table, GRAPH_OPTIONS, where=where)
        if sum(values.get(key) is not None for key in ("command", "function", "task")) != 1:
            raise key_error(where, None, "expected exactly one of command, function or task")
        nodes.append(
            GraphNodeDef(
                name,
                command=values.get("command"),
                function=values.get("function"),
                task=values.get("task"),
                after=tuple(values.get("after") or ()),
                after_any=bool(values.get("after_any")),
                options={key: values[key] for key in NODE_RUN_OPTIONS if key in values},
            )
        )
    return nodes
