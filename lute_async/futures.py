"""FuturesExecutor: the ``concurrent.futures.Executor`` face of lute-async.

``submit(fn, *args, **kwargs)`` runs an importable ``@task`` function in a worker process (its
arguments bound to its parameter names: the params of the run), ``submit(Command([...]))`` a
command; every call is a recorded lute-async run on one background event loop
(:class:`~lute_async.background.BackgroundRuns`). A future's result is the function's return
value (a command's: its record); a failed task raises its exception type again (builtin ones;
others as :class:`TaskFailed`) with the task's traceback text as a note.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import inspect
import json
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from lute_async.background import BackgroundRun, BackgroundRuns
from lute_async.errors import ConfigError, LuteAsyncError
from lute_async.executor import Executor
from lute_async.records import AnalysisRecord
from lute_async.targets import TargetError, import_target
from lute_async.task.function import is_task

__all__ = ["Command", "FuturesExecutor", "RunFuture", "TaskFailed", "task_target"]


class Command(tuple[str, ...]):
    """A command to run: an argv (a tuple of strings, so it is also a valid
    ``executor.Command``, accepted by :meth:`Executor.run`) and run options for
    :meth:`FuturesExecutor.submit` (``env``, ``cwd``, ``timeout``, ``tags``, ``launcher``...).
    """

    options: dict[str, Any]

    def __new__(cls, argv: str | Sequence[str | os.PathLike[str]], **options: Any) -> Command:
        if isinstance(argv, str):
            argv = [argv]
        if not argv or not all(isinstance(part, str | os.PathLike) for part in argv):
            raise ConfigError(f"Command: expected a non-empty list of strings, got {argv!r}")
        command = super().__new__(cls, (os.fspath(part) for part in argv))
        command.options = options
        return command

    def __repr__(self) -> str:
        return f"Command({list(self)!r})"


class TaskFailed(LuteAsyncError):
    """A task failed with an exception that is not a builtin one (or its run failed another
    way: a non-zero exit, a signal, a timeout). ``type`` names the task's exception type,
    ``traceback`` is the task's traceback text and ``record`` the run's record."""

    def __init__(self, record: AnalysisRecord) -> None:
        error = record.error or {}
        self.record = record
        self.type: str = error.get("type") or record.status
        self.traceback: str | None = error.get("traceback")
        detail = error.get("message") or _verdict_text(record)
        super().__init__(
            f"run {record.name!r} ({record.id}) {record.status}: {self.type}: {detail}"
        )


def _verdict_text(record: AnalysisRecord) -> str:
    verdict = record.verdict or {}
    text = verdict.get("detail") or verdict.get("kind")
    if text:
        return str(text)
    if record.signal is not None:
        return f"killed by signal {record.signal}"
    return f"exit code {record.exit_code}"


def task_error(record: AnalysisRecord) -> BaseException:
    """The exception a failed run's future raises: the task's builtin exception type again
    (with the task's traceback as a note), else :class:`TaskFailed`."""
    error = record.error or {}
    kind = getattr(builtins, str(error.get("type")), None)
    if isinstance(kind, type) and issubclass(kind, Exception) and record.status == "FAILED":
        try:
            exc: BaseException = kind(error.get("message", ""))
        except Exception:  # a type that wants other arguments (UnicodeDecodeError...)
            exc = TaskFailed(record)
    else:
        exc = TaskFailed(record)
    if error.get("traceback"):
        exc.add_note(f"in lute-async run {record.id}:\n{error['traceback'].rstrip()}")
    return exc


def task_target(fn: Callable[..., Any]) -> str:
    """``"pkg.mod:qualname"`` of ``fn``, or a ConfigError naming why a worker could not
    import it (a lambda, a local function, a function of ``__main__``, not a ``@task``)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    what = getattr(fn, "__name__", repr(fn))
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ConfigError(f"submit: {fn!r} has no module and name a worker could import it by")
    if "<lambda>" in qualname:
        raise ConfigError(
            f"submit: a lambda ({module}:{qualname}) has no name a worker process can import; "
            "define it with def at module level and mark it @task"
        )
    if "<locals>" in qualname:
        raise ConfigError(
            f"submit: {what!r} is a local function ({qualname}); a worker process can only "
            "import functions defined at module level"
        )
    if module == "__main__":
        raise ConfigError(
            f"submit: {what!r} is defined in __main__, which a worker process cannot import; "
            "move it to a module on the path (installed or on PYTHONPATH)"
        )
    try:
        found = import_target(f"{module}:{qualname}", failures=(ImportError,))
    except TargetError as exc:
        raise ConfigError(
            f"submit: {module}:{qualname} cannot be imported by name: {exc}"
        ) from None
    if found is not fn:
        raise ConfigError(
            f"submit: {module}:{qualname} names another object than the function given "
            "(a wrapper or a redefinition); a worker would run that one"
        )
    if not is_task(fn):
        raise ConfigError(
            f"submit: {module}:{qualname} is not marked as a task: decorate it with "
            "@lute_async.task"
        )
    return f"{module}:{qualname}"


def bind_params(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """``args`` and ``kwargs`` as the keyword params of ``fn``'s run, in plain JSON types; a
    ConfigError when they do not fit its signature or are not JSON."""
    signature = inspect.signature(fn)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"submit: arguments do not fit {fn.__qualname__}{signature}: {exc}"
        ) from None
    params: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
            raise ConfigError(
                f"submit: parameter {name!r} of {fn.__qualname__} is positional-only or *args; "
                "a task gets its params by name"
            )
        if kind is inspect.Parameter.VAR_KEYWORD:
            params.update(value)
        else:
            params[name] = value
    try:
        json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"submit: the arguments of {fn.__qualname__} must be JSON: {exc}"
        ) from None
    return params


class RunFuture(concurrent.futures.Future[Any]):
    """A future of one lute-async run: ``run_id`` and ``record`` besides the Future API.
    ``cancel()`` cancels the run, queued or running (it then ends CANCELLED)."""

    _handle: BackgroundRun  # set by FuturesExecutor.submit once the run exists

    def __init__(self, *, is_function: bool) -> None:
        super().__init__()
        self._is_function = is_function

    @property
    def run_id(self) -> str:
        return self._handle.id

    @property
    def record(self) -> AnalysisRecord:
        """The run's record: live while it runs, final once the future is done."""
        return self._handle.record

    def running(self) -> bool:
        return self._handle.started.is_set() and not self._handle.finished.done()

    def cancel(self) -> bool:
        if not super().cancel():  # already done: too late
            return False
        self._handle.cancel()
        return True

    def _settle(self, handle: BackgroundRun) -> None:
        """Called on the loop once the record is final."""
        if not self.set_running_or_notify_cancel():
            return  # cancelled: the run was asked to end, its record says CANCELLED
        error = handle.finished.exception()
        record = handle.record
        if error is not None:
            self.set_exception(error)
        elif record.status != "COMPLETED":
            self.set_exception(task_error(record))
        elif self._is_function:
            self.set_result((record.result or {}).get("payload"))
        else:
            self.set_result(record)


class FuturesExecutor(concurrent.futures.Executor):
    """Run ``@task`` functions and :class:`Command` s as lute-async runs, from synchronous
    code. ``max_workers`` bounds the runs executing at once (others wait, PENDING);
    ``executor_options`` go to :class:`~lute_async.Executor` (``db``, ``hooks``...);
    ``run_options`` apply to every run (``tags``, ``timeout``, ``env``...)."""

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        run_options: dict[str, Any] | None = None,
        python: str | None = None,
        **executor_options: Any,
    ) -> None:
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise ConfigError(
                f"FuturesExecutor: max_workers must be a positive integer, got {max_workers!r}"
            )
        self._runs = BackgroundRuns(
            "lute-async-futures", max_concurrency=max_workers, **executor_options
        )
        self._run_options = dict(run_options or {})
        self._python = python
        self._futures: set[RunFuture] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    @property
    def executor(self) -> Executor:
        """The :class:`~lute_async.Executor` behind this one (its hooks, its records)."""
        return self._runs.executor

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> RunFuture:
        """Run ``fn(*args, **kwargs)`` (a ``@task`` function) or the :class:`Command` ``fn``
        (``kwargs`` are then run options) as a lute-async run; return its future."""
        if self._shutdown:
            raise RuntimeError("cannot submit to a FuturesExecutor after shutdown")
        options = dict(self._run_options)
        if isinstance(fn, Command):
            if args:
                raise ConfigError("submit: a Command takes no positional arguments")
            options.update(fn.options, **kwargs)
            cmd: Sequence[str] = fn
            is_function = False
        elif callable(fn):
            target = task_target(fn)
            options["params"] = {**options.get("params", {}), **bind_params(fn, args, kwargs)}
            options.setdefault("name", target.rpartition(":")[2])
            cmd = self.executor.function_command(target, python=self._python)
            is_function = True
        else:
            raise ConfigError(f"submit: expected a @task function or a Command, got {fn!r}")
        future = RunFuture(is_function=is_function)

        def settle(handle: BackgroundRun) -> None:
            with self._lock:
                self._futures.discard(future)
            future._settle(handle)

        with self._lock:
            self._futures.add(future)
        try:
            future._handle = self._runs.start(cmd, on_end=settle, **options)
        except BaseException:
            with self._lock:
                self._futures.discard(future)
            raise
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; with ``cancel_futures`` the runs not yet started are
        cancelled (recorded CANCELLED). With ``wait``, return once every run has ended and
        the loop thread is stopped; without, the loop stops in the background."""
        self._shutdown = True
        if cancel_futures:
            with self._lock:
                pending = list(self._futures)
            for future in pending:
                if not future._handle.started.is_set():
                    future.cancel()
        if wait:
            self._runs.close()
        else:
            threading.Thread(
                target=self._runs.close, name="lute-async-shutdown", daemon=True
            ).start()
