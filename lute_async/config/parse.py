"""Task and executor tables of a TOML file, checked into typed values.

Run options a table shares with :meth:`Executor.run` (``params``, ``cwd``, ``timeout``,
``limits``, ``communicators``, ``tags``) are checked by the one spec, :mod:`lute_async.options`;
launcher options by the launcher registry. Every error names the file, the task and the key.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any

import msgspec

from lute_async.config.envfile import parse_env_file
from lute_async.config.model import EnvSetting, ExecutorSettings, LauncherDef, TaskDef
from lute_async.errors import ConfigError
from lute_async.launchers.registry import check_launcher_options, kinds
from lute_async.options import (
    NAME,
    RUN_OPTIONS,
    Option,
    check_options,
    describe,
    expected,
    key_error,
)
from lute_async.records.location import is_server_url
from lute_async.tasklets import PHASES, TASKLETS_EXPECTED, check_steps

__all__ = [
    "EXECUTOR_OPTIONS",
    "TASK_OPTIONS",
    "parse_env_file",
    "parse_executor",
    "parse_task",
    "task_where",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_MODES = ("prepend", "append", "overwrite")

#: A command as a task or graph table writes it.
COMMAND = Option(
    "a command: a list of strings, or one string split like a shell would",
    Annotated[list[str], msgspec.Meta(min_length=1)] | str,
    build=lambda command: shlex.split(command) if isinstance(command, str) else command,
)
#: A ``@task`` function as a task or graph table names it.
FUNCTION = Option(
    "a '@task' function: 'package.module:function'",
    Annotated[str, msgspec.Meta(pattern=r"^[\w.]+:[\w.]+$")],
)

#: Tasklet steps as a task table writes them (imported when the task is resolved).
_STEPS = list[str | list[str] | dict[str, Any]]

#: The keys of a ``[tasks.NAME]`` table.
TASK_OPTIONS: dict[str, Option] = {
    "command": COMMAND,
    "function": FUNCTION,
    "params": RUN_OPTIONS["params"],
    "env": Option("a table of environment variables", dict[str, Any]),
    "env_file": Option("the path of a KEY=VALUE file", str),
    "cwd": Option("a directory path", str),
    "timeout": RUN_OPTIONS["timeout"],
    "limits": RUN_OPTIONS["limits"],
    "sandbox": RUN_OPTIONS["sandbox"],
    "launcher": Option(
        "'local', 'mpi', 'slurm' or a table {kind = ..., options...}", str | dict[str, Any]
    ),
    "communicators": RUN_OPTIONS["communicators"],
    "hooks": Option("a list of 'package.module:function' (or hook entry-point names)", list[str]),
    "tags": RUN_OPTIONS["tags"],
    "description": Option("a string", str),
    "retry": RUN_OPTIONS["retry"],
    **{phase: Option(TASKLETS_EXPECTED, _STEPS) for phase in PHASES},
}

#: The keys of the ``[executor]`` table.
EXECUTOR_OPTIONS: dict[str, Option] = {
    "db": Option("a database path", str),
    "max_concurrency": Option("a positive integer", Annotated[int, msgspec.Meta(gt=0)]),
    "grace": RUN_OPTIONS["grace"],
}


def task_where(source: str, name: str) -> str:
    """How messages name task ``name`` of ``source``."""
    return f"{source}: task {name!r}"


def _relative(path_text: str, base: Path | None) -> Path:
    path = Path(path_text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _env_settings(where: str, table: dict[str, Any]) -> dict[str, EnvSetting]:
    env: dict[str, EnvSetting] = {}
    for name, setting in table.items():
        key = f"env.{name}"
        if not _ENV_NAME.match(name):
            raise key_error(where, key, "expected a variable name of letters, digits and '_'")
        if isinstance(setting, bool):
            raise expected(
                where, key, "a string, a number or {prepend|append|overwrite = ...}", setting
            )
        if isinstance(setting, str | int | float):
            env[name] = EnvSetting(str(setting))
            continue
        if not isinstance(setting, dict) or len(setting) != 1:
            raise expected(
                where, key, "a string or a table with one of prepend, append, overwrite", setting
            )
        ((mode, text),) = setting.items()
        if mode not in _ENV_MODES:
            raise key_error(
                where, f"{key}.{mode}", f"unknown mode; expected one of {', '.join(_ENV_MODES)}"
            )
        if isinstance(text, list) and all(isinstance(t, str) for t in text):
            text = os.pathsep.join(text)
        if not isinstance(text, str):
            raise expected(where, f"{key}.{mode}", "a string or a list of directories", text)
        env[name] = EnvSetting(text, mode)
    return env


def _launcher(where: str, value: str | dict[str, Any]) -> LauncherDef:
    options = {"kind": value} if isinstance(value, str) else dict(value)
    kind = options.pop("kind", "local")
    if kind not in kinds():
        raise key_error(
            where, "launcher.kind", f"expected one of {', '.join(kinds())}, got {kind!r}"
        )
    return LauncherDef(kind, check_launcher_options(kind, options, where=where))


def parse_task(name: str, table: Any, source: str, base: Path | None) -> TaskDef:
    """The ``[tasks.NAME]`` table ``table`` of ``source`` as a :class:`TaskDef`."""
    where = task_where(source, name)
    NAME.check("name", name, where)
    if not _NAME.match(name):  # also a template's NAME: other tasks refer to it by name
        raise key_error(where, None, "task names are letters, digits, '_' and '-'")
    if not isinstance(table, dict):
        raise key_error(where, None, f"expected a table [tasks.{name}], got {describe(table)}")
    values = check_options(table, TASK_OPTIONS, where=where)
    if (values.get("command") is None) == (values.get("function") is None):
        raise key_error(where, None, "expected exactly one of 'command' or 'function'")
    if "env" in values:
        values["env"] = _env_settings(where, values["env"])
    if "env_file" in values:
        values["env_file"] = _relative(values["env_file"], base)
    if "launcher" in values:
        values["launcher"] = _launcher(where, values["launcher"])
    for phase in PHASES:  # their shape now, their imports when the task is resolved
        if values.get(phase) is not None:
            try:
                check_steps(phase, values[phase])
            except ConfigError as exc:
                raise key_error(where, None, str(exc)) from None
    for key in ("communicators", "hooks", "tags", *PHASES):
        if key in values:
            values[key] = tuple(values[key])
    return TaskDef(name=name, source=source, **values)


def parse_executor(source: str, table: Any, base: Path | None) -> ExecutorSettings:
    """The ``[executor]`` table of ``source``."""
    if not isinstance(table, dict):
        raise expected(source, "executor", "a table [executor]", table)
    values = check_options(table, EXECUTOR_OPTIONS, where=source, prefix="executor.")
    if values.get("db") is not None and not is_server_url(values["db"]):
        values["db"] = _relative(values["db"], base)  # a postgresql:// URL is kept as given
    return ExecutorSettings(**values)
