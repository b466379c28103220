"""The ``lute-async`` command group, its global options, and the console script ``main``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from lute_async.app.text import visible
from lute_async.cli.attach import attach
from lute_async.cli.common import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, Settings, fail
from lute_async.cli.database import db_option
from lute_async.cli.demo import demo
from lute_async.cli.graph import run_graph
from lute_async.cli.records import records
from lute_async.cli.serve import serve
from lute_async.cli.submit import submit
from lute_async.cli.tasks import call, emit, exec_, run

#: Set by the group's --debug for main(), which sees an unexpected error after click's
#: context is gone (one CLI invocation per process).
_debug: list[bool] = []


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Start with `lute-async demo`. Run `lute-async COMMAND --help` for each command.",
)
@click.version_option(package_name="lute-async")
@db_option()
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="How lute-async's own logs (on stderr) are rendered.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    help="Level of lute-async's own logs on stderr.",
)
@click.option(
    "--log-events", is_flag=True, help="Also log every event as a structured line on stderr."
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="LUTE_ASYNC_DEBUG",
    help="Show the traceback of an unexpected error [env LUTE_ASYNC_DEBUG].",
)
@click.pass_context
def cli(
    ctx: click.Context,
    log_format: str,
    log_level: str,
    log_events: bool,
    debug: bool,
) -> None:
    """lute-async: run analysis tasks as subprocesses, MPI programs or SLURM jobs, watch their
    events live, and keep a queryable history of every run."""
    # Logging is configured when an executor is made: `emit` and `records` stay light.
    settings = ctx.ensure_object(Settings)  # --db is in it already
    settings.log_events, settings.log_format, settings.log_level = log_events, log_format, log_level
    if debug:
        _debug.append(True)


cli.add_command(run)
cli.add_command(exec_)
cli.add_command(call)
cli.add_command(call, name="run-task")  # the architecture's name for it; `call` is the short one
cli.add_command(emit)
cli.add_command(records)
cli.add_command(demo)
cli.add_command(run_graph)
cli.add_command(submit)
cli.add_command(serve)
cli.add_command(attach)


def _usage_error(exc: click.ClickException) -> NoReturn:
    """Bad usage or input as one line naming the problem, and exit code 2."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):  # a bare group: its help
        exc.show()
        sys.exit(EXIT_USAGE)
    message = " ".join(exc.format_message().splitlines())
    context = exc.ctx if isinstance(exc, click.UsageError) else None
    hint = f" (see `{context.command_path} --help`)" if context is not None else ""
    fail(f"{message}{hint}", EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``lute-async`` console script: bad usage or input is one line on stderr and exit
    code 2; an unexpected error is one line and exit code 70, its traceback only with
    ``--debug``."""
    _debug.clear()
    args = list(argv) if argv is not None else None
    try:
        code = cli.main(args=args, prog_name="lute-async", standalone_mode=False)
    except click.ClickException as exc:
        _usage_error(exc)
    except click.Abort:
        click.echo("lute-async: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if _debug:
            raise
        click.echo(
            f"lute-async: internal error: {type(exc).__name__}: {visible(str(exc))} "
            "(run with --debug for the traceback)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
