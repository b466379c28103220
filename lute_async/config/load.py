"""Reading a config file: ``[tasks.NAME]``, ``[graph.NAME]`` and ``[executor]`` tables."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from lute_async.config.model import DEFAULT_CONFIG, ENV_CONFIG
from lute_async.config.parse import parse_executor, parse_task
from lute_async.config.resolve import TaskConfig
from lute_async.errors import ConfigError
from lute_async.options import expected, key_error

__all__ = ["DEFAULT_CONFIG", "ENV_CONFIG", "load_config", "parse_config"]


def parse_config(text: str, source: str = "<string>", base: Path | None = None) -> TaskConfig:
    """Parse TOML text (from ``source``; relative paths are relative to ``base``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for key in data:
        if key not in ("tasks", "executor", "graph"):
            raise key_error(
                source,
                key,
                "unknown top-level key; expected [tasks.NAME], [graph.NAME] or [executor]",
            )
    graph = data.get("graph", {})
    if not isinstance(graph, dict):
        raise expected(source, "graph", "tables [graph.NAME]", graph)
    tasks_table = data.get("tasks", {})
    if not isinstance(tasks_table, dict):
        raise expected(source, "tasks", "tables [tasks.NAME]", tasks_table)
    tasks = {name: parse_task(name, table, source, base) for name, table in tasks_table.items()}
    settings = parse_executor(source, data.get("executor", {}), base)
    config = TaskConfig(tasks=tasks, path=None, base=base, source=source, executor=settings)
    config.graph = graph  # checked by lute_async.config.graph when the graph is loaded
    return config


def load_config(path: str | os.PathLike[str] | None = None) -> TaskConfig:
    """Read a config file: ``path``, else ``$LUTE_ASYNC_CONFIG``, else ``./lute-async.toml``.

    A default file that does not exist gives an empty config (installed tasks still work).
    """
    explicit = path is not None or ENV_CONFIG in os.environ
    chosen = Path(path if path is not None else os.environ.get(ENV_CONFIG, DEFAULT_CONFIG))
    try:
        text = chosen.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{chosen}: config file not found") from None
        return TaskConfig(
            tasks={}, path=None, base=Path.cwd(), source=str(chosen), missing=True
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen}: cannot read config file: {exc}") from None
    config = parse_config(text, str(chosen), chosen.resolve().parent)
    config.path = chosen
    return config
