"""``lute-async demo``: see it work."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lute_async.cli.common import settings_of
from lute_async.cli.execute import configure_logging


@click.command(short_help="See it work: four tasks at once, every event, a table.")
@click.option(
    "--db",
    "demo_db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep the demo's records here [default: a temporary database, removed at the end].",
)
def demo(demo_db: Path | None) -> None:
    """Run four tasks at once and print each event as its hook fires.

    A Python @task reporting progress and a result, a shell command whose output becomes log
    lines (and which emits a custom event), a task that fails and one that times out; then a
    table of their records. Takes a few seconds.
    """
    from lute_async.demo import run_demo

    configure_logging(settings_of(click.get_current_context()))
    sys.exit(run_demo(demo_db))
