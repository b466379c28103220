"""``lute-async records``: list, show, reconcile and export the history of runs."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any

import click

from lute_async.cli.common import Moment, fail, lute_errors, settings_of
from lute_async.cli.database import db_option, records_db
from lute_async.messages import TaskStatus

if TYPE_CHECKING:
    from lute_async.records import AnalysisRecord, RecordStore, RunFilter


@click.group()
@db_option()
def records() -> None:
    """Query the history of runs (the records database)."""


def _open_store(ctx: click.Context) -> RecordStore:
    from lute_async.records import RecordStore

    path = records_db(settings_of(ctx))
    with lute_errors():
        return RecordStore.open(path)


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--name --status --since --until --tag``: which runs a records command reads."""
    for option in reversed(
        [
            click.option("--name", help="Only runs with this name."),
            click.option(
                "--status",
                "statuses",
                multiple=True,
                type=click.Choice(
                    [status.value for status in TaskStatus],
                    case_sensitive=False,
                ),
                help="Only runs with this status (repeatable: any of them).",
            ),
            click.option(
                "--since",
                type=Moment(),
                help="Submitted at or after: 2026-11-23, 2026-11-23T09:30, or 2h, 3d.",
            ),
            click.option(
                "--until", type=Moment(), help="Submitted before (same forms as --since)."
            ),
            click.option("--tag", "tags", multiple=True, help="Only runs with all these tags."),
        ]
    ):
        fn = option(fn)
    return fn


def _runs(
    name: str | None,
    statuses: tuple[str, ...],
    since: float | None,
    until: float | None,
    tags: tuple[str, ...],
) -> RunFilter:
    """The command line's record filters."""
    from lute_async.records import RunFilter

    return RunFilter(
        name=name,
        status=[s.upper() for s in statuses] or None,
        since=since,
        until=until,
        tags=list(tags) or None,
    )


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Refuse a ``--limit`` under 1 as bad usage (the help text stays a plain INTEGER)."""
    if value is not None and value < 1:
        raise click.BadParameter(f"must be 1 or more, got {value}")
    return value


def _newest(store: RecordStore, runs: RunFilter, limit: int) -> list[AnalysisRecord]:
    """The newest ``limit`` runs that ``runs`` matches, newest first."""
    return store.query(**dataclasses.asdict(runs), limit=limit)


@records.command(name="list")
@filter_options
@click.option(
    "--limit",
    type=int,
    default=20,
    show_default=True,
    callback=_positive,
    help="At most this many runs.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@db_option()
@click.pass_context
def records_list(
    ctx: click.Context,
    name: str | None,
    statuses: tuple[str, ...],
    since: float | None,
    until: float | None,
    tags: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first."""
    from lute_async.display import make_console, records_table

    with _open_store(ctx) as store:
        found = _newest(store, _runs(name, statuses, since, until, tags), limit)
    if as_json:
        for record in found:
            click.echo(json.dumps(record.to_dict()))
        return
    make_console().print(records_table(found))


@records.command(name="show")
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The record as one JSON object.")
@db_option()
@click.pass_context
def records_show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show every field of the run ID (a unique prefix of it is enough)."""
    from lute_async.display import make_console, record_details

    with _open_store(ctx) as store:
        record = _find(store, run_id)
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
        return
    make_console().print(record_details(record))


def _find(store: RecordStore, run_id: str) -> AnalysisRecord:
    from lute_async.errors import AmbiguousRunId, RecordNotFound

    try:
        return store.find(run_id)
    except AmbiguousRunId as exc:
        fail(str(exc))
    except RecordNotFound:
        fail(f"no run with id {run_id!r} in {store.path}; see `lute-async records list`")


@records.command(name="reconcile")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per LOST SLURM run.")
@db_option()
@click.pass_context
def records_reconcile(ctx: click.Context, as_json: bool) -> None:
    """Settle LOST SLURM runs from the scheduler: how each job ended, recorded as if its
    executor had lived (runs whose job is still going stay LOST; run this again later)."""
    import anyio

    from lute_async.display import make_console, records_table, safe
    from lute_async.launchers.slurm_reconcile import reconcile_lost_jobs

    with _open_store(ctx) as store, lute_errors():
        outcomes = anyio.run(reconcile_lost_jobs, store)
    if as_json:
        for outcome in outcomes:
            click.echo(
                json.dumps(
                    {
                        "id": outcome.record.id,
                        "slurm_job_id": outcome.record.slurm_job_id,
                        "slurm_state": outcome.slurm_state,
                        "settled": outcome.settled,
                        "status": outcome.record.status,
                    }
                )
            )
        return
    console = make_console()
    settled = [outcome.record for outcome in outcomes if outcome.settled]
    if settled:
        console.print(records_table(settled))
    for outcome in outcomes:
        if not outcome.settled:
            state = outcome.slurm_state or "unknown to the scheduler"
            console.print(
                safe(
                    f"{outcome.record.id[:8]} {outcome.record.name}: SLURM job "
                    f"{outcome.record.slurm_job_id} is {state}; still LOST"
                )
            )
    if not outcomes:
        console.print("no LOST SLURM runs")


CSV_COLUMNS = (
    "id",
    "name",
    "status",
    "submitted_at",
    "started_at",
    "ended_at",
    "duration",
    "exit_code",
    "signal",
    "host",
    "pid",
    "slurm_job_id",
    "tags",
    "params",
    "result",
    "error",
)


def _csv_row(record: AnalysisRecord) -> list[Any]:
    document = record.to_dict()
    row: list[Any] = []
    for column in CSV_COLUMNS:
        if column == "duration":
            value: Any = record.duration
        elif column == "tags":
            value = " ".join(record.tags)
        else:
            value = document.get(column)
        if isinstance(value, dict | list):
            value = json.dumps(value, separators=(",", ":"))
        row.append("" if value is None else value)
    return row


@records.command(name="export")
@filter_options
@click.option(
    "--limit", type=int, callback=_positive, help="At most this many runs [default: all]."
)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="jsonl: one full record per line; csv: one row per run, nested fields as JSON.",
)
@click.option(
    "-o",
    "--output",
    type=click.File("w", lazy=False),  # a path that cannot be written fails here, records or not
    default="-",
    help="Write here [default: stdout].",
)
@db_option()
@click.pass_context
def records_export(
    ctx: click.Context,
    name: str | None,
    statuses: tuple[str, ...],
    since: float | None,
    until: float | None,
    tags: tuple[str, ...],
    limit: int | None,
    fmt: str,
    output: IO[str],
) -> None:
    """Export runs, oldest first, as JSON lines or CSV (streamed: any number of runs)."""
    with _open_store(ctx) as store:
        runs = _runs(name, statuses, since, until, tags)
        found: Iterable[AnalysisRecord]
        if limit is not None:  # the newest `limit` runs, then oldest first
            found = reversed(_newest(store, runs, limit))
        else:
            found = store.iterate(runs, newest_first=False)
        if fmt == "jsonl":
            for record in found:
                output.write(json.dumps(record.to_dict()) + "\n")
            return
        writer = csv.writer(output)
        writer.writerow(CSV_COLUMNS)
        for record in found:
            writer.writerow(_csv_row(record))
