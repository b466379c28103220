"""``lute-async demo``: see it work."""

from __future__ import annotations

import sys

import click

from lute_async.cli.common import lute_errors, settings_of
from lute_async.cli.database import db_option
from lute_async.cli.execute import configure_logging


@click.command(short_help="See it work: four tasks at once, every event, a table.")
@db_option(
    "Keep the demo's records here (before or after `demo`) [default: a temporary database, "
    "removed at the end]."
)
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run four tasks at once and print each event as its hook fires.

    A Python @task reporting progress and a result, a shell command whose output becomes log
    lines (and which emits a custom event), a task that fails and one that times out; then a
    table of their records. Takes a few seconds.
    """
    from lute_async.demo import run_demo

    settings = settings_of(ctx)
    configure_logging(settings)
    with lute_errors():
        code = run_demo(settings.db)
    sys.exit(code)
