"""Tasklets: steps run on the executor before a task starts and after it ends.

A step is a Python function (``"package.module:function"``, or the function itself from Python)
or a command (an argv list). Its ``args`` (a function's keyword arguments) and a command's
arguments may hold ``{{ param }}``, ``{{ param.key }}`` and ``{{ $VARIABLE }}`` templates, filled
in by the one template engine (:mod:`lute_async.templates`) from the run's params and
environment when the step runs, so a step sees what the steps before it changed.

A function step is called as ``fn(context, **args)``, with a :class:`TaskletContext`:

* a ``before`` step runs once, before the first attempt, and may change ``context.params`` and
  ``context.env`` (what the task gets) or call ``context.skip(reason)``: the run then ends
  CANCELLED with the reason, and no process starts;
* an ``after`` step runs once the task has completed (after its last attempt, and only when it
  completed), before the terminal event, and may ``context.set_result(payload, summary=...)``
  or ``context.set_summary(text)``; ``context.record`` is the record as the task left it.

Sync functions run in a worker thread (a slow one does not stall other runs), async ones on the
loop. A command step runs with the run's environment and working directory; a non-zero exit is
a failure. A step that raises (or exits non-zero) ends the run FAILED, its error naming the step.

Steps are checked when given, before any process starts: a target that does not import, a
command that is not on ``PATH`` or a malformed step is a :class:`~lute_async.errors.ConfigError`
naming it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

from lute_async.errors import ConfigError
from lute_async.targets import TargetError, import_target
from lute_async.templates import LEAVE, NothingThere, Reference, TemplateError, render, walk

if TYPE_CHECKING:
    from lute_async.records.model import AnalysisRecord

__all__ = [
    "PHASES",
    "TASKLETS_EXPECTED",
    "LoadedTasklet",
    "SkipRun",
    "Tasklet",
    "TaskletContext",
    "TaskletError",
    "check_steps",
    "fill",
    "load_tasklets",
]

Phase = Literal["before", "after"]
PHASES: Final = ("before", "after")
TASKLETS_EXPECTED: Final = (
    "a list of steps: 'package.module:function', a command (a list of strings), "
    "a Tasklet or a table {function = ..., args = {...}} / {command = [...]}"
)
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_STEP_KEYS = ("function", "command", "args", "name")


class SkipRun(Exception):
    """Raised by :meth:`TaskletContext.skip`: the run ends CANCELLED with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskletError(Exception):
    """A step failed; the message names the step and what went wrong."""


@dataclass(frozen=True, slots=True)
class Tasklet:
    """One step: exactly one of ``function`` (``"package.module:function"`` or a callable
    taking the :class:`TaskletContext` first) and ``command`` (an argv list); ``args`` are the
    function's keyword arguments; ``name`` names the step in errors (default: its target)."""

    function: str | Callable[..., Any] | None = None
    command: Sequence[str] | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True, slots=True)
class LoadedTasklet:
    """A step checked and ready to run: its function imported, or its command."""

    phase: Phase
    name: str
    function: Callable[..., Any] | None
    command: tuple[str, ...] | None
    args: Mapping[str, Any]


@dataclass(slots=True)
class TaskletContext:
    """What a function step sees of its run, and what it may change (see the module)."""

    #: The step's name, its phase, and the run's id and name.
    step: str
    phase: Phase
    run_id: str
    run_name: str
    #: The run's params: a ``before`` step's changes are what the task gets.
    params: dict[str, Any]
    #: The environment variables the run sets for its task (on top of the executor's).
    env: dict[str, str]
    #: ``after`` steps: the record as the task left it (status, exit code, result...).
    record: AnalysisRecord | None = None
    #: ``after`` steps: the result the record will keep (``{"payload", "summary"}``) or None.
    result: dict[str, Any] | None = None

    def skip(self, reason: str) -> NoReturn:
        """``before`` steps: end the run CANCELLED with ``reason``, without starting it."""
        if self.phase != "before":
            raise TaskletError(f"{self.phase} step {self.step!r}: only before steps may skip")
        raise SkipRun(str(reason))

    def set_result(self, payload: Any, summary: str | None = None) -> None:
        """``after`` steps: the record's result becomes ``payload`` (and ``summary``)."""
        self._after_only("set_result")
        self.result = {"payload": payload, "summary": summary}

    def set_summary(self, summary: str) -> None:
        """``after`` steps: the record's result summary becomes ``summary``."""
        self._after_only("set_summary")
        result = self.result or {"payload": None, "summary": None}
        self.result = {**result, "summary": str(summary)}

    def _after_only(self, what: str) -> None:
        if self.phase != "after":
            raise TaskletError(f"{self.phase} step {self.step!r}: only after steps may {what}")


def load_tasklets(phase: Phase, steps: Any) -> tuple[LoadedTasklet, ...]:
    """``steps`` (a list of what :data:`TASKLETS_EXPECTED` says) checked and imported; a
    ConfigError names the phase, the step and what is wrong."""
    if isinstance(steps, str | bytes | Mapping) or not isinstance(steps, Sequence):
        raise ConfigError(f"key {phase!r}: expected {TASKLETS_EXPECTED}, got {steps!r}")
    return tuple(_load(phase, i, step) for i, step in enumerate(steps))


def check_steps(phase: Phase, steps: Any) -> None:
    """Check the shape of ``steps`` (targets' syntax, commands' form, keys, templates) without
    importing anything: a task file's steps are checked when it is read, imported when its task
    is resolved."""
    if isinstance(steps, str | bytes | Mapping) or not isinstance(steps, Sequence):
        raise ConfigError(f"key {phase!r}: expected {TASKLETS_EXPECTED}, got {steps!r}")
    for index, step in enumerate(steps):
        _shape(phase, index, step)


def _shape(phase: Phase, index: int, step: Any) -> Tasklet | LoadedTasklet:
    """``step`` as a Tasklet whose shape is checked (or a LoadedTasklet of this phase)."""
    key = f"{phase}' step {index + 1}"
    if isinstance(step, LoadedTasklet):
        if step.phase != phase:
            raise ConfigError(f"key '{key}: a {step.phase} step given as a {phase} step")
        return step
    if isinstance(step, str) or callable(step):
        step = Tasklet(function=step)
    elif isinstance(step, Mapping):
        unknown = [name for name in step if name not in _STEP_KEYS]
        if unknown:
            raise ConfigError(
                f"key '{key}: unknown key {unknown[0]!r}; expected one of {', '.join(_STEP_KEYS)}"
            )
        step = Tasklet(**step)
    elif isinstance(step, Sequence) and not isinstance(step, bytes):
        step = Tasklet(command=step)
    if not isinstance(step, Tasklet):
        raise ConfigError(f"key '{key}: expected a step ({TASKLETS_EXPECTED}), got {step!r}")
    if (step.function is None) == (step.command is None):
        raise ConfigError(f"key '{key}: expected exactly one of 'function' or 'command'")
    if not isinstance(step.args, Mapping) or not all(isinstance(k, str) for k in step.args):
        raise ConfigError(f"key '{key}: 'args' must be a table with string keys")
    if step.command is not None:
        _command_shape(key, step.command)
        if step.args:
            raise ConfigError(f"key '{key}: a command step takes no 'args'")
    try:  # malformed templates are refused now; what they name is looked up when it runs
        render(step.args if step.command is None else list(step.command), lambda r, k: LEAVE, key)
    except TemplateError as exc:
        raise ConfigError(f"key '{key}: {exc}") from None
    if step.command is None and isinstance(step.function, str) and not _TARGET.match(step.function):
        raise ConfigError(f"key '{key}: {step.function!r} is not 'package.module:function'")
    if step.name is not None and not isinstance(step.name, str):
        raise ConfigError(f"key '{key}: 'name' must be a string, got {step.name!r}")
    return step


def _load(phase: Phase, index: int, step: Any) -> LoadedTasklet:
    key = f"{phase}' step {index + 1}"
    step = _shape(phase, index, step)
    if isinstance(step, LoadedTasklet):
        return step
    if step.command is not None:
        argv = _command(key, step.command)
        name = step.name or " ".join(argv)
        return LoadedTasklet(phase, name, None, argv, {})
    function = step.function
    if isinstance(function, str):
        name = step.name or function
        function = _import(key, function)
    else:
        name = step.name or str(getattr(function, "__qualname__", repr(function)))
    if not callable(function):
        raise ConfigError(f"key '{key}: step {name!r} is not callable")
    return LoadedTasklet(phase, str(name), function, None, dict(step.args))


def _command_shape(key: str, command: Any) -> None:
    if (
        isinstance(command, str | bytes)
        or not isinstance(command, Sequence)
        or not command
        or not all(isinstance(part, str) for part in command)
    ):
        raise ConfigError(f"key '{key}: a command is a non-empty list of strings, got {command!r}")


def _command(key: str, command: Any) -> tuple[str, ...]:
    _command_shape(key, command)
    program = command[0]
    if "{{" not in program and shutil.which(program) is None:
        raise ConfigError(f"key '{key}: command {program!r} is not an executable on PATH")
    return tuple(command)


def _import(key: str, target: str) -> Callable[..., Any]:
    try:
        obj = import_target(target)
    except TargetError as exc:
        raise ConfigError(f"key '{key}: step {target!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"key '{key}: step {target!r} is not callable")
    function: Callable[..., Any] = obj
    return function


def fill(value: Any, params: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """``value`` with its templates filled in from ``params`` and ``env`` (TaskletError when
    one names nothing there)."""

    def resolve(reference: Reference, key: str) -> Any:
        variable = reference.variable
        if variable is not None:
            if variable not in env:
                raise TaskletError(f"template {reference.text}: variable {variable!r} is not set")
            return env[variable]
        head, *rest = reference.path
        if head not in params:
            known = ", ".join(sorted(params)) or "none"
            raise TaskletError(f"template {reference.text}: no param {head!r} (params: {known})")
        try:
            return walk(params[head], rest)
        except NothingThere as missing:
            raise TaskletError(f"template {reference.text}: nothing at {missing.part!r}") from None

    try:
        return render(value, resolve)
    except TemplateError as exc:
        raise TaskletError(str(exc)) from None
