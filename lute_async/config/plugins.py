"""What installed packages provide: tasks (``lute_async.tasks``) and hooks (``lute_async.hooks``)
entry points, and hooks imported from ``"package.module:function"``."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lute_async.config.model import TaskDef
from lute_async.config.parse import parse_task
from lute_async.errors import ConfigError
from lute_async.options import describe
from lute_async.targets import TargetError, import_target

if TYPE_CHECKING:
    from lute_async.hooks.registry import Hook

__all__ = ["HOOKS_GROUP", "TASKS_GROUP", "installed_task", "installed_tasks", "load_hook"]

#: Entry-point group of installed tasks: ``name = "pkg.mod:func"`` (a ``@task``) or a dict.
TASKS_GROUP = "lute_async.tasks"
#: Entry-point group of installed hooks: ``name = "pkg.mod:fn"``.
HOOKS_GROUP = "lute_async.hooks"


def _entry_point(group: str, name: str) -> metadata.EntryPoint | None:
    for entry in metadata.entry_points(group=group, name=name):
        return entry
    return None


def _import_beside(module_name: str, base: Path | None) -> Any:
    """Import ``module_name``, its top-level module looked for first in ``base`` (the task
    file's directory, as a script's own directory comes first on ``sys.path``), then on
    ``sys.path``. ``sys.path`` itself is left as it was."""
    top = module_name.partition(".")[0]
    if base is not None and top not in sys.modules:
        found = importlib.machinery.PathFinder.find_spec(top, [os.fspath(base)])
        if found is not None and found.loader is not None:
            module = importlib.util.module_from_spec(found)
            sys.modules[top] = module
            try:
                found.loader.exec_module(module)
            except BaseException:
                del sys.modules[top]
                raise
    return importlib.import_module(module_name)


def load_hook(spec: str, where: str = "", base: Path | None = None) -> Hook:
    """Import a hook from ``"pkg.mod:fn"`` or by its ``lute_async.hooks`` entry-point name;
    modules beside the task file (in ``base``) import without ``PYTHONPATH``."""
    prefix = f"{where}: " if where else ""
    if ":" not in spec:
        entry = _entry_point(HOOKS_GROUP, spec)
        if entry is None:
            raise ConfigError(
                f"{prefix}hook {spec!r} is neither 'package.module:function' nor an installed "
                f"{HOOKS_GROUP} entry point"
            )
        spec = entry.value
    try:
        obj = import_target(spec, lambda name: _import_beside(name, base), (ImportError,))
    except (TargetError, ValueError) as exc:
        raise ConfigError(f"{prefix}cannot load hook {spec!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"{prefix}hook {spec!r} is not callable")
    hook: Hook = obj
    return hook


def installed_tasks() -> list[str]:
    """Names of the tasks installed packages register under ``lute_async.tasks``."""
    return sorted({entry.name for entry in metadata.entry_points(group=TASKS_GROUP)})


def installed_task(name: str) -> TaskDef | None:
    """The task an installed package registers as ``name``, or None."""
    entry = _entry_point(TASKS_GROUP, name)
    if entry is None:
        return None
    source = f"entry point {TASKS_GROUP}:{name} ({entry.value})"
    try:
        obj = entry.load()
    except Exception as exc:
        raise ConfigError(f"{source}: cannot load: {exc}") from None
    if isinstance(obj, Mapping):
        return parse_task(name, dict(obj), source, None)
    if callable(obj):
        return TaskDef(name=name, source=source, function=entry.value)
    raise ConfigError(f"{source}: expected a @task function or a task table, got {describe(obj)}")
