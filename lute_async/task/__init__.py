"""The task side: ``Reporter`` / ``AsyncReporter`` send messages to the executor, ``@task`` marks
functions a worker may call.

Imports here are paid by every task start, so this package loads light stdlib modules only, not
even msgpack (a reporter imports it after its first few messages), in as few modules as a task
needs: ``reporter`` (the sinks, buffered sending), ``packing`` and ``function`` (``@task``,
``read_params``, ``current_rank``); ``async_reporter`` loads when ``AsyncReporter`` is first used.
"""

from lute_async.task.function import current_rank, is_task, read_params, task
from lute_async.task.packing import PLAIN_MESSAGES as _PLAIN_MESSAGES  # noqa: F401 - old name
from lute_async.task.packing import to_wire as _to_wire  # noqa: F401 - old name
from lute_async.task.reporter import Reporter
from lute_async.task.sinks import Sink as _Sink  # noqa: F401 - old name

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    from lute_async.task.async_reporter import AsyncReporter

__all__ = ["AsyncReporter", "Reporter", "current_rank", "is_task", "read_params", "task"]


def __getattr__(name: str) -> object:
    """Load ``AsyncReporter`` on first use: a synchronous task never needs it."""
    if name != "AsyncReporter":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from lute_async.task.async_reporter import AsyncReporter

    globals()[name] = AsyncReporter
    return AsyncReporter
