"""The ``lute-async`` command: run defined tasks, ad-hoc commands and ``@task`` functions with a
live display, report from inside tasks, and read the run history."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from lute_async.app.supervise import Job, cancel_on_signal, run_loop, supervise
from lute_async.errors import LuteAsyncError
from lute_async.messages import TaskStatus

if TYPE_CHECKING:
    from lute_async.executor import Executor
    from lute_async.records import AnalysisRecord, RecordStore, RunFilter

#: The process exit code for each final status of a run.
EXIT_CODES: dict[str, int] = {
    "COMPLETED": 0,
    "FAILED": 1,
    "TIMEDOUT": 3,
    "CANCELLED": 4,
    "LOST": 5,
}
#: Bad usage, a bad config file, or `emit` outside an executor.
EXIT_USAGE = 2

EXIT_HELP = """\b
Exit codes of run, exec and call:
  0  the run COMPLETED
  1  the run FAILED (non-zero exit, killed by a signal, could not start)
  2  bad usage or an invalid task definition
  3  the run TIMEDOUT
  4  the run was CANCELLED (Ctrl-C: once cancels cleanly, twice kills)
"""

PARAM_HELP = "Set a param (repeatable); VALUE is read as JSON when it parses, else as a string."


@dataclass(slots=True)
class Settings:
    """Options of the ``lute-async`` group shared by every sub-command."""

    db: Path | None = None
    log_events: bool = False
    log_format: str = "console"
    log_level: str = "warning"
    grace: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    click.echo(f"lute-async: error: {message}", err=True)
    sys.exit(code)


def exit_code(record: AnalysisRecord) -> int:
    """The process exit code for the run's final status."""
    return EXIT_CODES.get(record.status, 1)


def _split_pairs(pairs: Sequence[str], form: str, option: str) -> list[tuple[str, str]]:
    split = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected {form}, got {pair!r}", param_hint=option)
        split.append((key, value))
    return split


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs to a dict; values that parse as JSON are taken as such (``3`` -> 3)."""
    return {k: _json_or_text(v) for k, v in _split_pairs(pairs, "KEY=VALUE", "--param")}


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs to an environment mapping."""
    return dict(_split_pairs(pairs, "NAME=VALUE", "--env"))


def parse_time(text: str) -> float:
    """Epoch seconds from ``2026-11-23``, ``2026-11-23T09:30``, an epoch number, or an age
    like ``90s``, ``15m``, ``2h``, ``3d`` (that long ago)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    stripped = text.strip()
    if stripped and stripped[-1] in units and stripped[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(stripped[:-1]) * units[stripped[-1]]
    try:
        return float(stripped)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(stripped).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time; use 2026-11-23, 2026-11-23T09:30, epoch seconds, "
            "or an age like 15m, 2h, 3d"
        ) from None


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    return settings if settings is not None else Settings()


# --- running under an executor ------------------------------------------------------------------


def configure_logging(settings: Settings) -> None:
    """Send lute-async's own logs to stderr as the global options say."""
    from lute_async import logs

    level = settings.log_level.upper()
    if settings.log_format == "json":
        logs.configure(renderer="json", level=level)
    else:
        logs.configure(renderer="console", level=level)


def make_executor(settings: Settings, *, db: Path | None = None, **options: Any) -> Executor:
    from lute_async.executor import Executor

    configure_logging(settings)

    return Executor(
        db=settings.db or db,
        log_events=settings.log_events,
        grace=options.pop("grace", None) or settings.grace,
        **options,
    )


def execute_and_report(
    settings: Settings,
    jobs: Sequence[Job],
    *,
    as_json: bool,
    quiet: bool = False,
    db: Path | None = None,
    executor_options: dict[str, Any] | None = None,
) -> NoReturn:
    """Run ``jobs`` with the live display, print the record(s) or their JSON, and exit with the
    status's code."""
    from lute_async.display import LiveDisplay, records_table

    executor = make_executor(settings, db=db, **(executor_options or {}))
    stream = sys.stderr if as_json else sys.stdout
    display = LiveDisplay(stream)
    if not quiet:
        executor.on("*", display)
    try:
        with display:
            records = run_loop(lambda: supervise(executor, jobs))
    except LuteAsyncError as exc:
        fail(str(exc))
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(record.to_dict()) + "\n")
        sys.stdout.flush()
    elif not quiet:
        display.console.print(records_table(records))
    codes = [exit_code(record) for record in records]
    sys.exit(next((code for code in codes if code), 0))


# --- the command group --------------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Start with `lute-async demo`. Run `lute-async COMMAND --help` for each command.",
)
@click.version_option(package_name="lute-async")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LUTE_ASYNC_DB",
    help="Records database [env LUTE_ASYNC_DB; default: the config's [executor] db, "
    "else the user data dir].",
)
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
@click.pass_context
def cli(
    ctx: click.Context, db: Path | None, log_format: str, log_level: str, log_events: bool
) -> None:
    """lute-async: run analysis tasks as subprocesses, MPI programs or SLURM jobs, watch their
    events live, and keep a queryable history of every run."""
    # Logging is configured when an executor is made: `emit` and `records` stay light.
    ctx.obj = Settings(db=db, log_events=log_events, log_format=log_format, log_level=log_level)


def _config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="LUTE_ASYNC_CONFIG",
        help="Task definitions (TOML) [env LUTE_ASYNC_CONFIG; default ./lute-async.toml].",
    )(fn)


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print only the final record as one JSON object on stdout; the display goes to "
        "stderr.",
    )(fn)


@contextmanager
def _config_errors() -> Iterator[None]:
    from lute_async.errors import ConfigError

    try:
        yield
    except ConfigError as exc:
        fail(str(exc))


@cli.command(epilog=EXIT_HELP, short_help="Run a task defined in TOML (or installed).")
@click.argument("name")
@_config_option
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help=PARAM_HELP)
@click.option("--tag", "tags", multiple=True, help="Tag the run's record (repeatable).")
@_json_option
@click.pass_context
def run(
    ctx: click.Context,
    name: str,
    config_path: Path | None,
    params: tuple[str, ...],
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run the task NAME defined in the config file (or by an installed package).

    Shows a progress bar per running task, its log lines and status changes, then the record.
    """
    from lute_async.config import load_config

    settings = _settings(ctx)
    with _config_errors():
        config = load_config(config_path)
        db = settings.db or config.executor.db
        resolved = _resolve(config, name, parse_params(params), db)
    options = resolved.run_options()
    options["tags"] = [*options["tags"], *tags]
    executor_options: dict[str, Any] = {}
    if config.executor.max_concurrency:
        executor_options["max_concurrency"] = config.executor.max_concurrency
    if config.executor.grace:
        executor_options["grace"] = config.executor.grace
    execute_and_report(
        settings,
        [Job(resolved.argv, options)],
        as_json=as_json,
        db=db,
        executor_options=executor_options,
    )


def _resolve(config: Any, name: str, params: dict[str, Any], db: Path | None) -> Any:
    """Resolve task ``name``, opening the records database only if a template needs it."""
    from lute_async.records import RecordStore

    opened: list[RecordStore] = []

    def store() -> RecordStore:
        if not opened:
            opened.append(RecordStore.open(db, mark_lost=False))
        return opened[0]

    try:
        return config.resolve(name, params, store=store)
    finally:
        for one in opened:
            one.close()


@cli.command(name="exec", epilog=EXIT_HELP, short_help="Run an ad-hoc command under the executor.")
@click.argument("command", nargs=-1, required=True)
@click.option("-n", "--name", help="Name of the run [default: the program's name].")
@click.option("-t", "--timeout", type=float, help="Seconds before the run is ended TIMEDOUT.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help=PARAM_HELP)
@click.option("-e", "--env", "env", multiple=True, metavar="NAME=VALUE", help="Set a variable.")
@click.option("--cwd", type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--tag", "tags", multiple=True, help="Tag the run's record (repeatable).")
@_json_option
@click.pass_context
def exec_(
    ctx: click.Context,
    command: tuple[str, ...],
    name: str | None,
    timeout: float | None,
    params: tuple[str, ...],
    env: tuple[str, ...],
    cwd: Path | None,
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run an ad-hoc COMMAND under the executor: `lute-async exec -- ./analyse --fast`.

    Its stdout and stderr lines become log events; it may report with `lute-async emit`.
    """
    options: dict[str, Any] = {
        "name": name,
        "timeout": timeout,
        "params": parse_params(params),
        "env": parse_env(env),
        "cwd": cwd,
        "tags": list(tags),
    }
    execute_and_report(_settings(ctx), [Job(list(command), options)], as_json=as_json)


@cli.command(epilog=EXIT_HELP, short_help="Run a @task function: params JSON in, record out.")
@click.argument("target", metavar="PKG.MOD:FUNC")
@click.option(
    "--params",
    "params_file",
    type=click.File("r"),
    help="JSON object of params; '-' or no option with piped stdin reads stdin.",
)
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help=PARAM_HELP)
@click.option("-n", "--name", help="Name of the run [default: the function's name].")
@click.option("-t", "--timeout", type=float, help="Seconds before the run is ended TIMEDOUT.")
@click.option("-q", "--quiet", is_flag=True, help="No live display on stderr.")
@click.pass_context
def call(
    ctx: click.Context,
    target: str,
    params_file: IO[str] | None,
    params: tuple[str, ...],
    name: str | None,
    timeout: float | None,
    quiet: bool,
) -> None:
    """Run the @task function PKG.MOD:FUNC in a worker: params JSON in, record JSON out.

    `echo '{"n": 3}' | lute-async call mypkg.tasks:find_peaks > record.json`. The record is
    printed on stdout as one JSON object; the live display goes to stderr.
    """
    from lute_async.executor import Executor

    if params_file is None and not sys.stdin.isatty():
        params_file = sys.stdin
    values: dict[str, Any] = {}
    if params_file is not None:
        text = params_file.read()
        if text.strip():
            try:
                values = json.loads(text)
            except ValueError as exc:
                fail(f"params are not valid JSON: {exc}")
            if not isinstance(values, dict):
                fail(f"params must be a JSON object, got {type(values).__name__}")
    values.update(parse_params(params))
    options = {
        "name": name or target.rpartition(":")[2],
        "params": values,
        "timeout": timeout,
    }
    job = Job(Executor.function_command(target), options)
    execute_and_report(_settings(ctx), [job], as_json=True, quiet=quiet)


# The architecture's name for it; `call` is the short one.
cli.add_command(call, name="run-task")


@cli.command(short_help="Send an event from inside a task to its executor.")
@click.argument("event")
@click.argument("data", required=False)
def emit(event: str, data: str | None) -> None:
    """Send EVENT with optional DATA (JSON) to the executor running this task.

    For shell scripts and compiled programs started by lute-async:

    \b
      lute-async emit progress 0.5            # or '{"fraction": 0.5, "message": "half"}'
      lute-async emit log "calibrated"
      lute-async emit peaks '{"n": 42}'       # fires hooks on "peaks"
      lute-async emit result '{"peaks": 42}'

    Outside an executor it fails with exit code 2.
    """
    from lute_async.errors import NotInExecutorError
    from lute_async.task import Reporter

    value: Any = None
    if data is not None:
        try:
            value = json.loads(data)
        except ValueError:
            value = data  # a bare word or sentence is sent as a string
    try:
        reporter = Reporter.connect(prefer=("socket", "tcp", "pipe"), required=True)
    except NotInExecutorError as exc:
        fail(f"cannot emit {event!r}: {exc}")
    except OSError as exc:
        fail(f"cannot emit {event!r}: the executor's channel is unreachable: {exc}")
    with reporter:
        if event == "progress" and isinstance(value, int | float) and not isinstance(value, bool):
            reporter.progress(float(value))
        elif event == "progress" and isinstance(value, dict):
            reporter.progress(float(value.get("fraction", 0.0)), str(value.get("message", "")))
        elif event == "log" and isinstance(value, str):
            reporter.log(value)
        elif event == "result":
            reporter.result(value)
        else:
            reporter.emit(event, value, flush=True)


# --- records ------------------------------------------------------------------------------------


@cli.group()
def records() -> None:
    """Query the history of runs (the records database)."""


def _open_store(ctx: click.Context) -> RecordStore:
    from lute_async.records import RecordStore

    try:
        return RecordStore.open(_settings(ctx).db)
    except LuteAsyncError as exc:
        fail(str(exc))


def _filters(fn: Callable[..., Any]) -> Callable[..., Any]:
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
                "--since", help="Submitted at or after: 2026-11-23, 2026-11-23T09:30, or 2h, 3d."
            ),
            click.option("--until", help="Submitted before (same forms as --since)."),
            click.option("--tag", "tags", multiple=True, help="Only runs with all these tags."),
        ]
    ):
        fn = option(fn)
    return fn


def _runs(
    name: str | None,
    statuses: tuple[str, ...],
    since: str | None,
    until: str | None,
    tags: tuple[str, ...],
) -> RunFilter:
    """The command line's record filters."""
    from lute_async.records import RunFilter

    return RunFilter(
        name=name,
        status=[s.upper() for s in statuses] or None,
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        tags=list(tags) or None,
    )


def _newest(store: RecordStore, runs: RunFilter, limit: int) -> list[AnalysisRecord]:
    """The newest ``limit`` runs that ``runs`` matches, newest first."""
    return store.query(**dataclasses.asdict(runs), limit=limit)


@records.command(name="list")
@_filters
@click.option("--limit", type=int, default=20, show_default=True, help="At most this many runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@click.pass_context
def records_list(
    ctx: click.Context,
    name: str | None,
    statuses: tuple[str, ...],
    since: str | None,
    until: str | None,
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
    from lute_async.errors import RecordNotFound

    try:
        return store.get(run_id)
    except RecordNotFound:
        pass
    matches = store.find_ids(run_id) if len(run_id) >= 4 else []
    if len(matches) == 1:
        return store.get(matches[0])
    if matches:
        fail(f"{run_id!r} matches {len(matches)} runs; give more of the id")
    fail(f"no run with id {run_id!r} in {store.path}; see `lute-async records list`")


@records.command(name="reconcile")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per LOST SLURM run.")
@click.pass_context
def records_reconcile(ctx: click.Context, as_json: bool) -> None:
    """Settle LOST SLURM runs from the scheduler: how each job ended, recorded as if its
    executor had lived (runs whose job is still going stay LOST; run this again later)."""
    import anyio

    from lute_async.display import make_console, records_table
    from lute_async.launchers.slurm_reconcile import reconcile_lost_jobs

    with _open_store(ctx) as store:
        try:
            outcomes = anyio.run(reconcile_lost_jobs, store)
        except LuteAsyncError as exc:
            fail(str(exc))
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
                f"{outcome.record.id[:8]} {outcome.record.name}: SLURM job "
                f"{outcome.record.slurm_job_id} is {state}; still LOST"
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
@_filters
@click.option("--limit", type=int, help="At most this many runs [default: all].")
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
    "-o", "--output", type=click.File("w"), default="-", help="Write here [default: stdout]."
)
@click.pass_context
def records_export(
    ctx: click.Context,
    name: str | None,
    statuses: tuple[str, ...],
    since: str | None,
    until: str | None,
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


# --- demo and submit ----------------------------------------------------------------------------


@cli.command(short_help="See it work: four tasks at once, every event, a table.")
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

    configure_logging(_settings(click.get_current_context()))
    sys.exit(run_demo(demo_db))


@cli.command(
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
@_json_option
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

    from lute_async.display import LiveDisplay, records_table
    from lute_async.workflow import run_graph_from_config

    executor = make_executor(_settings(ctx))
    stream = sys.stderr if as_json else sys.stdout
    display = LiveDisplay(stream)
    executor.on("*", display)
    results: dict[str, AnalysisRecord] = {}

    def show_state(task: str, status: str) -> None:
        display.console.print(f"[bold]graph[/bold] {task}: {status}")

    async def main() -> None:
        async with executor, anyio.create_task_group() as tg:
            tg.start_soon(cancel_on_signal, tg.cancel_scope, "the graph")
            results.update(
                await run_graph_from_config(
                    graph_path, executor, max_concurrency=max_concurrency, on_state=show_state
                )
            )
            tg.cancel_scope.cancel()

    try:
        with display:
            run_loop(main)
    except LuteAsyncError as exc:
        fail(str(exc))
    records = list(results.values())
    if as_json:
        sys.stdout.write(json.dumps({n: r.to_dict() for n, r in results.items()}) + "\n")
    else:
        display.console.print(records_table(records))
    codes = [exit_code(record) for record in records]
    sys.exit(next((code for code in codes if code), 0 if records else EXIT_CODES["CANCELLED"]))


@cli.command(short_help="Submit a SLURM job that runs a defined task.")
@click.argument("name")
@_config_option
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help=PARAM_HELP)
@click.option(
    "--sbatch-arg",
    "sbatch_args",
    multiple=True,
    metavar="ARG",
    help="Extra sbatch argument for the executor's own job, e.g. --sbatch-arg=--time=1:00:00.",
)
@click.pass_context
def submit(
    ctx: click.Context,
    name: str,
    config_path: Path | None,
    params: tuple[str, ...],
    sbatch_args: tuple[str, ...],
) -> None:
    """Submit a SLURM job that runs `lute-async run NAME` on the cluster; print its job id.

    The job's executor records into the same database (it must be on a shared filesystem).
    """
    from lute_async.config import load_config

    with _config_errors():
        config = load_config(config_path)
        config.task(name)  # fail here, not in the job, when the task is unknown
    if config.path is None:
        fail("submit needs a config file (--config or ./lute-async.toml) the job can read")
    try:
        from lute_async.launchers.slurm import (  # type: ignore[import-not-found,unused-ignore]
            submit_executor,
        )
    except ImportError as exc:
        fail(f"SLURM support is not available: {exc}")
    parse_params(params)  # the same KEY=VALUE checks as run, before anything is submitted
    text_params = dict(pair.split("=", 1) for pair in params)
    db = _settings(ctx).db or config.executor.db
    try:
        job_id = submit_executor(name, config.path.resolve(), list(sbatch_args), text_params, db)
    except LuteAsyncError as exc:
        fail(str(exc))
    click.echo(job_id)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``lute-async`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="lute-async")


if __name__ == "__main__":
    main()
