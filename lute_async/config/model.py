"""What a task file holds, as typed values: task definitions, env settings, launcher choice,
executor settings, and a task resolved into a run's options."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lute_async.launchers.registry import build_launcher
from lute_async.limits import Limits
from lute_async.sandbox import Sandbox

if TYPE_CHECKING:
    from lute_async.hooks.registry import Hook
    from lute_async.launchers.base import Launcher
    from lute_async.retry import Retry
    from lute_async.tasklets import LoadedTasklet

__all__ = [
    "DEFAULT_CONFIG",
    "ENV_CONFIG",
    "EnvSetting",
    "ExecutorSettings",
    "LauncherDef",
    "ResolvedTask",
    "TaskDef",
]

#: The task file used when none is given, unless ``$LUTE_ASYNC_CONFIG`` names another.
DEFAULT_CONFIG = "lute-async.toml"
#: The environment variable naming the task file.
ENV_CONFIG = "LUTE_ASYNC_CONFIG"


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
    """A launcher kind and its checked options, built into a Launcher only when run."""

    kind: str = "local"
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Launcher | None:
        """The launcher for a run: None means the executor's default (local)."""
        return build_launcher(self.kind, self.options)


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
    sandbox: Sandbox | None = None
    launcher: LauncherDef = field(default_factory=LauncherDef)
    communicators: tuple[str, ...] | None = None
    hooks: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""
    retry: Retry | None = None
    #: Steps as written (imported when the task is resolved).
    before: tuple[Any, ...] = ()
    after: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    """The optional ``[executor]`` table."""

    db: Path | str | None = None
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
    sandbox: Sandbox | None = None
    retry: Retry | None = None
    before: tuple[LoadedTasklet, ...] = ()
    after: tuple[LoadedTasklet, ...] = ()

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
        if self.sandbox is not None:
            options["sandbox"] = self.sandbox
        if self.hooks:
            options["hooks"] = {"*": self.hooks}
        for key in ("retry", "before", "after"):
            if getattr(self, key):
                options[key] = getattr(self, key)
        return options
