"""``lute-async submit``: a SLURM job whose executor runs a defined task."""

from __future__ import annotations

from pathlib import Path

import click

from lute_async.cli.common import (
    config_errors,
    config_option,
    fail,
    lute_errors,
    param_option,
    parse_text_params,
    settings_of,
)
from lute_async.cli.database import db_option, records_db


@click.command(short_help="Submit a SLURM job that runs a defined task.")
@click.argument("name")
@config_option
@param_option
@click.option(
    "--sbatch-arg",
    "sbatch_args",
    multiple=True,
    metavar="ARG",
    help="Extra sbatch argument for the executor's own job, e.g. --sbatch-arg=--time=1:00:00.",
)
@db_option()
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

    with config_errors():
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
    # the same KEY=VALUE checks as run, before anything is submitted; the job parses the values
    text_params = parse_text_params(params)
    db = records_db(settings_of(ctx), config=config)
    with lute_errors():
        job_id = submit_executor(name, config.path.resolve(), list(sbatch_args), text_params, db)
    click.echo(job_id)
