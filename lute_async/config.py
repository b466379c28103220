"""Task definitions from TOML: parse a file into typed :class:`TaskDef` values and resolve one
into what :meth:`Executor.run` needs (argv, params, env, launcher, hooks...).

A definition is checked when the file is read (unknown keys, wrong types) and its ``{{ ... }}``
templates when the task is resolved, because they may depend on ``--param`` overrides, the
environment, other tasks and the run history. Every error is a :class:`ConfigError` naming the
file, the task, the key and what was expected.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lute_async.errors import ConfigError
from lute_async.limits import Limits

if TYPE_CHECKING:
    from lute_async.hooks.registry import Hook
    from lute_async.launchers.base import Launcher
    from lute_async.records import RecordStore

__all__ = [
    "DEFAULT_CONFIG",
    "ENV_CONFIG",
    "HOOKS_GROUP",
    "TASKS_GROUP",
    "EnvSetting",
    "ExecutorSettings",
    "LauncherDef",
    "ResolvedTask",
    "TaskConfig",
    "TaskDef",
    "load_config",
    "load_hook",
    "parse_env_file",
]

#: Entry-point group of installed tasks: ``name = "pkg.mod:func"`` (a ``@task``) or a dict.
TASKS_GROUP = "lute_async.tasks"
#: Entry-point group of installed hooks: ``name = "pkg.mod:fn"``.
HOOKS_GROUP = "lute_async.hooks"
#: The config file used when none is given, unless ``$LUTE_ASYNC_CONFIG`` names another.
DEFAULT_CONFIG = "lute-async.toml"
ENV_CONFIG = "LUTE_ASYNC_CONFIG"

_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_MODES = ("prepend", "append", "overwrite")

_TASK_KEYS = {
    "command": "a command: a list of strings, or one string split like a shell would",
    "function": "a '@task' function: 'package.module:function'",
    "params": "a table of default params",
    "env": "a table of environment variables",
    "env_file": "the path of a KEY=VALUE file",
    "cwd": "a directory path",
    "timeout": "seconds, a positive number",
    "limits": "a table with " + ", ".join(Limits.__slots__),
    "launcher": "'local', 'mpi', 'slurm' or a table {kind = ..., options...}",
    "communicators": "a list of 'pipe', 'socket', 'tcp'",
    "hooks": "a list of 'package.module:function' (or hook entry-point names)",
    "tags": "a list of strings",
    "description": "a string",
}
_LAUNCHER_OPTIONS: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "local": {},
    "mpi": {
        "np": (int, "an integer number of processes"),
        "launcher": (str, "'auto', 'mpirun', 'mpiexec' or 'srun'"),
        "extra_args": (list, "a list of strings"),
    },
    "slurm": {
        "partition": (str, "a partition name"),
        "ntasks": (int, "an integer"),
        "nodes": ((int, str), "an integer or a range like '1-2'"),
        "cpus_per_task": (int, "an integer"),
        "time": (str, "a time limit like '0:30:00'"),
        "mem": (str, "a memory size like '4G'"),
        "account": (str, "an account name"),
        "qos": (str, "a QOS name"),
        "extra_sbatch": (list, "a list of strings"),
        "mpi": (bool, "true or false"),
    },
}
_EXECUTOR_KEYS = {
    "db": "a database path",
    "max_concurrency": "a positive integer",
    "grace": "seconds, a number",
}


@dataclass(frozen=True, slots=True)
class EnvSetting:
    """One environment variable: set (``overwrite``) or ``prepend``/``append`` to a path list."""

    value: str
    mode: str = "overwrite"

    def apply(self, current: str | None) -> str:
        if self.mode == "overwrite" or not current:
            return self.value
        if self.mode == "prepend":
            return f"{self.value}{os.pathsep}{current}"
        return f"{current}{os.pathsep}{self.value}"


@dataclass(frozen=True, slots=True)
class LauncherDef:
    """A launcher kind and its validated options, built into a Launcher only when run."""

    kind: str = "local"
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Launcher | None:
        """The launcher for a run: None means the executor's default (local)."""
        if self.kind == "local":
            return None
        if self.kind == "mpi":
            from lute_async.launchers.mpi import MPI  # type: ignore[import-not-found,unused-ignore]

            return MPI(**self.options)  # type: ignore[no-any-return,unused-ignore]
        from lute_async.launchers.slurm import Slurm  # type: ignore[import-not-found,unused-ignore]

        return Slurm(**self.options)  # type: ignore[no-any-return,unused-ignore]


@dataclass(frozen=True, slots=True)
class TaskDef:
    """One task definition as written; templates are still unresolved."""

    name: str
    source: str
    command: list[str] | None = None
    function: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, EnvSetting] = field(default_factory=dict)
    env_file: Path | None = None
    cwd: str | None = None
    timeout: float | None = None
    limits: Limits | None = None
    launcher: LauncherDef = field(default_factory=LauncherDef)
    communicators: tuple[str, ...] | None = None
    hooks: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    """The optional ``[executor]`` table."""

    db: Path | None = None
    max_concurrency: int | None = None
    grace: float | None = None


@dataclass(slots=True)
class ResolvedTask:
    """A task ready to run: every template filled in, hooks imported."""

    name: str
    argv: list[str]
    params: dict[str, Any]
    env: dict[str, str]
    cwd: str | None
    timeout: float | None
    limits: Limits | None
    launcher: Launcher | None
    communicators: tuple[str, ...] | None
    hooks: list[Hook]
    tags: list[str]

    def run_options(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`Executor.run` / :meth:`Executor.start`."""
        options: dict[str, Any] = {
            "name": self.name,
            "params": self.params,
            "env": self.env,
            "cwd": self.cwd,
            "timeout": self.timeout,
            "limits": self.limits,
            "launcher": self.launcher,
            "tags": self.tags,
        }
        if self.communicators is not None:
            options["communicators"] = self.communicators
        if self.hooks:
            options["hooks"] = {"*": self.hooks}
        return options


# --- parsing ------------------------------------------------------------------------------------


class _Where:
    """Builds precise error messages: file, task and key."""

    def __init__(self, source: str, task: str | None = None) -> None:
        self.source = source
        self.task = task

    def error(self, key: str | None, problem: str) -> ConfigError:
        parts = [self.source]
        if self.task is not None:
            parts.append(f"task {self.task!r}")
        if key is not None:
            parts.append(f"key {key!r}")
        return ConfigError(f"{': '.join(parts)}: {problem}")

    def expected(self, key: str, what: str, got: Any) -> ConfigError:
        return self.error(key, f"expected {what}, got {_describe(got)}")


def _describe(value: Any) -> str:
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    kind = kinds.get(type(value))
    if kind is not None:
        return f"{kind} ({value!r})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _str_list(where: _Where, key: str, value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.expected(key, what, value)
    return list(value)


def _number(where: _Where, key: str, value: Any, *, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value <= 0:
        raise where.expected(
            key, "a positive integer" if integer else "a positive number of seconds", value
        )
    return float(value)


def _parse_env(where: _Where, value: Any) -> dict[str, EnvSetting]:
    if not isinstance(value, dict):
        raise where.expected("env", _TASK_KEYS["env"], value)
    env: dict[str, EnvSetting] = {}
    for name, setting in value.items():
        key = f"env.{name}"
        if not _ENV_NAME.match(name):
            raise where.error(key, "expected a variable name of letters, digits and '_'")
        if isinstance(setting, bool):
            raise where.expected(
                key, "a string, a number or {prepend|append|overwrite = ...}", setting
            )
        if isinstance(setting, str | int | float):
            env[name] = EnvSetting(str(setting))
            continue
        if not isinstance(setting, dict) or len(setting) != 1:
            raise where.expected(
                key, "a string or a table with one of prepend, append, overwrite", setting
            )
        ((mode, text),) = setting.items()
        if mode not in _ENV_MODES:
            raise where.error(
                f"{key}.{mode}", f"unknown mode; expected one of {', '.join(_ENV_MODES)}"
            )
        if isinstance(text, list) and all(isinstance(t, str) for t in text):
            text = os.pathsep.join(text)
        if not isinstance(text, str):
            raise where.expected(f"{key}.{mode}", "a string or a list of directories", text)
        env[name] = EnvSetting(text, mode)
    return env


def _parse_limits(where: _Where, value: Any) -> Limits:
    if not isinstance(value, dict):
        raise where.expected("limits", _TASK_KEYS["limits"], value)
    values: dict[str, Any] = {}
    for name, limit in value.items():
        if name not in Limits.__slots__:
            raise where.error(
                f"limits.{name}", f"unknown limit; expected one of {', '.join(Limits.__slots__)}"
            )
        if name == "wall_time":
            values[name] = _number(where, f"limits.{name}", limit)
        else:
            values[name] = int(_number(where, f"limits.{name}", limit, integer=True))
    return Limits(**values)


def _parse_launcher(where: _Where, value: Any) -> LauncherDef:
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise where.expected("launcher", _TASK_KEYS["launcher"], value)
    options = dict(value)
    kind = options.pop("kind", "local")
    if kind not in _LAUNCHER_OPTIONS:
        raise where.error(
            "launcher.kind", f"expected one of {', '.join(_LAUNCHER_OPTIONS)}, got {kind!r}"
        )
    allowed = _LAUNCHER_OPTIONS[kind]
    for name, option in options.items():
        key = f"launcher.{name}"
        if name not in allowed:
            known = ", ".join(allowed) or "no options"
            raise where.error(key, f"unknown option for a {kind} launcher; expected {known}")
        types, what = allowed[name]
        if isinstance(option, bool) and types is not bool:
            raise where.expected(key, what, option)
        if not isinstance(option, types):
            raise where.expected(key, what, option)
        if types is list:
            _str_list(where, key, option, what)
    return LauncherDef(kind, options)


def _parse_task(name: str, table: Any, source: str, base: Path | None) -> TaskDef:
    where = _Where(source, name)
    if not _NAME.match(name):
        raise where.error(None, "task names are letters, digits, '_' and '-'")
    if not isinstance(table, dict):
        raise where.error(None, f"expected a table [tasks.{name}], got {_describe(table)}")
    for key in table:
        if key not in _TASK_KEYS:
            raise where.error(key, f"unknown key; expected one of {', '.join(_TASK_KEYS)}")
    values: dict[str, Any] = {}
    command = table.get("command")
    function = table.get("function")
    if (command is None) == (function is None):
        raise where.error(None, "expected exactly one of 'command' or 'function'")
    if isinstance(command, str):
        values["command"] = shlex.split(command)
    elif command is not None:
        values["command"] = _str_list(where, "command", command, _TASK_KEYS["command"])
        if not values["command"]:
            raise where.error("command", "expected a non-empty list")
    if function is not None:
        if not isinstance(function, str) or not re.match(r"^[\w.]+:[\w.]+$", function):
            raise where.expected("function", _TASK_KEYS["function"], function)
        values["function"] = function
    if "params" in table:
        if not isinstance(table["params"], dict):
            raise where.expected("params", _TASK_KEYS["params"], table["params"])
        values["params"] = dict(table["params"])
    if "env" in table:
        values["env"] = _parse_env(where, table["env"])
    if "env_file" in table:
        if not isinstance(table["env_file"], str):
            raise where.expected("env_file", _TASK_KEYS["env_file"], table["env_file"])
        path = Path(table["env_file"]).expanduser()
        values["env_file"] = base / path if base is not None and not path.is_absolute() else path
    if "cwd" in table:
        if not isinstance(table["cwd"], str):
            raise where.expected("cwd", _TASK_KEYS["cwd"], table["cwd"])
        values["cwd"] = table["cwd"]
    if "timeout" in table:
        values["timeout"] = _number(where, "timeout", table["timeout"])
    if "limits" in table:
        values["limits"] = _parse_limits(where, table["limits"])
    if "launcher" in table:
        values["launcher"] = _parse_launcher(where, table["launcher"])
    if "communicators" in table:
        kinds = _str_list(
            where, "communicators", table["communicators"], _TASK_KEYS["communicators"]
        )
        for kind in kinds:
            if kind not in ("pipe", "socket", "tcp"):
                raise where.expected("communicators", _TASK_KEYS["communicators"], kind)
        values["communicators"] = tuple(kinds)
    if "hooks" in table:
        values["hooks"] = tuple(_str_list(where, "hooks", table["hooks"], _TASK_KEYS["hooks"]))
    if "tags" in table:
        values["tags"] = tuple(_str_list(where, "tags", table["tags"], _TASK_KEYS["tags"]))
    if "description" in table:
        if not isinstance(table["description"], str):
            raise where.expected("description", "a string", table["description"])
        values["description"] = table["description"]
    return TaskDef(name=name, source=source, **values)


def _parse_executor(source: str, table: Any, base: Path | None) -> ExecutorSettings:
    where = _Where(source)
    if not isinstance(table, dict):
        raise where.expected("executor", "a table [executor]", table)
    for key in table:
        if key not in _EXECUTOR_KEYS:
            raise where.error(
                f"executor.{key}", f"unknown key; expected one of {', '.join(_EXECUTOR_KEYS)}"
            )
    db: Path | None = None
    if "db" in table:
        if not isinstance(table["db"], str):
            raise where.expected("executor.db", "a database path", table["db"])
        db = Path(table["db"]).expanduser()
        db = base / db if base is not None and not db.is_absolute() else db
    max_concurrency = None
    if "max_concurrency" in table:
        max_concurrency = int(
            _number(where, "executor.max_concurrency", table["max_concurrency"], integer=True)
        )
    grace = _number(where, "executor.grace", table["grace"]) if "grace" in table else None
    return ExecutorSettings(db=db, max_concurrency=max_concurrency, grace=grace)


def parse_config(text: str, source: str = "<string>", base: Path | None = None) -> TaskConfig:
    """Parse TOML text (from ``source``; relative paths are relative to ``base``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    where = _Where(source)
    for key in data:
        if key not in ("tasks", "executor", "graph"):
            raise where.error(
                key, "unknown top-level key; expected [tasks.NAME], [graph.NAME] or [executor]"
            )
    graph = data.get("graph", {})
    if not isinstance(graph, dict):
        raise where.expected("graph", "tables [graph.NAME]", graph)
    tasks_table = data.get("tasks", {})
    if not isinstance(tasks_table, dict):
        raise where.expected("tasks", "tables [tasks.NAME]", tasks_table)
    tasks = {name: _parse_task(name, table, source, base) for name, table in tasks_table.items()}
    settings = _parse_executor(source, data.get("executor", {}), base)
    config = TaskConfig(tasks=tasks, path=None, base=base, source=source, executor=settings)
    config.graph = graph  # checked by lute_async.workflow.load_graph
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
        return TaskConfig(tasks={}, path=None, base=Path.cwd(), source=str(chosen))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen}: cannot read config file: {exc}") from None
    config = parse_config(text, str(chosen), chosen.resolve().parent)
    config.path = chosen
    return config


# --- env files ----------------------------------------------------------------------------------


def parse_env_file(path: Path, where: str = "") -> dict[str, str]:
    """Read ``KEY=VALUE`` lines (``export`` allowed, shell quoting, ``#`` comments).

    Nothing is executed or expanded: the file is data, never code.
    """
    label = where or str(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read env file {path}: {exc}") from None
    env: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
        if not words:
            continue
        if words[0] == "export":
            words = words[1:]
        if len(words) != 1 or "=" not in words[0]:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {line.strip()!r}")
        key, _, value = words[0].partition("=")
        if not _ENV_NAME.match(key):
            raise ConfigError(f"{path}:{number}: {key!r} is not a variable name")
        env[key] = value
    return env


# --- entry points and hooks ---------------------------------------------------------------------


def _entry_point(group: str, name: str) -> metadata.EntryPoint | None:
    for entry in metadata.entry_points(group=group, name=name):
        return entry
    return None


def load_hook(spec: str, where: str = "") -> Hook:
    """Import a hook from ``"pkg.mod:fn"`` or by its ``lute_async.hooks`` entry-point name."""
    prefix = f"{where}: " if where else ""
    if ":" not in spec:
        entry = _entry_point(HOOKS_GROUP, spec)
        if entry is None:
            raise ConfigError(
                f"{prefix}hook {spec!r} is neither 'package.module:function' nor an installed "
                f"{HOOKS_GROUP} entry point"
            )
        spec = entry.value
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{prefix}cannot load hook {spec!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"{prefix}hook {spec!r} is not callable")
    hook: Hook = obj
    return hook


def installed_tasks() -> list[str]:
    """Names of the tasks installed packages register under ``lute_async.tasks``."""
    return sorted({entry.name for entry in metadata.entry_points(group=TASKS_GROUP)})


def _installed_task(name: str) -> TaskDef | None:
    entry = _entry_point(TASKS_GROUP, name)
    if entry is None:
        return None
    source = f"entry point {TASKS_GROUP}:{name} ({entry.value})"
    try:
        obj = entry.load()
    except Exception as exc:
        raise ConfigError(f"{source}: cannot load: {exc}") from None
    if isinstance(obj, Mapping):
        return _parse_task(name, dict(obj), source, None)
    if callable(obj):
        return TaskDef(name=name, source=source, function=entry.value)
    raise ConfigError(f"{source}: expected a @task function or a task table, got {_describe(obj)}")


# --- templates ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    """What templates may refer to while one task is resolved."""

    config: TaskConfig
    environ: Mapping[str, str]
    store: Callable[[], RecordStore | None]
    resolving: list[str] = field(default_factory=list)
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)


class TaskConfig:
    """The tasks of one config file, plus installed ones found by name."""

    def __init__(
        self,
        *,
        tasks: dict[str, TaskDef],
        path: Path | None,
        base: Path | None,
        source: str,
        executor: ExecutorSettings | None = None,
    ) -> None:
        self.tasks = tasks
        self.path = path
        self.base = base
        self.source = source
        self.executor = executor or ExecutorSettings()
        #: The file's ``[graph.NAME]`` tables, as written (see ``workflow.load_graph``).
        self.graph: dict[str, Any] = {}

    def task(self, name: str) -> TaskDef:
        """The definition named ``name``: from the file, else an installed entry point."""
        found = self.tasks.get(name) or _installed_task(name)
        if found is None:
            known = sorted({*self.tasks, *installed_tasks()})
            listing = ", ".join(known) if known else "none defined"
            raise ConfigError(f"{self.source}: no task {name!r}; known tasks: {listing}")
        return found

    def resolve(
        self,
        name: str,
        overrides: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        store: RecordStore | Callable[[], RecordStore | None] | None = None,
        python: str | None = None,
    ) -> ResolvedTask:
        """Fill in task ``name``'s templates and return it ready to run.

        ``overrides`` replace default params (``--param k=v``). ``store`` (or a callable that
        opens it) answers ``{{ latest.Task.result.x }}``.
        """
        definition = self.task(name)
        env_source = os.environ if environ is None else environ
        from lute_async.records import RecordStore

        if isinstance(store, RecordStore):
            opened: RecordStore = store

            def opener() -> RecordStore | None:
                return opened

        else:
            opener = store if store is not None else _no_store
        context = _Context(self, env_source, opener)
        where = _Where(definition.source, name)
        params = self._params(definition, dict(overrides or {}), context)
        env: dict[str, str] = {}
        if definition.env_file is not None:
            env.update(parse_env_file(definition.env_file, f"{definition.source}: task {name!r}"))
        for var, setting in definition.env.items():
            value = _render_str(setting.value, params, context, where, f"env.{var}")
            current = env.get(var, env_source.get(var))
            env[var] = EnvSetting(value, setting.mode).apply(current)
        if definition.function is not None:
            from lute_async.worker import command

            argv = command(definition.function, python)
        else:
            assert definition.command is not None
            argv = [
                str(_render_str(arg, params, context, where, f"command[{i}]"))
                for i, arg in enumerate(definition.command)
            ]
        cwd = None
        if definition.cwd is not None:
            cwd_text = _render_str(definition.cwd, params, context, where, "cwd")
            cwd_path = Path(cwd_text).expanduser()
            if self.base is not None and not cwd_path.is_absolute():
                cwd_path = self.base / cwd_path
            cwd = os.fspath(cwd_path)
        hooks = [
            load_hook(spec, f"{definition.source}: task {name!r}: key 'hooks'")
            for spec in definition.hooks
        ]
        try:
            launcher = definition.launcher.build()
        except ImportError as exc:
            raise where.error(
                "launcher", f"the {definition.launcher.kind} launcher is not available: {exc}"
            ) from None
        except TypeError as exc:
            raise where.error("launcher", str(exc)) from None
        return ResolvedTask(
            name=name,
            argv=argv,
            params=params,
            env=env,
            cwd=cwd,
            timeout=definition.timeout,
            limits=definition.limits,
            launcher=launcher,
            communicators=definition.communicators,
            hooks=hooks,
            tags=list(definition.tags),
        )

    def _params(
        self, definition: TaskDef, overrides: dict[str, Any], context: _Context
    ) -> dict[str, Any]:
        """The task's params with overrides applied and templates filled (in any order)."""
        name = definition.name
        if name in context.resolved:
            return context.resolved[name]
        if name in context.resolving:
            chain = " -> ".join([*context.resolving, name])
            raise ConfigError(
                f"{definition.source}: task {name!r}: templates refer in a cycle: {chain}"
            )
        context.resolving.append(name)
        raw = {**definition.params, **overrides}
        where = _Where(definition.source, name)
        done: dict[str, Any] = {}
        in_progress: list[str] = []

        def value_of(key: str) -> Any:
            if key in done:
                return done[key]
            if key in in_progress:
                raise where.error(
                    f"params.{key}",
                    f"params refer to each other in a cycle: {' -> '.join([*in_progress, key])}",
                )
            in_progress.append(key)
            done[key] = _render(raw[key], value_of, raw, context, where, f"params.{key}")
            in_progress.pop()
            return done[key]

        for key in raw:
            value_of(key)
        context.resolving.pop()
        context.resolved[name] = done
        return done


def _no_store() -> RecordStore | None:
    return None


def _render_str(
    text: str, params: dict[str, Any], context: _Context, where: _Where, key: str
) -> str:
    value = _render(text, params.__getitem__, params, context, where, key)
    return value if isinstance(value, str) else str(value)


def _render(
    value: Any,
    lookup: Callable[[str], Any],
    names: Mapping[str, Any],
    context: _Context,
    where: _Where,
    key: str,
) -> Any:
    """Fill the templates in ``value`` (strings, and strings inside lists and tables)."""
    if isinstance(value, list):
        return [
            _render(v, lookup, names, context, where, f"{key}[{i}]") for i, v in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            k: _render(v, lookup, names, context, where, f"{key}.{k}") for k, v in value.items()
        }
    if not isinstance(value, str) or "{{" not in value:
        return value
    whole = _TEMPLATE.fullmatch(value.strip())
    if whole is not None and ":" not in whole.group(1).lstrip("$"):
        # A value that is exactly one template keeps the referenced value's type.
        return _lookup(whole.group(1), lookup, names, context, where, key)

    def substitute(match: re.Match[str]) -> str:
        expression = match.group(1)
        path, _, spec = expression.partition(":")
        found = _lookup(path.strip(), lookup, names, context, where, key)
        try:
            return format(found, spec)
        except (ValueError, TypeError) as exc:
            raise where.error(
                key, f"cannot format {{{{ {expression} }}}} (value {found!r}): {exc}"
            ) from None

    return _TEMPLATE.sub(substitute, value)


def _lookup(
    path: str,
    lookup: Callable[[str], Any],
    names: Mapping[str, Any],
    context: _Context,
    where: _Where,
    key: str,
) -> Any:
    template = f"{{{{ {path} }}}}"
    if path.startswith("$"):
        var = path[1:]
        if var not in context.environ:
            raise where.error(key, f"template {template}: environment variable {var!r} is not set")
        return context.environ[var]
    head, _, rest = path.partition(".")
    if not rest:
        if head not in names:
            known = ", ".join(sorted(names)) or "none"
            raise where.error(key, f"template {template}: no param {head!r} (params: {known})")
        return lookup(head)
    if head == "latest":
        return _latest(path, rest, context, where, key)
    if head not in context.config.tasks:
        raise where.error(key, f"template {template}: no task {head!r} in {context.config.source}")
    other = context.config.tasks[head]
    other_params = context.config._params(other, {}, context)
    return _walk(other_params, rest.split("."), template, where, key)


def _latest(path: str, rest: str, context: _Context, where: _Where, key: str) -> Any:
    template = f"{{{{ {path} }}}}"
    task_name, _, field_path = rest.partition(".")
    if not field_path:
        raise where.error(key, f"template {template}: expected latest.TASK.result.KEY")
    store = context.store()
    record = store.latest(task_name) if store is not None else None
    if record is None:
        raise where.error(
            key, f"template {template}: no COMPLETED run of {task_name!r} in the records database"
        )
    parts = field_path.split(".")
    document: Any = record.to_dict()
    if parts[0] == "result":
        document = (record.result or {}).get("payload")
        parts = parts[1:]
    return _walk(document, parts, template, where, key)


def _walk(document: Any, parts: list[str], template: str, where: _Where, key: str) -> Any:
    for part in parts:
        if isinstance(document, Mapping) and part in document:
            document = document[part]
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            raise where.error(key, f"template {template}: nothing at {part!r}")
    return document
