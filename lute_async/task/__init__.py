"""The task side: ``Reporter`` / ``AsyncReporter`` send messages to the executor, ``@task`` marks
functions a worker may call.

Imports here are paid by every task start, so this package loads light stdlib modules only, not
even msgpack (a reporter imports it after its first few messages), and loads ``AsyncReporter``
and ``task`` only when they are asked for. Modules: ``reporter`` (buffering and packing),
``sinks`` (the pipe, socket or TCP channel), ``async_reporter``, ``decorator`` (``@task``) and
``params`` (``read_params``, ``current_rank``).
"""

from lute_async.task.params import current_rank, read_params
from lute_async.task.reporter import PLAIN_MESSAGES as _PLAIN_MESSAGES  # noqa: F401 - old name
from lute_async.task.reporter import Reporter
from lute_async.task.reporter import to_wire as _to_wire  # noqa: F401 - old name
from lute_async.task.sinks import Sink as _Sink  # noqa: F401 - old name

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    from lute_async.task.async_reporter import AsyncReporter
    from lute_async.task.decorator import is_task, task

__all__ = ["AsyncReporter", "Reporter", "current_rank", "is_task", "read_params", "task"]


def __getattr__(name: str) -> object:
    """Load ``AsyncReporter`` and ``task`` on first use (a plain Reporter script needs neither)."""
    value: object
    if name == "AsyncReporter":
        from lute_async.task.async_reporter import AsyncReporter as value
    elif name in ("task", "is_task"):
        from lute_async.task import decorator

        value = getattr(decorator, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
