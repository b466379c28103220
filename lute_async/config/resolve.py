"""A file's tasks (:class:`TaskConfig`) and resolving one into what a run needs.

Templates (:mod:`lute_async.templates`) are filled in at resolution because they may depend on
``--param`` overrides, the environment, other tasks' params and the run history:
``{{ param }}``, ``{{ $VARIABLE }}``, ``{{ other_task.param.path }}`` and
``{{ latest.TASK.result.key }}`` (the last COMPLETED run's result).

Only template text written in a file (or a graph's params) is rendered, once: ``--param``
overrides and every substituted value are literals, never rendered again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lute_async.config.model import (
    ENV_CONFIG,
    EnvSetting,
    ExecutorSettings,
    ResolvedTask,
    TaskDef,
)
from lute_async.config.parse import parse_env_file, task_where
from lute_async.config.plugins import installed_task, installed_tasks, load_hook
from lute_async.errors import ConfigError
from lute_async.options import key_error
from lute_async.tasklets import PHASES, LoadedTasklet, Phase, load_tasklets
from lute_async.templates import (
    LEAVE,
    NothingThere,
    Reference,
    Resolver,
    TemplateError,
    render,
    walk,
)

if TYPE_CHECKING:
    from lute_async.records import RecordStore

__all__ = ["TaskConfig"]

StoreOpener = Callable[[], "RecordStore | None"]
#: Makes the error for one problem at the key being filled in.
_Fail = Callable[[str], ConfigError]


@dataclass(slots=True)
class _Context:
    """What templates may refer to while one task is resolved."""

    config: TaskConfig
    environ: Mapping[str, str]
    store: StoreOpener
    #: Answers references first (a graph's upstream results); LEAVE passes them on.
    upstream: Resolver | None = None
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
        missing: bool = False,
    ) -> None:
        self.tasks = tasks
        #: The default task file was looked for and is not there (``source`` names it).
        self.missing = missing
        self.path = path
        self.base = base
        self.source = source
        self.executor = executor or ExecutorSettings()
        #: The file's ``[graph.NAME]`` tables, as written (see ``lute_async.config.graph``).
        self.graph: dict[str, Any] = {}

    def task(self, name: str) -> TaskDef:
        """The definition named ``name``: from the file, else an installed entry point."""
        found = self.tasks.get(name) or installed_task(name)
        if found is None:
            known = sorted({*self.tasks, *installed_tasks()})
            listing = ", ".join(known) if known else "none defined"
            if self.missing:  # the default file is not there: say so first
                raise ConfigError(
                    f"no task {name!r}: there is no task file {self.source} in "
                    f"{Path.cwd()} (give one with -c FILE or ${ENV_CONFIG}); "
                    f"installed tasks: {listing}"
                )
            raise ConfigError(f"{self.source}: no task {name!r}; known tasks: {listing}")
        return found

    def resolve(
        self,
        name: str,
        overrides: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        store: RecordStore | StoreOpener | None = None,
        python: str | None = None,
        written: Mapping[str, Any] | None = None,
        upstream: Resolver | None = None,
    ) -> ResolvedTask:
        """Fill in task ``name``'s templates and return it ready to run.

        ``overrides`` replace default params (``--param k=v``) and are literals: a
        ``{{ ... }}`` in them is kept as given. ``written`` also replaces default params but
        is template text, as a graph's params are; ``upstream`` answers its references (and
        the definition's) before the config does, LEAVE meaning "not mine". ``store`` (or a
        callable that opens it) answers ``{{ latest.Task.result.x }}``.
        """
        definition = self.task(name)
        env_source = os.environ if environ is None else environ
        context = _Context(self, env_source, _opener(store), upstream)
        where = task_where(definition.source, name)
        params = self._params(definition, context, dict(overrides or {}), dict(written or {}))

        resolver = _Resolver(context, params, params.__getitem__, where)

        def fill(text: str, key: str) -> str:
            value = _fill(text, resolver.resolve, where, key)
            return value if isinstance(value, str) else str(value)

        env: dict[str, str] = {}
        if definition.env_file is not None:
            env.update(parse_env_file(definition.env_file, where, env_source))
        for var, setting in definition.env.items():
            current = env.get(var, env_source.get(var))
            env[var] = EnvSetting(fill(setting.value, f"env.{var}"), setting.mode).apply(current)
        if definition.function is not None:
            from lute_async.worker import command

            argv = command(definition.function, python)
        else:
            assert definition.command is not None
            argv = [fill(arg, f"command[{i}]") for i, arg in enumerate(definition.command)]
        cwd = None
        if definition.cwd is not None:
            cwd_path = Path(fill(definition.cwd, "cwd")).expanduser()
            if self.base is not None and not cwd_path.is_absolute():
                cwd_path = self.base / cwd_path
            cwd = os.fspath(cwd_path)
        hooks = [load_hook(spec, f"{where}: key 'hooks'", self.base) for spec in definition.hooks]
        steps = {phase: _tasklets(phase, getattr(definition, phase), where) for phase in PHASES}
        try:
            launcher = definition.launcher.build()
        except ImportError as exc:
            raise key_error(
                where,
                "launcher",
                f"the {definition.launcher.kind} launcher is not available: {exc}",
            ) from None
        except TypeError as exc:
            raise key_error(where, "launcher", str(exc)) from None
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
            sandbox=definition.sandbox,
            retry=definition.retry,
            **steps,
        )

    def _params(
        self,
        definition: TaskDef,
        context: _Context,
        overrides: Mapping[str, Any] | None = None,
        written: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The task's params: ``overrides`` as given, the rest (``written`` over the
        definition's) with their templates filled in, in whatever order they refer."""
        name = definition.name
        if name in context.resolved:
            return context.resolved[name]
        if name in context.resolving:
            chain = " -> ".join([*context.resolving, name])
            raise ConfigError(
                f"{definition.source}: task {name!r}: templates refer in a cycle: {chain}"
            )
        context.resolving.append(name)
        literal = dict(overrides or {})
        raw = {**definition.params, **(written or {}), **literal}
        where = task_where(definition.source, name)
        done: dict[str, Any] = literal  # a given value is never rendered
        in_progress: list[str] = []

        def value_of(key: str) -> Any:
            if key in done:
                return done[key]
            if key in in_progress:
                raise key_error(
                    where,
                    f"params.{key}",
                    f"params refer to each other in a cycle: {' -> '.join([*in_progress, key])}",
                )
            in_progress.append(key)
            resolver = _Resolver(context, raw, value_of, where)
            done[key] = _fill(raw[key], resolver.resolve, where, f"params.{key}")
            in_progress.pop()
            return done[key]

        params = {key: value_of(key) for key in raw}
        context.resolving.pop()
        context.resolved[name] = params
        return params


def _tasklets(phase: Phase, steps: tuple[Any, ...], where: str) -> tuple[LoadedTasklet, ...]:
    """A task's ``phase`` steps imported; a ConfigError names the file, task and step."""
    try:
        return load_tasklets(phase, steps)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _opener(store: RecordStore | StoreOpener | None) -> StoreOpener:
    if store is None:
        return lambda: None
    if callable(store):
        return store
    return lambda: store


def _fill(value: Any, resolve: Callable[[Reference, str], Any], where: str, key: str) -> Any:
    try:
        return render(value, resolve, key)
    except TemplateError as exc:
        raise key_error(where, exc.key, str(exc)) from None


@dataclass(slots=True)
class _Resolver:
    """Answers one task's templates: its params (through ``lookup``, which resolves them on
    demand), environment variables, other tasks' params and the latest recorded results."""

    context: _Context
    names: Mapping[str, Any]
    lookup: Callable[[str], Any]
    #: How messages name the task being resolved.
    where: str

    def resolve(self, reference: Reference, key: str) -> Any:
        context = self.context

        def where(problem: str) -> ConfigError:
            return key_error(self.where, key, problem)

        if context.upstream is not None:
            found = context.upstream(reference, key)
            if found is not LEAVE:
                return found
        template = f"{{{{ {reference.expression} }}}}"
        variable = reference.variable
        if variable is not None:
            if variable not in context.environ:
                raise where(f"template {template}: environment variable {variable!r} is not set")
            return context.environ[variable]
        head, *rest = reference.path
        if not rest:
            if head not in self.names:
                known = ", ".join(sorted(self.names)) or "none"
                raise where(f"template {template}: no param {head!r} (params: {known})")
            return self.lookup(head)
        if head == "latest":
            return self._latest(rest, template, where)
        if head not in context.config.tasks:
            raise where(f"template {template}: no task {head!r} in {context.config.source}")
        other = context.config.tasks[head]
        other_params = context.config._params(other, context)
        return _walk(other_params, rest, template, where)

    def _latest(self, rest: list[str], template: str, where: _Fail) -> Any:
        if len(rest) < 2:
            raise where(f"template {template}: expected latest.TASK.result.KEY")
        task_name, *parts = rest
        store = self.context.store()
        record = store.latest(task_name) if store is not None else None
        if record is None:
            raise where(
                f"template {template}: no COMPLETED run of {task_name!r} in the records database"
            )
        document: Any = record.to_dict()
        if parts[0] == "result":
            document = (record.result or {}).get("payload")
            parts = parts[1:]
        return _walk(document, parts, template, where)


def _walk(document: Any, parts: list[str], template: str, where: _Fail) -> Any:
    try:
        return walk(document, parts)
    except NothingThere as missing:
        raise where(f"template {template}: nothing at {missing.part!r}") from None
