"""lute-async: an event-driven, asyncio-native task executor.

The public API is re-exported lazily (PEP 562) so that task processes importing
``lute_async.task`` pay only for msgpack, not for anyio, structlog or sqlite3.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the typing module costs a task process milliseconds

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Executor": "lute_async.executor",
    "Run": "lute_async.executor",
    "Event": "lute_async.hooks.registry",
    "EventBatch": "lute_async.hooks.registry",
    "HookRegistry": "lute_async.hooks.registry",
    "Message": "lute_async.messages",
    "TaskStatus": "lute_async.messages",
    "AnalysisRecord": "lute_async.records",
    "RecordStore": "lute_async.records",
    "RunFilter": "lute_async.records",
    "Limits": "lute_async.limits",
    "Sandbox": "lute_async.sandbox",
    "Workflow": "lute_async.workflow",
    "Channel": "lute_async.channel",
    "Local": "lute_async.launchers.local",
    "MPI": "lute_async.launchers.mpi",
    "Slurm": "lute_async.launchers.slurm",
    "Forkserver": "lute_async.launchers.forkserver",
    "Reporter": "lute_async.task",
    "AsyncReporter": "lute_async.task",
    "task": "lute_async.task",
    "Retry": "lute_async.retry",
    "Tasklet": "lute_async.tasklets",
    "TaskletContext": "lute_async.tasklets",
    "FuturesExecutor": "lute_async.futures",
    "Command": "lute_async.futures",
    "TaskFailed": "lute_async.futures",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from typing import Any

    from lute_async.channel import Channel
    from lute_async.executor import Executor, Run
    from lute_async.futures import Command, FuturesExecutor, TaskFailed
    from lute_async.hooks.registry import Event, EventBatch, HookRegistry
    from lute_async.launchers.forkserver import Forkserver
    from lute_async.launchers.local import Local
    from lute_async.launchers.mpi import MPI
    from lute_async.launchers.slurm import Slurm
    from lute_async.limits import Limits
    from lute_async.messages import Message, TaskStatus
    from lute_async.records import AnalysisRecord, RecordStore, RunFilter
    from lute_async.retry import Retry
    from lute_async.sandbox import Sandbox
    from lute_async.task import AsyncReporter, Reporter, task
    from lute_async.tasklets import Tasklet, TaskletContext
    from lute_async.workflow import Workflow


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lute_async' has no attribute {name!r}")
    import importlib
    import sys

    loaded = importlib.import_module(module)
    # Bind every name this module exports at once: importing ``lute_async.task`` sets the
    # package attribute ``task`` to the module, which must not shadow the decorator.
    for export, source in _EXPORTS.items():
        if source == module:
            globals()[export] = getattr(loaded, export)
    # A module that imports lute_async.task (lute_async.futures) binds the package attribute
    # ``task`` to that submodule: put the decorator back.
    task_module = sys.modules.get("lute_async.task")
    if task_module is not None and globals().get("task") is task_module:
        globals()["task"] = task_module.__dict__["task"]
    return globals()[name]
