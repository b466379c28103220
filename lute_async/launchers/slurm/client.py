"""Running SLURM's client commands (sbatch, squeue, scontrol, sacct, scancel)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

import anyio

from lute_async.errors import LaunchError


def missing_tool(name: str) -> str:
    """What to tell the user when a SLURM client command is not on PATH."""
    return f"{name} not found on PATH; install the SLURM client tools (slurm-client)"


async def run_client(
    argv: list[str], env: Mapping[str, str] | None, *, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a client command to completion without blocking the event loop (exit status
    unchecked), ``stdin`` its input; a LaunchError when the command is not installed."""
    try:
        return await anyio.run_process(argv, input=stdin, check=False, env=env)
    except FileNotFoundError as exc:
        raise LaunchError(missing_tool(argv[0])) from exc


def submitted_job_id(done: subprocess.CompletedProcess[bytes], what: str) -> str:
    """The job id ``sbatch --parsable`` printed, or a LaunchError saying why there is none."""
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip() or done.returncode
        raise LaunchError(f"sbatch refused {what}: {reason}")
    job_id = done.stdout.decode().strip().split(";")[0]
    if not job_id.isdigit():
        raise LaunchError(f"sbatch printed no job id for {what}: {job_id!r}")
    return job_id
