"""The one typed spec of a run's options, checked the same way from Python, task files and graphs.

Each option is an :class:`Option`: a msgspec type that validates and converts the value (``int``
seconds become ``float``, a tuple of tags a list), or, for live objects msgspec cannot describe
(launchers, hooks, channels), a predicate. :func:`check_run_options` checks a whole mapping and
raises :class:`~lute_async.errors.ConfigError` naming the key, the value given and what was
expected; :func:`check_options` does the same for any table of options (task and graph tables
reuse :data:`RUN_OPTIONS` entries, so a value is checked once, one way, everywhere).

Names (of runs, tasks in task files, graph nodes) follow one rule, :data:`NAME`: a non-empty
string with no control character (C0 such as newline and carriage return, DEL, C1), since a name
ends up in log lines, records and SLURM batch scripts. :data:`Line` is that rule for any text
that becomes one line of a script (sbatch directives).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from lute_async.errors import ConfigError
from lute_async.limits import Limits
from lute_async.retry import RETRY_EXPECTED, RETRY_PARTS, Retry, RetryTable
from lute_async.sandbox import SANDBOX_OPTION
from lute_async.tasklets import TASKLETS_EXPECTED, load_tasklets

__all__ = [
    "COMMUNICATOR_KINDS",
    "NAME",
    "RUN_OPTIONS",
    "Line",
    "Option",
    "check_options",
    "check_run_options",
    "control_character",
    "describe",
    "expected",
    "key_error",
]

#: Communicator kinds a run may name.
COMMUNICATOR_KINDS = ("pipe", "socket", "tcp")

_FINITE = sys.float_info.max
Seconds = Annotated[float, msgspec.Meta(gt=0, le=_FINITE)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0, le=_FINITE)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

#: Control characters: C0 (newline, carriage return, tab...), DEL and C1.
_CONTROL_CHARACTERS = "\x00-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{_CONTROL_CHARACTERS}]")
#: A string that is one line of text: no control character anywhere.
Line = Annotated[str, msgspec.Meta(pattern=f"\\A[^{_CONTROL_CHARACTERS}]*\\Z")]


def control_character(text: str) -> str | None:
    """The first control character in ``text`` (see :data:`Line`), or None."""
    found = _CONTROL.search(text)
    return found.group() if found is not None else None


class LimitsTable(msgspec.Struct, forbid_unknown_fields=True):
    """:class:`~lute_async.limits.Limits` written as a table (a task file's ``limits``)."""

    wall_time: Seconds | None = None
    cpu_time: PositiveInt | None = None
    memory: PositiveInt | None = None
    pids: PositiveInt | None = None
    open_files: PositiveInt | None = None
    output_bytes: PositiveInt | None = None


def _limits(table: LimitsTable) -> Limits:
    return Limits(**msgspec.structs.asdict(table))


@dataclass(frozen=True, slots=True)
class Option:
    """One option: what it must be, in words and as a type.

    ``type`` is a msgspec type the value is converted to (strictly: ``"1"`` is not a number);
    ``accepts`` lets a live object through as is; ``build`` turns the converted value into
    what runs take; ``parts`` names what the entries of a table option must be.
    """

    expected: str
    type: Any = None
    accepts: Callable[[Any], bool] | None = None
    build: Callable[[Any], Any] | None = None
    parts: Mapping[str, str] = field(default_factory=dict)
    #: For a value of the right kind that still fails: that kind, and what it must also be.
    also: tuple[type, str] | None = None

    def check(self, key: str, value: Any, where: str = "") -> Any:
        """``value`` checked and converted, or a ConfigError naming ``key``."""
        if self.accepts is not None and self.accepts(value):
            return value
        if self.type is None:
            raise expected(where, key, self.expected, value)
        try:
            converted = msgspec.convert(value, self.type)
        except msgspec.ValidationError as exc:
            raise self._explain(key, value, where, str(exc)) from None
        return self.build(converted) if self.build is not None else converted

    def _explain(self, key: str, value: Any, where: str, detail: str) -> ConfigError:
        """Our message for msgspec's ``detail``: it names the failing entry of a table."""
        unknown = re.match(r"Object contains unknown field `([^`]*)`", detail)
        if unknown is not None and self.parts:
            name = unknown.group(1)
            return key_error(
                where, f"{key}.{name}", f"unknown key; expected one of {', '.join(self.parts)}"
            )
        part = re.search(r"at `\$\.(\w+)(?:\[\d+\])*`$", detail)  # a table's entry, or in it
        if part is not None and part.group(1) in self.parts and isinstance(value, Mapping):
            name = part.group(1)
            return expected(where, f"{key}.{name}", self.parts[name], value[name])
        if self.also is not None and isinstance(value, self.also[0]):
            return expected(where, key, f"{self.expected}, {self.also[1]}", value)
        return expected(where, key, self.expected, value)


def _is_hooks(value: Any) -> bool:
    if callable(getattr(value, "hooks_for", None)):  # a HookRegistry
        return True
    if not isinstance(value, Mapping):
        return False
    for event, hooks in value.items():
        if not isinstance(event, str):
            return False
        if callable(hooks):
            continue
        if isinstance(hooks, str | bytes) or not isinstance(hooks, Iterable):
            return False
        if not all(callable(hook) for hook in hooks):
            return False
    return True


def _has_methods(*names: str) -> Callable[[Any], bool]:
    """A check that an object has these methods (launchers, communicators and channels are
    protocols: any object with their methods will do)."""

    def check(value: Any) -> bool:
        return all(callable(getattr(value, name, None)) for name in names)

    return check


_is_launcher = _has_methods("launch", "describe")
_is_communicator = _has_methods("open", "serve")
_is_channel = _has_methods("attach")


def _is_communicators(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        (isinstance(item, str) and item in COMMUNICATOR_KINDS) or _is_communicator(item)
        for item in value
    )


def _is_retry(value: Any) -> bool:
    return isinstance(value, Retry)


#: The one rule for names: of runs, of tasks in task files and of graph nodes (a good one is
#: let through without msgspec, whose convert hashes the Annotated type at each call).
NAME = Option(
    "a run name (a string)",
    Annotated[Line, msgspec.Meta(min_length=1)],
    accepts=lambda v: type(v) is str and v != "" and _CONTROL.search(v) is None,
    also=(str, "not empty and without control characters (newline, tab, DEL...)"),
)

#: Every option of ``Executor.run``/``start``/``run_function``, that is of ``Run``.
RUN_OPTIONS: dict[str, Option] = {
    "name": NAME,
    "params": Option("a table of params with string keys", dict[str, Any]),
    "env": Option("a table of environment variables, names to strings", dict[str, str]),
    "cwd": Option("a directory path", str, accepts=lambda v: isinstance(v, os.PathLike)),
    "timeout": Option("a positive number of seconds", Seconds),
    "hooks": Option("a table {event: hook or [hooks]} of callables", accepts=_is_hooks),
    "launcher": Option("a Launcher", accepts=_is_launcher),
    "limits": Option(
        "a Limits or a table with " + ", ".join(Limits.__slots__),
        LimitsTable,
        accepts=lambda v: isinstance(v, Limits),
        build=_limits,
        parts={
            name: "a positive number of seconds" if name == "wall_time" else "a positive integer"
            for name in Limits.__slots__
        },
    ),
    "communicators": Option(
        "a list of " + ", ".join(f"'{kind}'" for kind in COMMUNICATOR_KINDS),
        list[Literal["pipe", "socket", "tcp"]],
        accepts=_is_communicators,
        build=tuple,
    ),
    "tags": Option("a list of strings", list[str]),
    "grace": Option("a number of seconds >= 0", NonNegativeSeconds),
    "tap": Option("true or false", bool),
    "inherit_env": Option("true or false", bool),
    "stdin": Option("a Channel", accepts=_is_channel),
    "stdout": Option("a Channel", accepts=_is_channel),
    "sandbox": Option(**SANDBOX_OPTION),
    "retry": Option(RETRY_EXPECTED, RetryTable, _is_retry, Retry.from_table, RETRY_PARTS),
    "before": Option(TASKLETS_EXPECTED, list[Any], build=lambda v: load_tasklets("before", v)),
    "after": Option(TASKLETS_EXPECTED, list[Any], build=lambda v: load_tasklets("after", v)),
}


def check_options(
    values: Mapping[str, Any],
    options: Mapping[str, Option],
    *,
    where: str = "",
    prefix: str = "",
    unknown: str = "unknown key; expected one of",
) -> dict[str, Any]:
    """``values`` checked against ``options``: each converted, ``None`` kept (the default).

    Unknown keys are refused, all named, before any value is checked; ``prefix`` goes before
    every key in messages (``"launcher."``), ``unknown`` before the list of known keys.
    """
    extra = [key for key in values if key not in options]
    if extra:
        keys = ", ".join(repr(prefix + key) for key in extra)
        label = f"key {keys}" if len(extra) == 1 else f"keys {keys}"
        listing = ", ".join(options) or "no options"
        raise ConfigError(f"{where + ': ' if where else ''}{label}: {unknown} {listing}")
    return {
        key: None if value is None else options[key].check(prefix + key, value, where)
        for key, value in values.items()
    }


def check_run_options(options: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """The options of one run (``Run``'s keyword arguments) checked and converted.

    Returns a new dict with the same keys: numbers of seconds as ``float``, ``tags`` a list,
    ``communicators`` a tuple, a ``limits`` table as :class:`Limits`; live objects as given.
    Raises :class:`ConfigError` naming the key, the value and what was expected.
    """
    return check_options(
        options, RUN_OPTIONS, where=where, unknown="unknown option; expected one of"
    )


def describe(value: Any) -> str:
    """``value`` in words for an error message: ``a string ('soon')``, ``a list ([1, 2])``."""
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    kind = kinds.get(type(value))
    if kind is None:
        if isinstance(value, Mapping):
            kind = "a table"
        elif isinstance(value, list | tuple):
            kind = "a list"
        else:
            return type(value).__name__
    text = repr(value)
    return f"{kind} ({text if len(text) <= 60 else text[:57] + '...'})"


def key_error(where: str, key: str | None, problem: str) -> ConfigError:
    """``where: key 'key': problem`` (``key`` None: no key part)."""
    if key is not None:
        problem = f"key {key!r}: {problem}"
    return ConfigError(f"{where + ': ' if where else ''}{problem}")


def expected(where: str, key: str, what: str, value: Any) -> ConfigError:
    """``where: key 'key': expected what, got value``."""
    return key_error(where, key, f"expected {what}, got {describe(value)}")


def _is_path(value: Any) -> bool:
    return isinstance(value, os.PathLike)


#: What the environment of a run's record keeps: the env the run was given, or all of it.
RECORD_ENV = ("overrides", "all")

#: The keyword arguments of ``Executor(...)`` (a database given as an open store is let
#: through by the executor itself).
EXECUTOR_ARGUMENTS: dict[str, Option] = {
    "db": Option("a database path or a postgresql:// URL", str, accepts=_is_path),
    "hooks": RUN_OPTIONS["hooks"],
    "max_concurrency": Option("a positive integer", PositiveInt),
    "communicators": RUN_OPTIONS["communicators"],
    "grace": RUN_OPTIONS["grace"],
    "max_frame": Option("a positive number of bytes", PositiveInt),
    "drain_timeout": Option("a positive number of seconds", Seconds),
    "hook_timeout": Option("a positive number of seconds", Seconds),
    "inherit_env": Option("true or false", bool),
    "workdir": Option("a directory path", str, accepts=_is_path),
    "log_events": Option("true or false", bool),
    "max_result_bytes": Option("a positive number of bytes", PositiveInt),
    "record_env": Option(
        " or ".join(repr(mode) for mode in RECORD_ENV), Literal["overrides", "all"]
    ),
    "dashboard": Option("a dashboard", accepts=_has_methods("open", "aclose", "__call__")),
    "lease_period": Option("a positive number of seconds", Seconds),
}
