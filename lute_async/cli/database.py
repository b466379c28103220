"""Where a command's records are, the same for every command: ``--db`` (before or after the
command's name; after wins), else ``$LUTE_ASYNC_DB``, else the config file's ``[executor] db``
(the config is ``--config``, else ``$LUTE_ASYNC_CONFIG``, else ``./lute-async.toml``), else the
user data dir."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lute_async.cli.common import Settings, config_errors, fail

if TYPE_CHECKING:
    from lute_async.config import TaskConfig

__all__ = ["DB_HELP", "ENV_DB", "db_option", "records_db"]

ENV_DB = "LUTE_ASYNC_DB"
DB_HELP = (
    "Records database, a file or a postgresql:// URL, of every command (before or after its "
    "name; after wins) [default: $LUTE_ASYNC_DB, else the [executor] db of the config file "
    "(--config, else $LUTE_ASYNC_CONFIG, else ./lute-async.toml), else the user data dir]."
)


class DatabaseParam(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A records database: a file path, or a ``postgresql://`` URL kept as given."""

    name = "file|url"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Path | str:
        from lute_async.records.location import as_target

        if isinstance(value, Path | str) and str(value):
            target = as_target(value)
            if isinstance(target, Path) and target.is_dir():
                self.fail(f"{str(value)!r} is a directory, not a file", param, ctx)
            return target
        self.fail(f"expected a file path or a postgresql:// URL, got {value!r}", param, ctx)


def _keep_db(ctx: click.Context, param: click.Parameter, value: Path | str | None) -> None:
    """Put ``--db`` in the shared settings: a sub-command's, parsed last, wins."""
    if value is not None:
        ctx.ensure_object(Settings).db = value


def db_option(help: str = DB_HELP) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--db FILE|URL``, the one option every command that touches records takes (and the
    group)."""
    return click.option(
        "--db",
        type=DatabaseParam(),
        expose_value=False,
        callback=_keep_db,
        help=help,
    )


def records_db(
    settings: Settings, *, config: TaskConfig | None = None, config_path: Path | None = None
) -> Path | str | None:
    """The records database by the one order (None: the user data dir); ``config`` when the
    command has read its config already, else the config file is read (``config_path``, else
    ``$LUTE_ASYNC_CONFIG``, else ``./lute-async.toml``) only when it decides."""
    from lute_async.records.location import as_target

    path: Path | str | None
    if settings.db is not None:
        path, source = settings.db, "--db"
    elif os.environ.get(ENV_DB):
        path, source = as_target(os.environ[ENV_DB]), f"${ENV_DB}"
    else:
        if config is None:
            from lute_async.config import load_config

            with config_errors():
                config = load_config(config_path)
        path, source = config.executor.db, f"[executor] db of {config.source}"
    if isinstance(path, Path) and path.is_dir():
        fail(f"records database {str(path)!r} (from {source}) is a directory, not a file")
    return path
