"""Submitting the executor itself as a batch job (``lute-async submit``), LUTE's model: the
task and its MPI ranks run on the allocation and record into a shared database."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from lute_async.errors import LaunchError
from lute_async.launchers.slurm.client import missing_tool, submitted_job_id


def submit_executor(
    name: str,
    config: Path,
    sbatch_args: list[str],
    params: dict[str, str],
    db: Path | str | None,
) -> str:
    """Submit ``lute-async run NAME --config CONFIG`` as a batch job and return its job id.

    The executor runs inside the allocation (so an MPI task's ``srun`` uses it) with this
    interpreter, and records into ``db`` (default ``$LUTE_ASYNC_DB``), which must be on a
    filesystem the compute nodes share, or is a ``postgresql://`` URL the nodes can reach (it
    goes to the job in its environment, never in the batch script). ``sbatch_args`` go to
    sbatch as given.
    """
    command = [sys.executable, "-m", "lute_async.cli", "run", name, "--config"]
    command.append(os.fspath(Path(config).resolve()))
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    env = dict(os.environ)
    if isinstance(db, str):
        env["LUTE_ASYNC_DB"] = db
    elif db is not None:
        env["LUTE_ASYNC_DB"] = os.fspath(Path(db).resolve())
    script = "#!/bin/bash\n" + f"exec {shlex.join(command)}\n"
    argv = ["sbatch", "--parsable", "--export=ALL", f"--job-name={name}", *sbatch_args]
    try:
        done = subprocess.run(
            argv, input=script.encode(), env=env, capture_output=True, check=False
        )
    except FileNotFoundError as exc:
        raise LaunchError(missing_tool("sbatch")) from exc
    return submitted_job_id(done, f"the executor job for task {name!r}")
