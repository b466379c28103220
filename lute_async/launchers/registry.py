"""Launchers by kind: ``"local"``, ``"mpi"``, ``"slurm"`` (and any registered later).

Each kind names its factory as ``"module:Class"``, imported only when a launcher of that kind
is built (the SLURM launcher is never imported by a config that does not use it), and the
options it takes, as :class:`~lute_async.options.Option` specs, so a task file's launcher table
is checked before anything runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from lute_async.errors import ConfigError
from lute_async.launchers.base import Launcher
from lute_async.options import Line, Option, check_options

__all__ = [
    "LauncherKind",
    "build_launcher",
    "check_launcher_options",
    "kinds",
    "register",
    "unregister",
]

_StrList = Option("a list of strings", list[str])
#: sbatch directives become lines of a batch script: no control character may be in one.
_LineList = Option("a list of strings without control characters", list[Line])


def _text(what: str) -> Option:
    """A string option that becomes one line of a script (see :data:`Line`)."""
    return Option(f"{what} (without control characters)", Line)


@dataclass(frozen=True, slots=True)
class LauncherKind:
    """A launcher kind: its factory (``"module:Class"``, None for the executor's default) and
    the options that factory takes."""

    name: str
    factory: str | None
    options: Mapping[str, Option] = field(default_factory=dict)


_KINDS: dict[str, LauncherKind] = {}


def register(kind: LauncherKind) -> None:
    """Make ``kind.name`` a launcher kind task files may name (replacing one of that name)."""
    _KINDS[kind.name] = kind


def unregister(name: str) -> None:
    """Forget the launcher kind ``name`` (nothing if it is not registered)."""
    _KINDS.pop(name, None)


def kinds() -> list[str]:
    """The registered kind names, in registration order."""
    return list(_KINDS)


def _kind(name: str, where: str) -> LauncherKind:
    found = _KINDS.get(name)
    if found is None:
        raise ConfigError(
            f"{where + ': ' if where else ''}key 'launcher.kind': "
            f"expected one of {', '.join(_KINDS)}, got {name!r}"
        )
    return found


def check_launcher_options(
    name: str, options: Mapping[str, Any], *, where: str = ""
) -> dict[str, Any]:
    """``options`` for a launcher of kind ``name``, checked against what that kind takes."""
    kind = _kind(name, where)
    return check_options(
        options,
        kind.options,
        where=where,
        prefix="launcher.",
        unknown=f"unknown option for a {name} launcher; expected",
    )


def build_launcher(name: str, options: Mapping[str, Any]) -> Launcher | None:
    """A launcher of kind ``name`` built with ``options``; None for the default (local).

    Raises ImportError when the kind's module cannot be imported, TypeError for options its
    factory refuses.
    """
    kind = _kind(name, "")
    if kind.factory is None:
        return None
    module_name, _, attribute = kind.factory.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    launcher: Launcher = factory(**options)
    return launcher


register(LauncherKind("local", None))
register(
    LauncherKind(
        "mpi",
        "lute_async.launchers.mpi:MPI",
        {
            "np": Option("an integer number of processes", Annotated[int, msgspec.Meta(gt=0)]),
            "launcher": Option(
                "'auto', 'mpirun', 'mpiexec' or 'srun'",
                Literal["auto", "mpirun", "mpiexec", "srun"],
            ),
            "extra_args": _StrList,
            "python": _text("the Python that runs a command starting with 'python'"),
        },
    )
)
register(
    LauncherKind(
        "slurm",
        "lute_async.launchers.slurm:Slurm",
        {
            "partition": _text("a partition name"),
            "ntasks": Option("an integer", int),
            "nodes": Option("an integer or a range like '1-2'", int | Line),
            "cpus_per_task": Option("an integer", int),
            "time": _text("a time limit like '0:30:00'"),
            "mem": _text("a memory size like '4G'"),
            "account": _text("an account name"),
            "qos": _text("a QOS name"),
            "extra_sbatch": _LineList,
            "mpi": Option("true or false", bool),
            "tcp_host": _text("the address the executor listens on for the job's ranks"),
            "tcp_advertise": _text("the address the ranks connect to"),
            "python": _text("the Python that runs a command starting with 'python'"),
            "requeue": Option("true or false", bool),
        },
    )
)
register(
    LauncherKind(
        "forkserver",
        "lute_async.launchers.forkserver:Forkserver",
        {"preload": _StrList, "python": _text("a Python interpreter path")},
    )
)
