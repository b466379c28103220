"""What every ``lute-async`` command shares: the group's settings, exit codes, the error exit,
``KEY=VALUE`` and time parsing, and the options several commands take."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from lute_async.app.text import visible
from lute_async.errors import LuteAsyncError

if TYPE_CHECKING:
    from lute_async.records import AnalysisRecord

#: The process exit code for each final status of a run.
EXIT_CODES: dict[str, int] = {
    "COMPLETED": 0,
    "FAILED": 1,
    "TIMEDOUT": 3,
    "CANCELLED": 4,
    "LOST": 5,
}
#: Bad usage, bad input (an option value, a config, params or database file), or `emit`
#: outside an executor.
EXIT_USAGE = 2
#: An unexpected error inside lute-async itself (EX_SOFTWARE); --debug shows its traceback.
EXIT_INTERNAL = 70
#: Interrupted (Ctrl-C) before any run had started.
EXIT_INTERRUPTED = 130

EXIT_HELP = """\b
Exit codes of run, exec and call:
  0  the run COMPLETED
  1  the run FAILED (non-zero exit, killed by a signal, could not start)
  2  bad usage or bad input (an option value, task definition, params or database)
  3  the run TIMEDOUT
  4  the run was CANCELLED (Ctrl-C: once cancels cleanly, twice kills)
  5  the run was LOST (its executor died while it ran)
  70 an unexpected error in lute-async (--debug shows its traceback)
  130 interrupted before any run had started
"""

PARAM_HELP = "Set a param (repeatable); VALUE is read as JSON when it parses, else as a string."


@dataclass(slots=True)
class Settings:
    """Options of the ``lute-async`` group shared by every sub-command."""

    db: Path | str | None = None
    log_events: bool = False
    log_format: str = "console"
    log_level: str = "warning"
    grace: float = 5.0


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with ``code``."""
    click.echo(f"lute-async: error: {visible(message)}", err=True)
    sys.exit(code)


def exit_code(record: AnalysisRecord) -> int:
    """The process exit code for the run's final status."""
    return EXIT_CODES.get(record.status, 1)


def overall_exit_code(records: Sequence[AnalysisRecord], *, if_none: int = 0) -> int:
    """The first non-zero exit code among ``records`` (0 when every run COMPLETED), or
    ``if_none`` when there are no records."""
    if not records:
        return if_none
    return next((code for code in map(exit_code, records) if code), 0)


def _split_pairs(pairs: Sequence[str], form: str, option: str) -> list[tuple[str, str]]:
    split = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected {form}, got {pair!r}", param_hint=option)
        split.append((key, value))
    return split


def json_or_text(text: str) -> Any:
    """``text`` as JSON when it parses, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs to a dict; values that parse as JSON are taken as such (``3`` -> 3)."""
    return {k: json_or_text(v) for k, v in parse_text_params(pairs).items()}


def parse_text_params(pairs: Sequence[str]) -> dict[str, str]:
    """``k=v`` pairs to a dict of strings, checked as ``--param`` is."""
    return dict(_split_pairs(pairs, "KEY=VALUE", "--param"))


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs to an environment mapping."""
    return dict(_split_pairs(pairs, "NAME=VALUE", "--env"))


def parse_time(text: str) -> float:
    """Epoch seconds from ``2026-11-23``, ``2026-11-23T09:30``, an epoch number, or an age
    like ``90s``, ``15m``, ``2h``, ``3d`` (that long ago)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    stripped = text.strip()
    moment: float | None = None
    if stripped and stripped[-1] in units and stripped[:-1].replace(".", "", 1).isdigit():
        moment = time.time() - float(stripped[:-1]) * units[stripped[-1]]
    else:
        try:
            moment = float(stripped)
        except ValueError:
            with suppress(ValueError, OverflowError, OSError):
                moment = datetime.fromisoformat(stripped).timestamp()
    if moment is None or not math.isfinite(moment):
        raise click.BadParameter(
            f"{text!r} is not a time; use 2026-11-23, 2026-11-23T09:30, epoch seconds, "
            "or an age like 15m, 2h, 3d"
        )
    return moment


class Moment(click.ParamType[float, Any]):
    """A ``--since``/``--until`` value (see :func:`parse_time`), as epoch seconds."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_time(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


class Timeout(click.ParamType[float, Any]):
    """Seconds of a run's timeout, checked by the run options' one spec."""

    name = "SECONDS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from lute_async.options import RUN_OPTIONS

        try:
            return RUN_OPTIONS["timeout"].check("timeout", float(value))
        except (ValueError, LuteAsyncError):
            self.fail(f"{value!r} is not a positive number of seconds", param, ctx)


def settings_of(ctx: click.Context) -> Settings:
    """The group's settings (the defaults when a command is invoked on its own)."""
    settings = ctx.find_object(Settings)
    return settings if settings is not None else Settings()


def param_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-p/--param KEY=VALUE`` (repeatable), into the ``params`` argument."""
    return click.option(
        "-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help=PARAM_HELP
    )(fn)


def tag_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--tag`` (repeatable): tags for the run's record, into the ``tags`` argument."""
    option = click.option("--tag", "tags", multiple=True, help="Tag the run's record (repeatable).")
    return option(fn)


def timeout_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-t/--timeout SECONDS`` of one run."""
    return click.option(
        "-t", "--timeout", type=Timeout(), help="Seconds before the run is ended TIMEDOUT."
    )(fn)


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-c/--config FILE``: the task definitions, into the ``config_path`` argument."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="LUTE_ASYNC_CONFIG",
        help="Task definitions (TOML) [env LUTE_ASYNC_CONFIG; default ./lute-async.toml].",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: only the final record on stdout, into the ``as_json`` argument."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print only the final record as one JSON object on stdout; the display goes to "
        "stderr.",
    )(fn)


def _leaves(group: BaseExceptionGroup[LuteAsyncError]) -> Iterator[LuteAsyncError]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextmanager
def lute_errors() -> Iterator[None]:
    """Turn lute-async's own errors into the usage error exit with their message, also when
    they come out of a task group (an exception group holding nothing else)."""
    try:
        yield
    except LuteAsyncError as exc:
        fail(str(exc))
    except BaseExceptionGroup as group:
        ours, others = group.split(LuteAsyncError)
        if ours is None or others is not None:
            raise
        fail("; ".join(dict.fromkeys(str(exc) for exc in _leaves(ours))))


@contextmanager
def config_errors() -> Iterator[None]:
    """Turn a bad config file into the usage error exit."""
    from lute_async.errors import ConfigError

    try:
        yield
    except ConfigError as exc:
        fail(str(exc))
