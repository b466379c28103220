"""``lute-async attach``: take up a SLURM run whose executor died while its job went on."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from lute_async.app.supervise import cancel_on_signal, run_loop
from lute_async.cli.common import (
    EXIT_HELP,
    EXIT_INTERRUPTED,
    fail,
    json_option,
    lute_errors,
    overall_exit_code,
    settings_of,
)
from lute_async.cli.database import db_option, records_db
from lute_async.cli.execute import make_executor

if TYPE_CHECKING:
    from lute_async.hooks.events import Event
    from lute_async.records import AnalysisRecord


@click.command(epilog=EXIT_HELP, short_help="Follow a SLURM run whose executor died.")
@click.argument("run_id", metavar="ID")
@json_option
@db_option()
@click.pass_context
def attach(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Take up the run ID (a unique prefix is enough) whose executor died while its SLURM job
    went on: replay what the job spooled meanwhile, follow it to its end, settle the record.

    Shows its events as `run` does, then the record.
    """
    from lute_async.display import LiveDisplay, records_table

    settings = settings_of(ctx)
    executor = make_executor(settings, db=records_db(settings))
    stream = sys.stderr if as_json else sys.stdout
    display = LiveDisplay(stream)
    executor.on("*", display)
    followed: list[AnalysisRecord] = []

    def keep(event: Event) -> None:  # the record, also when Ctrl-C cancels the attach
        if not followed:
            followed.append(event.run.record)

    executor.on("*", keep)

    async def follow() -> None:
        import anyio

        async with executor, anyio.create_task_group() as tg:
            tg.start_soon(cancel_on_signal, tg.cancel_scope, "the attached run")
            await executor.attach(run_id)
            tg.cancel_scope.cancel()

    with lute_errors(), display:
        run_loop(follow)
    if not followed:
        fail("interrupted before the run was taken up", EXIT_INTERRUPTED)
    (record,) = followed
    if as_json:
        sys.stdout.write(json.dumps(record.to_dict()) + "\n")
        sys.stdout.flush()
    else:
        display.console.print(records_table([record]))
    sys.exit(overall_exit_code([record]))
