"""Running jobs for a command: the executor the global options describe, the live display,
the final records on stdout and the exit code of their statuses."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lute_async.app.supervise import Job, run_loop, supervise
from lute_async.cli.common import Settings, lute_errors, overall_exit_code

if TYPE_CHECKING:
    from lute_async.executor import Executor


def configure_logging(settings: Settings) -> None:
    """Send lute-async's own logs to stderr as the global options say."""
    from lute_async import logs

    level = settings.log_level.upper()
    if settings.log_events:  # "every event": they are logged at debug (lifecycle at info)
        level = "DEBUG"
    if settings.log_format == "json":
        logs.configure(renderer="json", level=level)
    else:
        logs.configure(renderer="console", level=level)


def make_executor(
    settings: Settings, *, db: Path | str | None = None, **options: Any
) -> Executor:
    """An executor with the global options recording into ``db`` (see
    :func:`~lute_async.cli.database.records_db`), logging configured."""
    from lute_async.executor import Executor

    configure_logging(settings)

    return Executor(
        db=db,
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
    db: Path | str | None = None,
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
    with lute_errors(), display:
        records = run_loop(lambda: supervise(executor, jobs))
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(record.to_dict()) + "\n")
        sys.stdout.flush()
    elif not quiet:
        display.console.print(records_table(records))
    sys.exit(overall_exit_code(records))
