"""The ``lute-async`` command: run defined tasks, ad-hoc commands and ``@task`` functions with a
live display, report from inside tasks, and read the run history.

One module per command family (:mod:`.tasks`, :mod:`.records`, :mod:`.graph`, :mod:`.submit`,
:mod:`.demo`), the group in :mod:`.group`, where every command's records are in
:mod:`.database`; the names below are the package's public face. They load on first use
(PEP 562): the console script ``main`` must not import click before it knows the command is not
``emit`` (:mod:`.entry`).
"""

from __future__ import annotations

from lute_async.cli.entry import main

TYPE_CHECKING = False  # typing costs every emit milliseconds
if TYPE_CHECKING:
    from typing import Any

    from lute_async.app.supervise import Job, run_loop, supervise
    from lute_async.cli.common import (
        EXIT_CODES,
        EXIT_HELP,
        EXIT_USAGE,
        PARAM_HELP,
        Settings,
        exit_code,
        fail,
        parse_env,
        parse_params,
        parse_time,
    )
    from lute_async.cli.execute import configure_logging, execute_and_report, make_executor
    from lute_async.cli.group import cli

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Job", "run_loop", "supervise"), "lute_async.app.supervise"),
    **dict.fromkeys(
        (
            "EXIT_CODES",
            "EXIT_HELP",
            "EXIT_USAGE",
            "PARAM_HELP",
            "Settings",
            "exit_code",
            "fail",
            "parse_env",
            "parse_params",
            "parse_time",
        ),
        "lute_async.cli.common",
    ),
    **dict.fromkeys(
        ("configure_logging", "execute_and_report", "make_executor"), "lute_async.cli.execute"
    ),
    "cli": "lute_async.cli.group",
}

__all__ = [
    "EXIT_CODES",
    "EXIT_HELP",
    "EXIT_USAGE",
    "PARAM_HELP",
    "Job",
    "Settings",
    "cli",
    "configure_logging",
    "execute_and_report",
    "exit_code",
    "fail",
    "main",
    "make_executor",
    "parse_env",
    "parse_params",
    "parse_time",
    "run_loop",
    "supervise",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
