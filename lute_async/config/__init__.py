"""Task definitions from TOML: parse a file into typed :class:`TaskDef` values and resolve one
into what :meth:`Executor.run` needs (argv, params, env, launcher, hooks...).

A definition is checked when the file is read (unknown keys, wrong types: the run options by
the one spec, :mod:`lute_async.options`) and its ``{{ ... }}`` templates when the task is
resolved. Every error is a :class:`ConfigError` naming the file, the task, the key and what was
expected.
"""

from lute_async.config.graph import GraphNodeDef, parse_graph
from lute_async.config.load import DEFAULT_CONFIG, ENV_CONFIG, load_config, parse_config
from lute_async.config.model import (
    EnvSetting,
    ExecutorSettings,
    LauncherDef,
    ResolvedTask,
    TaskDef,
)
from lute_async.config.parse import parse_env_file
from lute_async.config.plugins import HOOKS_GROUP, TASKS_GROUP, installed_tasks, load_hook
from lute_async.config.resolve import TaskConfig

__all__ = [
    "DEFAULT_CONFIG",
    "ENV_CONFIG",
    "HOOKS_GROUP",
    "TASKS_GROUP",
    "EnvSetting",
    "ExecutorSettings",
    "GraphNodeDef",
    "LauncherDef",
    "ResolvedTask",
    "TaskConfig",
    "TaskDef",
    "installed_tasks",
    "load_config",
    "load_hook",
    "parse_config",
    "parse_env_file",
    "parse_graph",
]
