"""A PSI/J ``JobSpec`` as a lute-async run: its argv, run options and launcher.

PSI/J launchers map to lute-async's: ``single`` runs the executable once (Local, or a batch
job that runs it once), ``multiple`` runs ``process_count`` copies
(:class:`~lute_async.psij.multiple.Multiple`, or ``srun`` in a batch job), ``mpirun`` and
``srun`` run it as an MPI program (:class:`~lute_async.MPI`, or ``srun --mpi=pmix`` in a batch
job). Redirections, ``pre_launch`` and (in a batch job) ``PSIJ_NODEFILE`` are done by a small
bash wrapper that takes every path as an argument, never as shell text.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psij import InvalidJobException, Job, JobSpec, ResourceSpecV1

from lute_async.launchers.base import Launcher
from lute_async.launchers.local import Local
from lute_async.launchers.mpi import MPI
from lute_async.launchers.slurm import Slurm
from lute_async.psij.multiple import Multiple

LOCAL_LAUNCHERS = ("single", "multiple", "mpirun", "srun")
SLURM_LAUNCHERS = ("single", "multiple", "mpirun", "srun")

#: The wrapper: stdin/stdout/stderr (appended: every rank writes to the same file, which the
#: plugin created empty), the pre-launch script sourced, a node file made inside a batch job
#: (one line per process on each node, as PSI/J's own SLURM executor writes it), then exec.
WRAPPER = r"""
in=$1 out=$2 err=$3 pre=$4 nodefile=$5 ppn=$6; shift 6
if [ -n "$nodefile" ] && [ -n "$SLURM_JOB_NODELIST" ]; then
    PSIJ_NODEFILE="$nodefile.${SLURM_PROCID:-0}"
    scontrol show hostnames "$SLURM_JOB_NODELIST" | while read -r node; do
        for _ in $(seq 1 "$ppn"); do echo "$node"; done
    done >"$PSIJ_NODEFILE"
    export PSIJ_NODEFILE
fi
if [ -n "$pre" ]; then . "$pre" || exit $?; fi
if [ -n "$in" ]; then exec <"$in" || exit 1; fi
if [ -n "$out" ]; then exec >>"$out" || exit 1; fi
if [ -n "$err" ]; then exec 2>>"$err" || exit 1; fi
exec "$@"
"""


@dataclass
class Plan:
    """What a job becomes: the argv, the run options, and files to remove when it ends."""

    argv: list[str]
    options: dict[str, Any]
    launcher_name: str
    cleanup: list[Path] = field(default_factory=list)


def _path(value: Any) -> str:
    return os.fspath(value) if value is not None else ""


def resources(spec: JobSpec) -> ResourceSpecV1:
    """The job's resource spec (PSI/J's default when none is given); only version 1."""
    res = spec.resources if spec.resources is not None else ResourceSpecV1()
    if not isinstance(res, ResourceSpecV1):
        raise InvalidJobException(
            f"resources: only ResourceSpecV1 is supported, got {type(res).__name__}"
        )
    return res


def slurm_time(seconds: float) -> str:
    """``D-HH:MM:SS`` for sbatch ``--time``, rounded up to the second."""
    total = math.ceil(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def local_launcher(name: str, processes: int) -> Launcher:
    if name == "single":
        return Local()
    if name == "multiple":
        return Multiple(processes)
    if name == "mpirun":
        return MPI(np=processes, launcher="mpirun")
    if name == "srun":  # inside an allocation (salloc): lute-async's MPI launcher runs srun
        return MPI(np=processes, launcher="srun")
    raise InvalidJobException(
        f"launcher: {name!r} is not a launcher of lute-async's PSI/J executor "
        f"(known: {', '.join(LOCAL_LAUNCHERS)})"
    )


def slurm_launcher(name: str, spec: JobSpec, res: ResourceSpecV1) -> Slurm:
    if name not in SLURM_LAUNCHERS:
        raise InvalidJobException(
            f"launcher: {name!r} is not a launcher of lute-async-slurm "
            f"(known: {', '.join(SLURM_LAUNCHERS)})"
        )
    attrs = spec.attributes
    extra = [f"--ntasks-per-node={res.computed_processes_per_node}"]
    if res.exclusive_node_use:
        extra.append("--exclusive")
    if res.gpu_cores_per_process:
        extra.append(f"--gpus-per-task={res.gpu_cores_per_process}")
    if attrs.reservation_id:
        extra.append(f"--reservation={attrs.reservation_id}")
    for key, value in (attrs.custom_attributes or {}).items():
        prefix, _, option = str(key).partition(".")
        if prefix == "slurm" and option:  # PSI/J's convention: "slurm.<sbatch option>"
            extra.append(f"--{option}={value}")
    return Slurm(
        ntasks=res.computed_process_count,
        nodes=res.computed_node_count,
        cpus_per_task=res.cpu_cores_per_process,
        mem=f"{res.memory_kb}K" if res.memory else None,
        time=slurm_time(attrs.duration.total_seconds()) if attrs.duration else None,
        partition=attrs.queue_name,
        account=attrs.account,
        extra_sbatch=extra,
        mpi=name != "single",  # several tasks run under srun; "single" runs once
    )


def plan(job: Job, spec: JobSpec, *, slurm: bool, private_dir: Path) -> Plan:
    """The run ``job`` becomes; an InvalidJobException naming what cannot be run."""
    if not spec.executable:
        raise InvalidJobException("executable: a job needs an executable")
    res = resources(spec)
    processes = res.computed_process_count
    name = spec.launcher or "single"
    launcher = slurm_launcher(name, spec, res) if slurm else local_launcher(name, processes)
    argv = [os.fspath(spec.executable), *(str(arg) for arg in spec.arguments or ())]
    env = {key: str(value) for key, value in (spec.environment or {}).items()}
    result = Plan(argv, {}, name)
    nodefile = ""
    if slurm:
        nodefile = os.fspath(private_dir / f"{job.id}.nodefile")
    elif processes > 1:  # this machine is every node: one line per process
        path = private_dir / f"{job.id}.nodefile"
        path.write_text(f"{socket.gethostname()}\n" * processes)
        env["PSIJ_NODEFILE"] = os.fspath(path)
        result.cleanup.append(path)
    outputs = [spec.stdout_path, spec.stderr_path]
    for key, output in zip(("stdout_path", "stderr_path"), outputs, strict=True):
        if output is not None:
            try:
                Path(output).write_bytes(b"")  # created empty: the ranks append to it
            except OSError as exc:
                for path in result.cleanup:
                    path.unlink(missing_ok=True)
                raise InvalidJobException(
                    f"{key}: cannot create {output}: {exc.strerror}"
                ) from None
    redirect = [spec.stdin_path, *outputs, spec.pre_launch]
    if nodefile or any(part is not None for part in redirect):
        wrapped = [_path(part) for part in redirect] + [
            nodefile,
            str(res.computed_processes_per_node),
        ]
        argv = ["/bin/bash", "-c", WRAPPER, "psij-job", *wrapped, *argv]
    result.argv = argv
    duration = spec.attributes.duration
    result.options = {
        "name": Path(spec.name or os.fspath(spec.executable)).name or "psij-job",
        "env": env,
        "launcher": launcher,
        "tags": ["psij", f"psij-job:{job.id}", f"psij-launcher:{name}"],
    }
    if not spec.inherit_environment:  # only its own environment (and lute-async's variables)
        result.options["inherit_env"] = False
    if spec.directory is not None:
        result.options["cwd"] = os.fspath(spec.directory)
    if duration and not slurm:  # SLURM enforces it itself (--time)
        result.options["timeout"] = duration.total_seconds()
    return result
