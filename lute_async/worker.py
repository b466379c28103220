"""``python -m lute_async.worker pkg.mod:func``: run one ``@task`` function in this process.

The params come from the executor (``LUTE_ASYNC_PARAMS``); the function is called with them as
keyword arguments, plus ``report`` when it declares that parameter. Its return value is sent as
the result; an exception is sent as the error (with traceback) and the worker exits 1.
"""

from __future__ import annotations

import sys

from lute_async.targets import TargetError, import_target
from lute_async.task.function import is_task, read_params
from lute_async.task.reporter import Reporter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
#: What ``python -c`` runs to start a worker: ``-m`` would load runpy first (~5 ms a start).
#: It first drops the ``''`` that ``-c`` puts at the head of ``sys.path`` (unless the
#: interpreter already runs with ``-P``/``PYTHONSAFEPATH``): safe-path semantics, so a
#: ``json.py`` in the run's directory is never imported in place of the real one; only
#: ``sys``, a built-in, is imported before that.
ENTRY = (
    "import sys; sys.flags.safe_path or sys.path.pop(0); "
    "from lute_async.worker import main; sys.exit(main())"
)


def command(target: str, python: str | None = None) -> list[str]:
    """The command line that runs the ``@task`` function ``target`` in a worker process."""
    return [python or sys.executable, "-c", ENTRY, target]


class TaskLoadError(Exception):
    """The target named on the command line cannot be imported or is not a task."""


def load_task(target: str) -> Callable[..., Any]:
    """Import ``pkg.mod:func`` (or ``pkg.mod:Class.method``) and check it is a ``@task``.

    The module must be importable normally (installed, or on ``PYTHONPATH``): the working
    directory is not on the worker's path."""
    try:  # a module that raises anything but ImportError shows its own traceback
        obj = import_target(target, failures=(ImportError,))
    except ValueError:
        raise TaskLoadError(
            f"task target {target!r} is not of the form 'package.module:function'"
        ) from None
    except TargetError as exc:
        raise TaskLoadError(f"{exc} (task {target!r})") from exc
    if not is_task(obj):
        raise TaskLoadError(
            f"{target!r} is not marked as a task: decorate it with @lute_async.task.task"
        )
    return obj  # type: ignore[no-any-return]


def _wants_report(fn: Callable[..., Any]) -> bool:
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    return "report" in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]


def run_task(target: str) -> int:
    """Run ``target`` under a connected reporter and return the process exit code."""
    report = Reporter.connect()
    try:
        fn = load_task(target)
        params = read_params()
    except (TaskLoadError, ValueError, OSError) as exc:
        report.error(exc)
        report.close()
        print(f"lute-async worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report.started(params)
    try:
        if getattr(fn, "__code__", None) is not None and fn.__code__.co_flags & 0x80:
            value = _run_async(fn, params, report)  # CO_COROUTINE: an `async def` task
        else:
            value = fn(**params, report=report) if _wants_report(fn) else fn(**params)
        report.result(value)
    except BaseException as exc:  # the task's failure is data to report, whatever it is
        report.error(exc)
        report.close()
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, SystemExit):
            return exc.code if isinstance(exc.code, int) else EXIT_TASK_FAILED
        return EXIT_TASK_FAILED
    report.close()
    return 0


def _run_async(fn: Callable[..., Any], params: dict[str, Any], report: Reporter) -> Any:
    import asyncio

    kwargs = dict(params)
    if _wants_report(fn):
        from lute_async.task.async_reporter import AsyncReporter

        kwargs["report"] = AsyncReporter(report)
    try:
        import uvloop

        return uvloop.run(fn(**kwargs))
    except ImportError:
        return asyncio.run(fn(**kwargs))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lute_async.worker package.module:function", file=sys.stderr)
        return EXIT_USAGE
    return run_task(args[0])


if __name__ == "__main__":
    sys.exit(main())
