"""The ``@task`` mark: which functions a worker (``lute-async call``) may run."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])

#: The attribute ``@task`` sets on a function.
TASK_MARK = "__lute_task__"


def task(fn: F) -> F:
    """Mark ``fn`` as a task function that ``run_function`` and ``lute-async call`` may run."""
    setattr(fn, TASK_MARK, True)
    return fn


def is_task(obj: object) -> bool:
    """True for a callable marked with ``@task``."""
    return callable(obj) and bool(getattr(obj, TASK_MARK, False))
