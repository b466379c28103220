"""Task functions: the ``@task`` mark (which functions a worker may run) and what the executor
hands a task process, its params and its MPI rank."""

from __future__ import annotations

import os

from lute_async.wire import ENV_PARAMS, ENV_PARAMS_FILE, RANK_VARIABLES

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


def current_rank(environ: dict[str, str] | os._Environ[str] | None = None) -> int | None:
    """This process's MPI rank from the launcher's variables, or None outside MPI."""
    env = os.environ if environ is None else environ
    for name in RANK_VARIABLES:
        value = env.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return None


def read_params(environ: dict[str, str] | os._Environ[str] | None = None) -> dict[str, Any]:
    """The run's params as the executor passed them (JSON in the environment or a file)."""
    env = os.environ if environ is None else environ
    path, text = env.get(ENV_PARAMS_FILE), env.get(ENV_PARAMS)
    if path is None and text is None:
        return {}  # no params: skip importing json (and re), a few ms of every worker start
    import json

    if path is not None:
        with open(path, "rb") as fh:
            params = json.load(fh)
    else:
        params = json.loads(text)  # type: ignore[arg-type]
    if not isinstance(params, dict):
        raise ValueError(f"{ENV_PARAMS} must hold a JSON object, got {type(params).__name__}")
    return params
