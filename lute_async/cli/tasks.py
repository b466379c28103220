"""The commands that run one thing: ``run`` (a defined task), ``exec`` (an ad-hoc command),
``call``/``run-task`` (a ``@task`` function) and ``emit`` (from inside a task)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import click

from lute_async.app.supervise import Job
from lute_async.cli.common import (
    EXIT_HELP,
    config_errors,
    config_option,
    fail,
    json_option,
    param_option,
    parse_env,
    parse_params,
    settings_of,
    tag_option,
    timeout_option,
)
from lute_async.cli.database import db_option, records_db
from lute_async.cli.execute import execute_and_report
from lute_async.cli.serve import dashboard_option, make_dashboard


@click.command(epilog=EXIT_HELP, short_help="Run a task defined in TOML (or installed).")
@click.argument("name")
@config_option
@param_option
@tag_option
@json_option
@dashboard_option
@click.option(
    "--allow-control", is_flag=True, help="Let the dashboard's pages cancel the run (a button)."
)
@db_option()
@click.pass_context
def run(
    ctx: click.Context,
    name: str,
    config_path: Path | None,
    params: tuple[str, ...],
    tags: tuple[str, ...],
    as_json: bool,
    dashboard: str | None,
    allow_control: bool,
) -> None:
    """Run the task NAME defined in the config file (or by an installed package).

    Shows a progress bar per running task, its log lines and status changes, then the record.
    """
    from lute_async.config import load_config

    settings = settings_of(ctx)
    with config_errors():
        config = load_config(config_path)
        db = records_db(settings, config=config)
        resolved = _resolve(config, name, parse_params(params), db)
    options = resolved.run_options()
    options["tags"] = [*options["tags"], *tags]
    executor_options: dict[str, Any] = {}
    if config.executor.max_concurrency:
        executor_options["max_concurrency"] = config.executor.max_concurrency
    if config.executor.grace:
        executor_options["grace"] = config.executor.grace
    if dashboard is not None:
        executor_options["dashboard"] = make_dashboard(dashboard, allow_control=allow_control)
    execute_and_report(
        settings,
        [Job(resolved.argv, options)],
        as_json=as_json,
        db=db,
        executor_options=executor_options,
    )


def _resolve(config: Any, name: str, params: dict[str, Any], db: Path | str | None) -> Any:
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


@click.command(
    name="exec", epilog=EXIT_HELP, short_help="Run an ad-hoc command under the executor."
)
@click.argument("command", nargs=-1, required=True)
@click.option("-n", "--name", help="Name of the run [default: the program's name].")
@timeout_option
@param_option
@click.option("-e", "--env", "env", multiple=True, metavar="NAME=VALUE", help="Set a variable.")
@click.option(
    "--cwd", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Run directory."
)
@tag_option
@json_option
@db_option()
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
    settings = settings_of(ctx)
    job = Job(list(command), options)
    execute_and_report(settings, [job], as_json=as_json, db=records_db(settings))


def _function_target(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a target that is not ``pkg.mod:func`` before a worker is started for it."""
    module, sep, function = value.partition(":")
    if not (sep and module.strip() and function.strip()):
        raise click.BadParameter(f"{value!r} is not of the form PKG.MOD:FUNC")
    return value


@click.command(epilog=EXIT_HELP, short_help="Run a @task function: params JSON in, record out.")
@click.argument("target", metavar="PKG.MOD:FUNC", callback=_function_target)
@click.option(
    "--params",
    "params_file",
    type=click.File("r"),
    help="JSON object of params; '-' or no option with piped stdin reads stdin.",
)
@param_option
@click.option("-n", "--name", help="Name of the run [default: the function's name].")
@timeout_option
@click.option("-q", "--quiet", is_flag=True, help="No live display on stderr.")
@db_option()
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
        source = str(getattr(params_file, "name", "-"))
        where = "stdin" if source in ("-", "<stdin>") else repr(source)
        try:
            text = params_file.read()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read params from {where}: {exc}")
        if text.strip():
            try:
                values = json.loads(text)
            except ValueError as exc:
                fail(f"params from {where} are not valid JSON: {exc}")
            if not isinstance(values, dict):
                fail(f"params from {where} must be a JSON object, got {type(values).__name__}")
    values.update(parse_params(params))
    options = {
        "name": name or target.rpartition(":")[2],
        "params": values,
        "timeout": timeout,
    }
    settings = settings_of(ctx)
    job = Job(Executor.function_command(target), options)
    execute_and_report(settings, [job], as_json=True, quiet=quiet, db=records_db(settings))


@click.command(short_help="Send an event from inside a task to its executor.")
@click.argument("event", required=False, metavar="EVENT")
@click.argument("data", required=False)
@click.option(
    "--batch",
    is_flag=True,
    help='Read events from stdin instead, one JSON object a line: {"event": "progress", '
    '"data": 0.5} ("data" optional, taken as DATA is). Every good line is sent; each bad '
    "one is reported with its line number and the exit code is 2.",
)
@click.pass_context
def emit(ctx: click.Context, event: str | None, data: str | None, batch: bool) -> None:
    """Send EVENT with optional DATA (JSON) to the executor running this task.

    For shell scripts and compiled programs started by lute-async:

    \b
      lute-async emit progress 0.5            # or '{"fraction": 0.5, "message": "half"}'
      lute-async emit log "calibrated"
      lute-async emit peaks '{"n": 42}'       # fires hooks on "peaks"
      lute-async emit result '{"peaks": 42}'
      produce | lute-async emit --batch       # one {"event": ..., "data": ...} a line

    Outside an executor it fails with exit code 2.
    """
    from lute_async.cli.emitter import EmitError, emit_batch, emit_one

    if batch and (event is not None or data is not None):
        raise click.UsageError("--batch reads its events from stdin: give no EVENT or DATA")
    if event is None and not batch:
        raise click.MissingParameter(ctx=ctx, param=ctx.command.params[0])
    try:
        if event is None:
            sys.exit(emit_batch(sys.stdin.buffer))
        emit_one(event, data)
    except EmitError as exc:
        fail(str(exc))
