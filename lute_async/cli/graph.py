"""``lute-async run-graph``: a graph of dependent tasks from a TOML file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lute_async.app.supervise import cancel_on_signal, run_loop
from lute_async.cli.common import (
    EXIT_CODES,
    EXIT_HELP,
    json_option,
    lute_errors,
    overall_exit_code,
    settings_of,
)
from lute_async.cli.database import db_option, records_db
from lute_async.cli.execute import make_executor

if TYPE_CHECKING:
    from lute_async.records import AnalysisRecord


@click.command(
    name="run-graph", epilog=EXIT_HELP, short_help="Run a graph of dependent tasks (TOML)."
)
@click.option(
    "-c",
    "--config",
    "graph_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Graph file: one [graph.NAME] table per task, with `after = [...]`.",
)
@click.option("--max-concurrency", type=click.IntRange(min=1), help="Tasks running at once.")
@json_option
@db_option()
@click.pass_context
def run_graph(
    ctx: click.Context, graph_path: Path, max_concurrency: int | None, as_json: bool
) -> None:
    """Run every task of a graph file, each once its `after` tasks have completed.

    Independent branches run concurrently; a failed dependency leaves its dependants CANCELLED
    (unless `after_any = true`); a cycle is refused before anything starts. Shows each task's
    state as it changes. Ctrl-C cancels the whole graph.
    """
    import anyio

    from lute_async.display import LiveDisplay, records_table, safe
    from lute_async.workflow import run_graph_from_config

    settings = settings_of(ctx)
    executor = make_executor(settings, db=records_db(settings, config_path=graph_path))
    stream = sys.stderr if as_json else sys.stdout
    display = LiveDisplay(stream)
    executor.on("*", display)
    results: dict[str, AnalysisRecord] = {}

    def show_state(task: str, status: str) -> None:
        display.console.print(f"[bold]graph[/bold] {safe(task)}: {safe(status)}")

    async def main() -> None:
        async with executor, anyio.create_task_group() as tg:
            tg.start_soon(cancel_on_signal, tg.cancel_scope, "the graph")
            results.update(
                await run_graph_from_config(
                    graph_path, executor, max_concurrency=max_concurrency, on_state=show_state
                )
            )
            tg.cancel_scope.cancel()

    with lute_errors(), display:
        run_loop(main)
    records = list(results.values())
    if as_json:
        sys.stdout.write(json.dumps({n: r.to_dict() for n, r in results.items()}) + "\n")
    else:
        display.console.print(records_table(records))
    sys.exit(overall_exit_code(records, if_none=EXIT_CODES["CANCELLED"]))
