"""The ``lute-async`` command: run defined tasks, ad-hoc commands and ``@task`` functions with a
live display, report from inside tasks, and read the run history.

One module per command family (:mod:`.tasks`, :mod:`.records`, :mod:`.graph`, :mod:`.submit`,
:mod:`.demo`), the group in :mod:`.group`, where every command's records are in
:mod:`.database`; the names below are the package's public face.
"""

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
from lute_async.cli.group import cli, main

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
